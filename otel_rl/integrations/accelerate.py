"""Accelerate: ``Accelerator(log_with=OtelRLTracker())``.

::

    from accelerate import Accelerator
    from otel_rl.accelerate import OtelRLTracker

    accelerator = Accelerator(log_with=OtelRLTracker("ppo-tiny"))   # config: OTEL_RL_CONFIG or config=
    accelerator.init_trackers("my-project", config={"lr": 3e-4})
    accelerator.log({"train/loss": loss}, step=step)
    accelerator.end_training()

- ``init_trackers(project_name, config)`` starts the run on the main process, named ``run_name``
  unless the config names it; ``config`` becomes its hyperparameters. (Accelerate does not hand
  ``project_name`` to a tracker instance: name the project in the otel-rl config.)
- ``accelerator.log(values, step)``: numbers (and 0-d numpy/torch values) at ``step``; nested
  dicts flattened with ``/``; strings as texts. Without ``step``, the step after the last one
  logged (the first is 0), as W&B counts.
- ``end_training()`` finishes the run.
- Only the main process logs: Accelerate keeps its trackers on the main process only. Values
  of other ranks need ``accelerator.reduce``/``gather`` first, or otel-rl's own API on every rank
  with an ``otlp`` section (a collector reduces them).
"""

from __future__ import annotations

from typing import Any

from accelerate.tracking import GeneralTracker, on_main_process

from otel_rl.api.logger import Logger
from otel_rl.integrations.common import numbers_and_texts, run_config


class OtelRLTracker(GeneralTracker):
    """An Accelerate tracker writing through otel-rl (see the module docstring)."""

    name = "otel_rl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, run_name: str | None = None, config: dict | str | None = None) -> None:
        super().__init__()
        self.run_name = run_name
        self.config = config
        self.logger: Logger | None = None
        self._last_step = -1

    def start(self) -> None:  # Accelerate calls it from init_trackers; the run starts at its first use
        pass

    @property
    def tracker(self) -> Logger | None:
        """The :class:`otel_rl.Logger` of the run (None before ``init_trackers``)."""
        return self.logger

    def _started(self) -> Logger:
        if self.logger is None:
            self.logger = Logger(run_config(self.config, run_name=self.run_name))
        return self.logger

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        self._started().log_hyperparams(values or {})

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        step = self._last_step + 1 if step is None else int(step)
        self._last_step = max(self._last_step, step)
        numbers, texts = numbers_and_texts(values)
        logger = self._started()
        if numbers:
            logger.log_metrics(numbers, step=step)
        for name, text in texts.items():
            logger.log_text(name, text, step)

    @on_main_process
    def finish(self) -> None:
        if self.logger is not None:
            self.logger.finish()
