"""PyTorch Lightning: ``Trainer(logger=OtelRLLogger())``.

::

    from lightning.pytorch import Trainer
    from otel_rl.lightning import OtelRLLogger

    trainer = Trainer(logger=OtelRLLogger(name="tiny"), ...)     # backends: OTEL_RL_CONFIG or config=

- ``self.log(...)`` values arrive at Lightning's step (``trainer.global_step``), with the
  ``epoch`` Lightning adds; ``save_hyperparameters()`` becomes the run's hyperparameters.
- The run is named ``name`` (``version`` appended when given) unless the config names it.
- ``finalize("success")`` (the end of ``fit``/``test``) flushes every backend; the run goes on
  for a later ``test`` and ends with the process. ``finalize("failed")`` ends it as failed.
- **Several processes** (DDP): Lightning calls loggers on every rank. With an ``otlp`` section in
  the config, every rank sends its own values, tagged with its rank, and a collector reduces
  them per step (mean, max, ...): no ``sync_dist`` is needed. Without one, only rank 0 logs, as
  Lightning's own loggers do.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from argparse import Namespace
from typing import Any

from lightning.pytorch.loggers.logger import Logger as LightningLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from otel_rl.api.logger import Logger
from otel_rl.integrations.common import run_config

_log = logging.getLogger(__name__)


class OtelRLLogger(LightningLogger):
    """A Lightning logger writing through otel-rl (see the module docstring)."""

    def __init__(self, name: str = "lightning_logs", version: int | str | None = None, save_dir: str | None = None,
                 config: dict | str | None = None) -> None:
        super().__init__()
        self._name, self._version, self._save_dir, self._config = name, version, save_dir, config
        self._logger: Logger | None = None
        self._off = False  # a rank that does not log (no collector to reduce the ranks)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        return 0 if self._version is None else self._version

    @property
    def save_dir(self) -> str | None:
        """Where the TensorBoard sink writes (the config's ``tensorboard.log_dir``), else ``save_dir``."""
        if self._logger is not None:
            tb = self._logger.pipeline.config.backends.get("tensorboard")
            if tb is not None and tb.enabled:
                return str(tb.log_dir)
        return self._save_dir

    @property
    def experiment(self) -> Logger | None:
        """The :class:`otel_rl.Logger` of this process's run (None on a rank that does not log)."""
        if self._logger is None and not self._off:
            self._logger = self._start()
        return self._logger

    def _start(self) -> Logger | None:
        rank, world = _rank_and_world()
        run_name = self._name if self._version is None else f"{self._name}/version_{self._version}"
        cfg = run_config(self._config, run_name=run_name)
        if world > 1 and not cfg.backends["otlp"].enabled:
            if rank != 0:
                self._off = True
                return None
        elif world > 1:
            cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, rank=rank, world_size=world))
        return Logger(cfg)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        logger = self.experiment
        if logger is not None:
            logger.log_metrics(metrics, step=0 if step is None else int(step))

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        logger = self.experiment
        if logger is None:
            return
        if isinstance(params, Namespace):
            params = vars(params)
        logger.log_hyperparams({k: v if isinstance(v, (str, int, float, bool, dict)) or v is None else str(v)
                                for k, v in dict(params).items()})

    def finalize(self, status: str) -> None:
        if self._logger is None:
            return
        if status == "failed":
            self._logger.finish(status="failed")
        else:
            self._logger.pipeline.force_flush(30.0)

    def save(self) -> None:
        pass


def _rank_and_world() -> tuple[int, int]:
    """This process's global rank and the world size, from torch.distributed once it is set up,
    else Lightning's rank and the launcher's environment."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    rank = getattr(rank_zero_only, "rank", None)
    if rank is None:
        rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    return int(rank), int(os.environ.get("WORLD_SIZE", "1"))
