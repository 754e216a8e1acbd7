"""TRL's completions (GRPO, RLOO) as samples tables, through the Hugging Face callback.

``import otel_rl.hf`` also watches TRL's ``GRPOTrainer`` and ``RLOOTrainer``. When a trainer has
an :class:`~otel_rl.integrations.hf.OtelRLCallback` (``report_to="otel_rl"`` or
``callbacks=[...]``), each of its log calls also records the completions TRL holds for that step
as one samples table at ``state.global_step``:

- one row per completion: ``prompt``, ``completion``, one column per reward function (its
  ``__name__``), ``advantage``, and the extra columns reward functions log;
- ``completions`` during training, ``eval/completions`` in evaluation;
- conversational prompts and completions as ``role: content`` lines.

TRL keeps only the latest generation batch (the rows it prints and sends to W&B itself with
``log_completions``): with ``logging_steps`` above the generation interval, the batches in
between are not seen. The rows are read after TRL's own ``log``; TRL is not modified (its
``log`` method is wrapped when its module is imported).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from otel_rl.integrations.common import after_import
from otel_rl.sinks.base import WarnOnce

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

#: TRL's trainers whose ``_logs`` hold the completions, by module.
TRAINERS = {"trl.trainer.grpo_trainer": "GRPOTrainer", "trl.trainer.rloo_trainer": "RLOOTrainer"}
TRAIN_TABLE, EVAL_TABLE = "completions", "eval/completions"
_PATCHED = "_otel_rl_patched"


def watch() -> None:
    """Record completions of TRL's trainers from now on (``import otel_rl.hf`` calls it)."""
    after_import(TRAINERS, _patch_module)


def _patch_module(module) -> None:
    cls = getattr(module, TRAINERS[module.__name__], None)
    if cls is None or getattr(cls, _PATCHED, False):
        return
    original = cls.log

    @functools.wraps(original)
    def log(self, logs, *args, **kwargs):
        result = original(self, logs, *args, **kwargs)
        try:
            record_completions(self, logs)
        except Exception as exc:  # noqa: BLE001 - training goes on whatever otel-rl makes of it
            _warn("record", "otel-rl: TRL completions could not be recorded (%s; said once)", exc)
        return result

    cls.log = log
    setattr(cls, _PATCHED, True)


def record_completions(trainer: Any, logs: dict) -> None:
    """The rows of ``trainer._logs`` as a samples table at the trainer's step, through its
    otel-rl callback (none, or not the main process: nothing)."""
    # the otel-rl callback (integrations.hf.OtelRLCallback, which imports this module): the one
    # callback with a completions ledger
    callback = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "completions_logged")), None)
    store = getattr(trainer, "_logs", None)
    if callback is None or callback.logger is None or not store or "train_runtime" in logs:
        return  # the end-of-training summary repeats the last step's rows
    rows = completion_rows(store)
    if not rows:
        return
    table = EVAL_TABLE if any(k.startswith("eval_") for k in logs) else TRAIN_TABLE
    step = int(trainer.state.global_step)
    if callback.completions_logged.get(table) == step:
        return
    callback.completions_logged[table] = step
    callback.logger.log_samples(rows, step=step, name=table)


def completion_rows(store: dict) -> list[dict]:
    """TRL's column store (``prompt``, ``completion``, ``rewards[name]``, ``advantages``,
    ``extra[name]``; parallel deques) as rows."""
    prompts, completions = list(store.get("prompt", ())), list(store.get("completion", ()))
    rewards = {name: list(values) for name, values in (store.get("rewards") or {}).items()}
    extra = {name: list(values) for name, values in (store.get("extra") or {}).items()}
    advantages = list(store.get("advantages", ()))
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        row = {"prompt": _text(prompt), "completion": _text(completion)}
        row.update({name: _value(values, i) for name, values in rewards.items()})
        if advantages:
            row["advantage"] = _value(advantages, i)
        row.update({name: _value(values, i) for name, values in extra.items() if name not in row})
        rows.append(row)
    return rows


def _text(value: Any) -> str:
    """A prompt or completion: text as is; a conversation as ``role: content`` lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in value)
    return str(value)


def _value(values: list, i: int) -> Any:
    value = values[i] if i < len(values) else None
    return value.item() if hasattr(value, "item") else value
