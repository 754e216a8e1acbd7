"""A NeMo-RL-style facade over the OTel pipeline.

``Logger(cfg).log_metrics({"loss": 0.3}, step=7)`` costs the training thread
one queue append: a recorder thread turns the dict into OTel gauge points
(``step`` attribute) off the hot path, so the values travel the same OTel
stream as instrument users' (and over OTLP to a collector).

The queue is bounded (``max_pending_calls``). When the recorder falls behind
(a loop logging tens of thousands of steps per second), the training thread
records the call itself into the SDK instead: slower for that call, but memory
stays bounded, nothing is dropped and nothing waits on a backend. Those calls
are counted in :attr:`Logger.inline_calls`.

Input rules (documented in README, "Bad input"):

- nested dicts are flattened with ``/``; ``prefix`` is prepended as ``prefix/key``;
- bool, int, float, and 1-element numpy/torch values are recorded as float;
  NaN and +-inf arrive as they are (a NaN loss is worth seeing): OTel SDKs drop
  non-finite measurements, so they travel as 0 plus an ``otel_rl.nonfinite``
  attribute that translation turns back into the value;
- names are sanitized into OTel's instrument-name set ``[A-Za-z][-_./A-Za-z0-9]*``
  (at most 255): other characters become ``_``; a name not starting with a letter
  gets an ``m_`` prefix; one warning per renamed key;
- empty names (or empty ``/`` components), strings, None and multi-element arrays are skipped with one
  warning per key; the other metrics of the call still arrive;
- a bad ``step`` (negative, not an int) raises ``ValueError``/``TypeError`` at the call.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from otel_rl import _step
from otel_rl._step import encode_nonfinite
from otel_rl.config import Config
from otel_rl.pipeline import Pipeline
from otel_rl.semconv import HPARAMS_METRIC, STEP_ATTRIBUTE

_log = logging.getLogger(__name__)

_ILLEGAL = re.compile(r"[^-_./A-Za-z0-9]")
_POLL_S = 0.02


def instrument_name(key: str) -> str | None:
    """``key`` as a legal OTel instrument name, or None when nothing is left of it."""
    if not key:
        return None
    name = _ILLEGAL.sub("_", key)
    if not name[0].isalpha():
        name = "m_" + name
    return name[:255]


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        full = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Logger:
    """``Logger(cfg)``: ``log_metrics``, ``log_hyperparams``, ``finish``; cfg as for :func:`otel_rl.init`."""

    def __init__(self, cfg: Config | dict | str | None = None, *, pipeline: Pipeline | None = None,
                 max_pending_calls: int = 10_000) -> None:
        if max_pending_calls < 1:
            raise ValueError(f"max_pending_calls must be >= 1, got {max_pending_calls!r}")
        self._owns_pipeline = pipeline is None
        self.pipeline = pipeline or Pipeline(cfg)
        self.pipeline.activate(only_if_none=True)  # so otel_rl.span() times into it
        self._meter = self.pipeline.meter_provider.get_meter("otel_rl.logger")
        self._limit = max_pending_calls
        self._flush_every = self.pipeline.config.pipeline.flush_every_steps
        self._queue: deque = deque()
        self._gauges: dict[str, Any] = {}
        self._names: dict[str, str | None] = {}
        self._owners: dict[str, str] = {}
        self._warned: set[str] = set()
        self._create_lock = threading.Lock()
        self.inline_calls = 0
        #: Calls made after :meth:`finish` (not recorded; warned once).
        self.calls_after_finish = 0
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="otel-rl-recorder", daemon=True)
        self._thread.start()
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
        _step.set_checked_step(step)
        if len(self._queue) < self._limit:
            self._queue.append((step, prefix, dict(metrics)))
            return
        self.inline_calls += 1
        self._warn("queue", "recorder queue full (%d calls): recording on the calling thread "
                   "(counted in Logger.inline_calls)", self._limit)
        self._record(step, prefix, metrics)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters (nested dicts flattened with ``/``)."""
        if self._finished:
            self._after_finish("log_hyperparams")
            return
        flat = {k: _hparam_value(v) for k, v in flatten(params).items() if k}
        self._queue.append((None, "", flat))

    def finish(self, timeout_s: float = 30.0) -> None:
        """Record everything queued, flush every sink and (when owned) shut the pipeline down,
        waiting at most ``timeout_s`` for slow sinks (with a spool, what is left stays spooled)."""
        if self._finished:
            return
        self._finished = True
        atexit.unregister(self.finish)
        self._stop.set()
        self._thread.join()
        if self._owns_pipeline:
            self.pipeline.shutdown(timeout_s)
        else:
            self.pipeline.force_flush(timeout_s)

    def _after_finish(self, method: str) -> None:
        self.calls_after_finish += 1
        self._warn("finished", "Logger.%s after finish(): the pipeline is closed, nothing is recorded "
                   "(counted in Logger.calls_after_finish; create a new Logger for a new run)", method)

    # -- recorder thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(_POLL_S)
            try:
                self._drain()
            except Exception:  # a recorder bug must not silently end recording
                _log.exception("otel-rl recorder failed on a batch")
            if stopping and not self._queue:
                return

    def _drain(self) -> None:
        steps = 0
        last_step = None
        while self._queue:
            step, prefix, metrics = self._queue.popleft()
            if step is None:
                self._gauge(HPARAMS_METRIC).set(1, metrics)
                continue
            if step != last_step:
                last_step = step
                steps += 1
                if steps >= self._flush_every:  # keep a burst under the cardinality limit
                    self.pipeline.collect_now()
                    steps = 0
            self._record(step, prefix, metrics)

    def _record(self, step: int, prefix: str, metrics: Mapping[str, Any]) -> None:
        attributes = {STEP_ATTRIBUTE: step}
        for key, value in flatten(metrics, prefix).items():
            number = self._number(key, value)
            name = self._name(key)
            if number is not None and name is not None:
                self._gauge(name).set(*encode_nonfinite(number, attributes))

    def _number(self, key: str, value: Any) -> float | None:
        if isinstance(value, (int, float)):
            return float(value)
        item = getattr(value, "item", None)
        numel = getattr(value, "numel", None)  # torch; numpy has .size
        size = numel() if callable(numel) else getattr(value, "size", 1)
        if callable(item) and size == 1:
            try:
                return float(item())
            except (TypeError, ValueError):
                pass
        self._warn(f"value:{key}", "metric %r: value %r is not a number; skipped", key, value)
        return None

    def _name(self, key: str) -> str | None:
        if key in self._names:
            return self._names[key]
        name = None if "" in key.split("/") else instrument_name(key)
        if name is None:
            self._warn(f"name:{key}", "metric %r has an empty name (or path component); skipped", key)
        elif name != key:
            self._warn(f"name:{key}", "metric %r renamed to %r (OTel instrument-name rules)", key, name)
        if name is not None:
            owner = self._owners.setdefault(name, key)
            if owner != key:
                self._warn(f"collision:{key}", "metrics %r and %r both become %r; values of the "
                           "same step overwrite each other", owner, key, name)
        if len(self._names) < 100_000:
            self._names[key] = name
        return name

    def _gauge(self, name: str):
        gauge = self._gauges.get(name)
        if gauge is None:
            with self._create_lock:  # the training thread records too when the queue is full
                gauge = self._gauges.get(name)
                if gauge is None:
                    gauge = self._gauges[name] = self._meter.create_gauge(name)
        return gauge

    def _warn(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned and len(self._warned) < 100_000:
            self._warned.add(key)
            _log.warning(message, *args)
