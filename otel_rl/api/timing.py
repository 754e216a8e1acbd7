"""Timing spans: ``with otel_rl.span("rollout"):`` (or ``@otel_rl.span("rollout")``).

Each use is a real OTel span (nesting follows the phases: step > rollout > generation),
exported by the pipeline's span processors (OTLP, MLflow traces). Its duration also
becomes the gauge ``timing/<phase>`` (seconds), like NeMo-RL's Timer and verl's ``timing_s/*``.
Repeated phases within one step are reduced (``reduce=``: ``sum`` by default, or ``mean``,
``max``, ``min``, ``count``).

**Which step a timing belongs to**: the step of the first value recorded after the span ends,
or the step current when it ended if that is higher or the step changes first. This fits both
loop shapes:

- set the step first (``set_step(i)``, then the phases, then the values): step ``i``;
- log at the end (the phases, then ``log_metrics(m, step=i)`` or CleanRL's
  ``writer.add_scalar(..., global_step)``): step ``i`` too, not the previous iteration's.

A step's reduced value is emitted once, when the step is over (the next ``set_step``) or
at shutdown, so no backend ever sees a partial sum for a step.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace

from otel_rl.api import step as _step
from otel_rl.api.current import current_run
from otel_rl.model.semconv import STEP_ATTRIBUTE

REDUCERS = ("sum", "mean", "max", "min", "count")
TIMING_PREFIX = "timing/"


def _reduce(how: str, acc: list[float]) -> float:
    total, count, high, low = acc
    return {"sum": total, "mean": total / count, "max": high, "min": low, "count": float(count)}[how]


class PhaseTimer:
    """Accumulates span durations per (phase, step) and emits ``timing/<phase>`` gauges."""

    def __init__(self, recorder, tracer) -> None:
        self._recorder = recorder
        self.tracer = tracer
        self._lock = threading.Lock()
        self._acc: dict[tuple[str, int], list[float]] = {}
        self._how: dict[str, str] = {}

    def record(self, phase: str, reduce: str, step: int, seconds: float) -> None:
        with self._lock:
            previous = self._how.setdefault(phase, reduce)
            if previous != reduce:
                raise ValueError(f"span {phase!r}: reduce={reduce!r} but earlier spans used {previous!r}")
            acc = self._acc.get((phase, step))
            if acc is None:
                self._acc[(phase, step)] = [seconds, 1, seconds, seconds]
            else:
                acc[0] += seconds
                acc[1] += 1
                acc[2] = max(acc[2], seconds)
                acc[3] = min(acc[3], seconds)

    def defer(self, phase: str, reduce: str, seconds: float) -> None:
        """Place a finished span's timing once its step is known (see the module docstring)."""
        with self._lock:
            previous = self._how.setdefault(phase, reduce)
        if previous != reduce:
            raise ValueError(f"span {phase!r}: reduce={reduce!r} but earlier spans used {previous!r}")
        self._recorder.defer(lambda at: self.record(phase, reduce, at if at is not None else 0, seconds))

    def on_step(self, step: int) -> None:
        """A new step began: emit every phase of earlier steps."""
        if self._acc:  # the common case on the hot path: nothing timed, nothing to do
            self.emit(lambda s: s < step)

    def emit(self, which: Callable[[int], bool] | None = None) -> None:
        """Emit the phases of the steps ``which`` accepts; None: every step (at shutdown, after
        settling timings still waiting at the step their spans ended at)."""
        if which is None:
            self._recorder.settle_all()
            which = lambda s: True  # noqa: E731
        with self._lock:
            done = [(key, acc) for key, acc in self._acc.items() if which(key[1])]
            for key, _ in done:
                del self._acc[key]
        now = time.time_ns()
        for (phase, step), acc in sorted(done, key=lambda kv: kv[0][1]):
            # put_quiet: a timing is not a value that settles other spans' steps
            self._recorder.put_quiet(("g", TIMING_PREFIX + phase, _reduce(self._how[phase], acc), step, now,
                                      None))


class span:  # noqa: N801 - used like a function: `with otel_rl.span("rollout"):`
    """A timed phase: an OTel span plus ``timing/<phase>`` at the current step.

    ``attributes`` go on the span only (not on the gauge: keeps its label set bounded).
    Without an active pipeline (:func:`otel_rl.init` or a :class:`~otel_rl.Logger`) it is
    a plain span on the global tracer and no gauge is recorded.
    """

    def __init__(self, phase: str, *, reduce: str = "sum", attributes: Mapping[str, Any] | None = None):
        if not phase or not isinstance(phase, str):
            raise ValueError(f"span phase must be a non-empty string, got {phase!r}")
        if reduce not in REDUCERS:
            raise ValueError(f"span {phase!r}: reduce={reduce!r} is not allowed; allowed: {', '.join(REDUCERS)}")
        self.phase = phase
        self.reduce = reduce
        self.attributes = dict(attributes or {})
        self._local = threading.local()

    def __enter__(self) -> trace.Span:
        pipeline = current_run()
        timer = pipeline.timing if pipeline is not None else None
        tracer = timer.tracer if timer is not None else trace.get_tracer("otel_rl")
        step = pipeline.step if pipeline is not None else _step.get_step()
        attrs = dict(self.attributes)
        if step is not None:
            attrs[STEP_ATTRIBUTE] = step
        cm = tracer.start_as_current_span(self.phase, attributes=attrs)
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append((cm, timer, step, time.perf_counter()))
        return cm.__enter__()

    def __exit__(self, *exc_info) -> None:
        cm, timer, step, t0 = self._local.stack.pop()
        elapsed = time.perf_counter() - t0
        try:
            if timer is not None:
                timer.defer(self.phase, self.reduce, elapsed)
        finally:
            cm.__exit__(*exc_info)

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)

        return timed
