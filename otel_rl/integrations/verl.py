"""verl: ``trainer.logger=['console','otel_rl']``, with no fork of verl.

Installing otel-rl registers a verl plugin (the ``verl.plugins`` entry point, which ``import
verl`` loads unless ``VERL_USE_EXTERNAL_PLUGINS=none``). The plugin teaches verl's own
``verl.utils.tracking`` one more backend name, ``otel_rl``:

- ``Tracking(project_name, experiment_name, default_backend=[..., "otel_rl"], config)`` adds an
  otel-rl run next to verl's other backends: its ``log(data, step)`` goes to
  :meth:`otel_rl.Logger.log_metrics`, the config (verl passes the resolved Hydra config) becomes
  the run's hyperparameters, and ``finish(exit_code)`` ends the run (``failed`` when not 0).
- The run is named ``experiment_name``; ``project_name`` is the W&B and SwanLab project and the
  MLflow experiment unless the otel-rl config (``OTEL_RL_CONFIG``) names them.
- ``ValidationGenerationsLogger.log(loggers, samples, step)`` with ``otel_rl`` among ``loggers``
  writes the validation generations, verl's ``(input, output, score)`` triples, as one
  ``val/generations`` samples table at ``step`` (every backend's table; docs/guide.md).

Where the plugin is off, ``otel_rl.integrations.verl.install()`` does the same from code.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from otel_rl.sinks.base import WarnOnce

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

BACKEND = "otel_rl"
TABLE = "val/generations"
_PATCHED = "_otel_rl_patched"
_active: VerlBackend | None = None  # the latest Tracking's run: validation generations go there


class VerlBackend:
    """The ``otel_rl`` entry of ``Tracking.logger``: ``log(data, step)`` and ``finish(exit_code)``."""

    def __init__(self, project_name: str, experiment_name: str, config: Any = None) -> None:
        from otel_rl.api.logger import Logger
        from otel_rl.integrations.common import run_config

        self.logger = Logger(run_config(None, run_name=experiment_name, project=project_name))
        if config:
            self.logger.log_hyperparams(_plain(config))

    def log(self, data: dict, step: int) -> None:
        self.logger.log_metrics(data, step=int(step))

    def log_generations(self, samples: list, step: int) -> None:
        self.logger.log_samples([generation_row(s) for s in samples], step=int(step), name=TABLE)

    def finish(self, exit_code: int = 0) -> None:
        self.logger.finish(status="success" if exit_code == 0 else "failed")


def generation_row(sample: Any) -> dict:
    """verl's ``(input, output, score)`` as a row; a sample of another shape as its text."""
    if isinstance(sample, dict):
        return dict(sample)
    if isinstance(sample, (list, tuple)) and len(sample) >= 3:
        row = {"input": sample[0], "output": sample[1], "score": sample[2]}
        row.update({f"extra_{i}": value for i, value in enumerate(sample[3:], 1)})
        return row
    return {"data": str(sample)}


def _plain(config: Any) -> dict:
    """verl's config as a plain dict (an OmegaConf ``DictConfig`` resolved, a dataclass as its fields)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(config):
            return OmegaConf.to_container(config, resolve=True)
    except ImportError:
        pass
    if isinstance(config, dict):
        return config
    return dict(vars(config)) if hasattr(config, "__dict__") else {"config": str(config)}


def install() -> bool:
    """Add the ``otel_rl`` backend to verl's ``Tracking`` and ``ValidationGenerationsLogger``
    (done by the plugin when verl is imported). False when verl is not installed."""
    try:
        from verl.utils import tracking
    except ImportError:
        return False
    if getattr(tracking.Tracking, _PATCHED, False):
        return True
    if BACKEND not in tracking.Tracking.supported_backend:
        tracking.Tracking.supported_backend.append(BACKEND)
    _patch_tracking(tracking.Tracking)
    _patch_generations(tracking.ValidationGenerationsLogger)
    return True


def _named(backends: Any) -> bool:
    return backends == BACKEND or (not isinstance(backends, str) and BACKEND in list(backends or ()))


def _patch_tracking(cls) -> None:
    original_init, original_finish = cls.__init__, cls.finish

    @functools.wraps(original_init)
    def __init__(self, project_name, experiment_name, default_backend="console", config=None):
        original_init(self, project_name, experiment_name, default_backend, config)
        if _named(default_backend):
            global _active
            _active = self.logger[BACKEND] = VerlBackend(project_name, experiment_name, config)

    @functools.wraps(original_finish)
    def finish(self, exit_code: int = 0):
        ours = None if getattr(self, "_finished", False) else getattr(self, "logger", {}).get(BACKEND)
        original_finish(self, exit_code)
        if ours is not None:
            ours.finish(exit_code)

    cls.__init__, cls.finish = __init__, finish
    setattr(cls, _PATCHED, True)


def _patch_generations(cls) -> None:
    original_log = cls.log

    @functools.wraps(original_log)
    def log(self, loggers, samples, step):
        original_log(self, loggers, samples, step)
        if _named(loggers):
            if _active is None:
                _warn("no-run", "otel-rl: validation generations at step %s not recorded: no Tracking with the "
                      "otel_rl backend was created (said once)", step)
            else:
                _active.log_generations(samples, step)

    cls.log = log


try:  # the verl plugin entry point imports this module
    install()
except Exception as exc:  # noqa: BLE001 - never break `import verl`
    _log.warning("otel-rl: the verl backend could not be registered (%s)", exc)
