"""Hugging Face ``Trainer`` integration (TRL's GRPO and most LLM fine-tuning log through it).

::

    import otel_rl.hf                                      # registers report_to="otel_rl"
    args = TrainingArguments(..., report_to="otel_rl")     # or callbacks=[otel_rl.hf.OtelRLCallback()]

- ``on_train_begin`` starts the run (``run_name`` from ``TrainingArguments.run_name``) with the
  config given to the callback, else the file in ``OTEL_RL_CONFIG``, else the defaults
  (TensorBoard under ``runs/``); the training arguments become the run's hyperparameters.
- ``on_log`` records the ``logs`` dict at ``state.global_step``, named as transformers' own
  integrations name them: ``eval_loss`` -> ``eval/loss``, ``test_*`` -> ``test/*``, anything else
  ``train/*`` (``loss``, ``grad_norm``, ``learning_rate``, ``epoch``, and the end-of-training
  ``train_runtime``, ``train_loss``, ...). Values that are not numbers are skipped.
- ``on_train_end`` finishes the run (status ``success``); a run whose process raised is marked
  failed by otel-rl's exit hook (docs/guarantees.md, "Runs").
- Only the world's main process logs, like transformers' integrations.

TRL's GRPO and RLOO completions become samples tables at their step: see
:mod:`otel_rl.integrations.trl`.

``report_to="otel_rl"`` works because importing this module adds an entry to
``transformers.integrations.integration_utils.INTEGRATION_TO_CALLBACK``, the table the
``Trainer`` looks ``report_to`` names up in when it is constructed (not a public transformers API;
``callbacks=[OtelRLCallback()]`` is the public route).
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from otel_rl.api.logger import Logger

_log = logging.getLogger(__name__)

REPORT_TO = "otel_rl"


def rewrite(logs: dict[str, Any]) -> dict[str, float]:
    """transformers' naming of ``logs`` keys (``eval_x`` -> ``eval/x``, ``test_x`` -> ``test/x``,
    else ``train/x``), numbers only."""
    out = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.startswith("eval_"):
            key = "eval/" + key[len("eval_"):]
        elif key.startswith("test_"):
            key = "test/" + key[len("test_"):]
        else:
            key = "train/" + key
        out[key] = float(value)
    return out


class OtelRLCallback(TrainerCallback):
    """Logs the Trainer's metrics through otel-rl (see the module docstring)."""

    def __init__(self, config: dict | str | None = None) -> None:
        self.config = config
        self.logger: Logger | None = None
        #: The step of the last TRL completions table written, per table (otel_rl.integrations.trl).
        self.completions_logged: dict[str, int] = {}

    def _start(self, args) -> None:
        from otel_rl.integrations.common import run_config

        self.logger = Logger(run_config(self.config, run_name=getattr(args, "run_name", None)))
        params = args.to_dict() if hasattr(args, "to_dict") else dict(vars(args))
        self.logger.log_hyperparams({k: v for k, v in params.items() if v is not None})

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.logger is None:
            self._start(args)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if self.logger is None:
            self._start(args)
        metrics = rewrite(logs)
        if metrics:
            self.logger.log_metrics(metrics, step=int(state.global_step))

    def on_train_end(self, args, state, control, **kwargs):
        if self.logger is not None:
            self.logger.finish()
            self.logger = None


def register() -> None:
    """Make ``report_to="otel_rl"`` resolve to :class:`OtelRLCallback`, and record TRL's
    completions (done on import)."""
    from otel_rl.integrations import trl

    trl.watch()
    try:
        from transformers.integrations import integration_utils
    except ImportError:  # an older transformers layout
        return
    integration_utils.INTEGRATION_TO_CALLBACK.setdefault(REPORT_TO, OtelRLCallback)


register()
