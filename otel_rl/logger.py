"""A NeMo-RL-style facade over the OTel pipeline.

``Logger(cfg).log_metrics({"loss": 0.3}, step=7)`` costs the training thread one append to
its run's tape (:mod:`otel_rl.recording`): the pipeline's drain thread turns the dict into
gauge points at the step, on the same OTel stream as instrument users' values (and over OTLP
to a collector). Nothing waits on a backend; the tape is bounded (``max_queue_points``, a
drain thread starved past it drops and counts).

Input rules (documented in README, "Bad input"):

- nested dicts are flattened with ``/``; ``prefix`` is prepended as ``prefix/key``;
- names are kept exactly as written (case included: ``Loss`` and ``loss`` are two series);
  each backend gets its documented key (``otel_rl/exporters/naming.py``), nothing is skipped
  for its spelling;
- bool, int, float, and 1-element numpy/torch values are recorded as float; NaN and +-inf
  arrive as they are (a NaN loss is worth seeing);
- logging the same name twice at one step keeps both values (see README, "Repeated values");
- strings, None and multi-element arrays are not numbers: reported once per key and counted
  in ``stats()["rejected_points"]``; the other metrics of the call still arrive;
- a bad ``step`` (negative, not an int) raises ``ValueError``/``TypeError`` at the call.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Mapping
from typing import Any

from otel_rl import _step
from otel_rl.config import Config
from otel_rl.pipeline import Pipeline

_log = logging.getLogger(__name__)


class Logger:
    """``Logger(cfg)``: ``log_metrics``, ``log_hyperparams``, ``finish``; cfg as for :func:`otel_rl.init`."""

    def __init__(self, cfg: Config | dict | str | None = None, *, pipeline: Pipeline | None = None) -> None:
        self._owns_pipeline = pipeline is None
        self.pipeline = pipeline or Pipeline(cfg)
        self.pipeline.activate(only_if_none=True)  # so otel_rl.span() times into it
        self._recorder = self.pipeline.recorder
        self._warned: set[str] = set()
        #: Calls made after :meth:`finish` (not recorded; warned once).
        self.calls_after_finish = 0
        self._finished = False
        atexit.register(self.finish)

    # -- training thread ---------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Record every value of ``metrics`` at ``step``. Never blocks on a backend."""
        if self._finished:
            self._after_finish("log_metrics")
            return
        step = _step.check_step(step)
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping of name -> value, got {type(metrics).__name__}")
        recorder = self._recorder
        # the values first: span timings waiting for their step take this one (otel_rl.timing)
        recorder.put(("m", prefix, dict(metrics), step, time.time_ns()))
        recorder.set_step(step)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters (nested dicts flattened with ``/``)."""
        if self._finished:
            self._after_finish("log_hyperparams")
            return
        self.pipeline.log_hyperparams(params)

    def finish(self, timeout_s: float = 30.0, status: str | None = None) -> None:
        """Flush every sink and (when owned) shut the pipeline down with the run's ``status``
        (default: ``failed`` after an uncaught exception), waiting at most ``timeout_s`` for slow
        sinks (with a spool, what is left stays spooled)."""
        if self._finished:
            return
        self._finished = True
        atexit.unregister(self.finish)
        if self._owns_pipeline:
            self.pipeline.shutdown(timeout_s, status)
        else:
            self.pipeline.force_flush(timeout_s)

    def _after_finish(self, method: str) -> None:
        self.calls_after_finish += 1
        self._warn("finished", "Logger.%s after finish(): the pipeline is closed, nothing is recorded "
                   "(counted in Logger.calls_after_finish; create a new Logger for a new run)", method)

    def _warn(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned and len(self._warned) < 100_000:
            self._warned.add(key)
            _log.warning(message, *args)
