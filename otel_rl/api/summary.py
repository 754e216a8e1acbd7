"""``otel_rl.SummaryWriter``: the ``torch.utils.tensorboard`` / tensorboardX ``SummaryWriter`` API,
writing through the OTel stream, so a script switches by changing one import::

    from otel_rl import SummaryWriter          # was: from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text("hyperparameters", "|param|value|\\n|-|-|\\n...")
    writer.add_scalar("charts/episodic_return", ret, global_step)
    writer.close()

``log_dir`` keeps its meaning: TensorBoard's event files go to ``log_dir`` (the run is its last
path component, the TensorBoard ``log_dir`` its parent). Other backends come from ``config=``
(a dict or YAML path, as for :func:`otel_rl.init`) or, with no code change at all, from the
file named by ``OTEL_RL_CONFIG``. Tags, steps and wall times are kept as given (``walltime``
included); every value goes through the OTel stream like the meter API's (and over OTLP to a
collector when configured).

Supported: ``add_scalar``, ``add_scalars`` (as ``main_tag/tag`` in one run), ``add_histogram``,
``add_text``, ``add_hparams``, ``add_image``, ``add_images``, ``add_figure``, ``add_video``,
``add_audio`` (encoded off the training thread: :mod:`otel_rl.api.media`), ``flush``, ``close``,
``log_dir`` / ``get_logdir()`` and use as a context manager. Other ``add_*`` methods (graphs,
embeddings, meshes, ...) are not carried: each warns once and does nothing, so the script keeps
running.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime
from typing import Any

from otel_rl.api.globals import install as install_globals
from otel_rl.api.media import put_media
from otel_rl.api.run import Pipeline
from otel_rl.config import Config
from otel_rl.model.media import as_numpy
from otel_rl.model.steps import check_step
from otel_rl.settings import read_mapping

_log = logging.getLogger(__name__)


def _number(value: Any) -> float:
    item = getattr(value, "item", None)
    return float(item()) if callable(item) else float(value)


def _array(values: Any):
    return as_numpy(values).astype("float64", copy=False).ravel()


def _config(log_dir: str, config: Config | dict | str | None) -> dict:
    if isinstance(config, Config):
        raise TypeError("SummaryWriter(config=...) takes a dict or a YAML path")
    if config is None and os.environ.get("OTEL_RL_CONFIG"):
        config = os.environ["OTEL_RL_CONFIG"]
    cfg = read_mapping(config, "SummaryWriter config")
    parent, run = os.path.split(os.path.normpath(log_dir))
    cfg.setdefault("run_name", run)
    tensorboard = dict(cfg.get("tensorboard") or {})
    tensorboard.setdefault("log_dir", parent or ".")
    cfg["tensorboard"] = tensorboard
    return cfg


class SummaryWriter:
    """The ``SummaryWriter`` API over an otel-rl run (see the module docstring)."""

    def __init__(self, log_dir: str | os.PathLike | None = None, comment: str = "", purge_step: int | None = None,
                 max_queue: int = 10, flush_secs: int = 120, filename_suffix: str = "", *,
                 config: dict | str | None = None, **kwargs: Any) -> None:
        if log_dir is None:  # torch's default: runs/<time>_<host><comment>
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", stamp + "_" + socket.gethostname() + comment)
        self.log_dir = str(log_dir)
        if purge_step is not None:
            _log.warning("SummaryWriter: purge_step is ignored: otel-rl never discards logged values")
        self.pipeline = Pipeline(_config(self.log_dir, config))
        self.pipeline.activate(only_if_none=True)  # so otel_rl.span() and the meter API record into it
        install_globals("otel_rl.SummaryWriter", strict=False)
        self._recorder = self.pipeline.recorder
        self._warned: set[str] = set()
        self._closed = False

    def get_logdir(self) -> str:
        return self.log_dir

    # -- values --------------------------------------------------------------------------------
    def _put(self, record: tuple, step: int) -> None:
        recorder = self._recorder
        recorder.put(record)
        if recorder.step is None or step > recorder.step:  # spans and GPU gauges follow the loop
            recorder.set_step(step)

    @staticmethod
    def _time_ns(walltime: float | None) -> int:
        return time.time_ns() if walltime is None else int(walltime * 1e9)

    @staticmethod
    def _step(global_step: Any) -> int:
        return 0 if global_step is None else check_step(global_step)

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None, walltime: float | None = None,
                   new_style: bool = False, double_precision: bool = False) -> None:
        step = self._step(global_step)
        self._put(("g", tag, _number(scalar_value), step, self._time_ns(walltime), None), step)

    def add_scalars(self, main_tag: str, tag_scalar_dict: dict, global_step: int | None = None,
                    walltime: float | None = None) -> None:
        """Each ``tag`` as ``main_tag/tag`` (torch writes sub-runs; one run keeps the other backends
        simple)."""
        step = self._step(global_step)
        t = self._time_ns(walltime)
        for tag, value in tag_scalar_dict.items():
            self._put(("g", f"{main_tag}/{tag}", _number(value), step, t, None), step)

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None, bins: Any = "tensorflow",
                      walltime: float | None = None, max_bins: int | None = None) -> None:
        step = self._step(global_step)
        self._put(("hs", tag, _array(values), step, self._time_ns(walltime), None), step)

    def add_text(self, tag: str, text_string: str, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        step = self._step(global_step)
        self._put(("t", tag, str(text_string), step, self._time_ns(walltime), None), step)

    # -- media (torch/tensorboardX semantics; encoded off the training thread) ---------------------
    def _media(self, kind: str, tag: str, value: Any, global_step: Any, walltime: float | None, **options) -> None:
        step = self._step(global_step)
        if put_media(self._recorder, kind, tag, value, step, walltime, **options):
            if self._recorder.step is None or step > self._recorder.step:
                self._recorder.set_step(step)

    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None, walltime: float | None = None,
                  dataformats: str = "CHW") -> None:
        self._media("image", tag, img_tensor, global_step, walltime, dataformats=dataformats)

    def add_images(self, tag: str, img_tensor: Any, global_step: int | None = None, walltime: float | None = None,
                   dataformats: str = "NCHW") -> None:
        """A batch of images as one grid image, up to 8 per row (as torch and tensorboardX)."""
        self._media("image", tag, img_tensor, global_step, walltime, dataformats=dataformats)

    def add_figure(self, tag: str, figure: Any, global_step: int | None = None, close: bool = True,
                   walltime: float | None = None) -> None:
        """A matplotlib figure (or a list of them, as a grid) rendered to an image."""
        from otel_rl.model.media import figure_array

        if isinstance(figure, list):
            import numpy as np

            images = np.stack([figure_array(f, close) for f in figure])
            self._media("image", tag, images, global_step, walltime, dataformats="NHWC")
        else:
            self._media("image", tag, figure_array(figure, close), global_step, walltime, dataformats="HWC")

    def add_video(self, tag: str, vid_tensor: Any, global_step: int | None = None, fps: int | float = 4,
                  walltime: float | None = None) -> None:
        """``(N, T, C, H, W)``, float in [0, 1] or uint8: an animated GIF, as tensorboardX writes it."""
        self._media("video", tag, vid_tensor, global_step, walltime, fps=fps)

    def add_audio(self, tag: str, snd_tensor: Any, global_step: int | None = None, sample_rate: int = 44100,
                  walltime: float | None = None) -> None:
        """Samples in [-1, 1] as 16-bit WAV."""
        self._media("audio", tag, snd_tensor, global_step, walltime, sample_rate=sample_rate)

    def add_hparams(self, hparam_dict: dict, metric_dict: dict, hparam_domain_discrete: dict | None = None,
                    run_name: str | None = None, global_step: int | None = None) -> None:
        """The hyperparameters of the run, and ``metric_dict`` as scalars at ``global_step``."""
        self.pipeline.log_hyperparams(hparam_dict)
        for tag, value in metric_dict.items():
            self.add_scalar(tag, value, global_step)

    def __getattr__(self, name: str):
        if name.startswith("add_"):
            def unsupported(*args: Any, **kwargs: Any) -> None:
                if name not in self._warned:
                    self._warned.add(name)
                    _log.warning("SummaryWriter.%s is not carried by otel-rl (scalars, histograms, text "
                                 "and hparams are); ignored", name)
            return unsupported
        raise AttributeError(name)

    # -- lifecycle -----------------------------------------------------------------------------
    def flush(self) -> None:
        self.pipeline.force_flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pipeline.shutdown()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self._closed = True
        self.pipeline.shutdown(status=None if kind is None else ("killed" if kind is KeyboardInterrupt else "failed"))
