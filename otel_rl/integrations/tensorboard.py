"""Zero-code capture of ``SummaryWriter`` calls: ``otel-rl run -- python train.py`` or
``otel_rl.patch_tensorboard()``.

``tensorboardX.SummaryWriter`` and ``torch.utils.tensorboard.SummaryWriter`` keep writing their own
event files exactly as before; every ``add_*`` call is also recorded, at its step, into an otel-rl
run for the backends the config names (``OTEL_RL_CONFIG``, or ``otel-rl run --backends``). The
run is named after the writer's log directory (its last component), as with
:class:`otel_rl.SummaryWriter`. otel-rl's own TensorBoard sink stays off unless the config turns
it on: the script's files are already there.

- Only the main rank's writers are captured (``RANK`` unset or 0) unless
  ``OTEL_RL_CAPTURE_ALL_RANKS=1``.
- Without TensorBoard files of the writer's own (``otel-rl run --no-tensorboard-files``,
  ``OTEL_RL_TENSORBOARD_FILES=0``, ``patch_tensorboard(tensorboard_files=False)``), a captured
  writer is an :class:`otel_rl.SummaryWriter` on the same log directory: otel-rl's TensorBoard
  sink writes the event files there (off the training thread, nothing lost on a backwards step).
- A writer class is patched when its module is imported (an import hook), so the script needs no
  change and child processes started with the same environment (torchrun, Ray workers) are
  captured too.
- otel-rl never breaks the script: a call it cannot record is logged once and the writer's own
  call goes on.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from typing import Any

from otel_rl.integrations.common import after_import
from otel_rl.sinks.base import WarnOnce

_log = logging.getLogger(__name__)

#: Modules whose ``SummaryWriter`` is captured (the class is defined in the first, re-exported
#: by the second).
WRITER_MODULES = ("tensorboardX.writer", "torch.utils.tensorboard.writer")
#: The ``add_*`` methods recorded (otel-rl's :class:`~otel_rl.SummaryWriter` has each).
METHODS = ("add_scalar", "add_scalars", "add_histogram", "add_text", "add_hparams", "add_image", "add_images",
           "add_figure", "add_video", "add_audio")
_PATCHED = "_otel_rl_patched"
_config: dict | str | None = None
_files: bool | None = None  # None: OTEL_RL_TENSORBOARD_FILES decides
_warn = WarnOnce(_log)  # once per kind of failure


def patch_tensorboard(config: dict | str | None = None, tensorboard_files: bool | None = None) -> None:
    """Capture every ``SummaryWriter`` (tensorboardX's and torch's) from now on, like
    ``wandb.tensorboard.patch()``: already-imported writer classes now, the others when imported.
    ``config``: the otel-rl config of the runs (a dict or YAML path); default ``OTEL_RL_CONFIG``.
    ``tensorboard_files=False``: the writer writes no files of its own, otel-rl's TensorBoard sink
    writes them (default: ``OTEL_RL_TENSORBOARD_FILES``, else True)."""
    global _config, _files
    _config, _files = config, tensorboard_files
    for name in WRITER_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            _patch_module(module)
    after_import(WRITER_MODULES, _patch_module)


def _patch_module(module) -> None:
    cls = getattr(module, "SummaryWriter", None)
    if cls is None or getattr(cls, _PATCHED, False):
        return
    original_init, original_new = cls.__init__, cls.__dict__.get("__new__")
    signature = inspect.signature(original_init)

    def __new__(klass, *args, **kwargs):
        if not _own_files() and _captured_rank():
            try:
                return _ours_instead(signature, args, kwargs)
            except Exception as exc:  # noqa: BLE001 - then the writer writes its own files
                _warn("instead", "otel-rl: could not write this SummaryWriter's files through otel-rl (%s); "
                      "it writes them itself", exc)
        if original_new is not None:
            return getattr(original_new, "__func__", original_new)(klass, *args, **kwargs)
        return object.__new__(klass)

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        try:
            self._otel_rl = _run_for(self)
        except Exception as exc:  # the script's own writer works regardless
            self._otel_rl = None
            _warn("init", "otel-rl: could not start a run for this SummaryWriter (%s); its own files are written "
                  "as usual, nothing goes to the other backends", exc)

    cls.__new__, cls.__init__ = staticmethod(__new__), __init__
    for name in METHODS:
        if hasattr(cls, name):
            setattr(cls, name, _recording(name, getattr(cls, name)))
    for name in ("flush", "close"):
        if hasattr(cls, name):
            setattr(cls, name, _closing(name, getattr(cls, name)))
    setattr(cls, _PATCHED, True)


def _recording(name: str, original):
    """``original`` (the writer's own method) that first records the call into otel-rl."""
    from otel_rl.api.summary import SummaryWriter as Ours

    theirs, ours = inspect.signature(original), inspect.signature(getattr(Ours, name))
    accepted = set(ours.parameters) - {"self"}

    def method(self, *args, **kwargs):
        writer = getattr(self, "_otel_rl", None)
        if writer is not None:
            try:
                bound = theirs.bind(self, *args, **kwargs)
                arguments = {k: v for k, v in bound.arguments.items() if k in accepted}
                if name == "add_figure":
                    arguments["close"] = False  # the writer's own call closes it, after ours
                getattr(writer, name)(**arguments)
            except Exception as exc:  # noqa: BLE001 - the script's call goes on whatever otel-rl makes of it
                _warn(name, "otel-rl: %s could not be recorded (%s); the writer's own file has it (said once)",
                      name, exc)
        return original(self, *args, **kwargs)

    method.__wrapped__ = original
    return method


def _closing(name: str, original):
    def method(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        writer = getattr(self, "_otel_rl", None)
        if writer is not None:
            try:
                getattr(writer, name)()
            except Exception as exc:  # noqa: BLE001
                _warn(name, "otel-rl: %s failed (%s)", name, exc)
        return result

    method.__wrapped__ = original
    return method


def _captured_rank() -> bool:
    return os.environ.get("RANK", "0") in ("", "0") or os.environ.get("OTEL_RL_CAPTURE_ALL_RANKS") == "1"


def _own_files() -> bool:
    """Whether captured writers write their own event files (the default)."""
    if _files is not None:
        return _files
    return os.environ.get("OTEL_RL_TENSORBOARD_FILES", "1").strip().lower() not in ("0", "false", "no", "off")


def _capture_config(tensorboard: bool) -> dict:
    """The config of a captured writer's run: ``OTEL_RL_CONFIG`` (or patch_tensorboard's), the
    backends of ``OTEL_RL_BACKENDS`` turned on, and otel-rl's TensorBoard sink on or off."""
    from otel_rl.settings import read_mapping

    config = _config if _config is not None else os.environ.get("OTEL_RL_CONFIG")
    cfg = read_mapping(config, "otel-rl run config")
    if tensorboard:
        cfg["tensorboard"] = {**(cfg.get("tensorboard") or {}), "enabled": True}
    else:  # the script writes its own files
        cfg["tensorboard"] = {"enabled": False, **(cfg.get("tensorboard") or {})}
    for backend in filter(None, os.environ.get("OTEL_RL_BACKENDS", "").split(",")):
        cfg[backend.strip()] = {**(cfg.get(backend.strip()) or {}), "enabled": True}
    return cfg


def _run_for(writer) -> Any:
    """The otel-rl writer recording what ``writer`` writes; None on a rank that is not captured."""
    if not _captured_rank():
        return None
    from otel_rl.api.summary import SummaryWriter as Ours

    log_dir = getattr(writer, "log_dir", None) or getattr(writer, "logdir", None) or writer.get_logdir()
    return Ours(str(log_dir), config=_capture_config(tensorboard=False))


def _ours_instead(signature: inspect.Signature, args: tuple, kwargs: dict) -> Any:
    """An :class:`otel_rl.SummaryWriter` in place of the script's writer (no files of its own):
    the same log directory (``log_dir`` for torch, ``logdir`` for tensorboardX) and ``comment``."""
    from otel_rl.api.summary import SummaryWriter as Ours

    bound = signature.bind(None, *args, **kwargs).arguments
    log_dir = bound.get("log_dir", bound.get("logdir"))
    return Ours(None if log_dir is None else str(log_dir), comment=str(bound.get("comment") or ""),
                config=_capture_config(tensorboard=True))
