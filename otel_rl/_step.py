"""The current training step, and meters whose instruments stamp it on every point.

Why an attribute: an OTel synchronous gauge exports only its last value per
export interval, so ten steps inside one interval would collapse into one.
Carrying the step as a point attribute keeps one attribute set per step; the
ML reader uses DELTA temporality, so each collect exports only the steps
recorded since the previous one and memory stays flat (DESIGN.md, "the step
problem").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics as api
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation

#: The point attribute that carries the training step. Prometheus sinks strip it.
STEP_ATTRIBUTE = "step"
#: See otel_rl.semconv.NONFINITE_ATTRIBUTE (defined here to avoid an import cycle).
NONFINITE_ATTRIBUTE = "otel_rl.nonfinite"

_lock = threading.Lock()
_current_step: int | None = None
_step_listeners: list[Callable[[int], None]] = []


def check_step(step: object) -> int:
    """Return ``step`` as an int, or raise ValueError/TypeError naming the bad value."""
    if isinstance(step, bool) or not isinstance(step, int):
        index = getattr(step, "__index__", None)
        if index is None or isinstance(step, bool):
            raise TypeError(f"step must be a non-negative int, got {step!r} ({type(step).__name__})")
        step = index()
    if step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    return step


def set_step(step: int) -> None:
    """Set the training step stamped on every point recorded from now on (process-wide)."""
    set_checked_step(check_step(step))


def set_checked_step(step: int) -> None:
    """:func:`set_step` for a step already validated by :func:`check_step`."""
    global _current_step
    if step == _current_step:
        return
    _current_step = step
    for listener in tuple(_step_listeners):
        listener(step)


def get_step() -> int | None:
    """The current training step, or None before the first :func:`set_step`."""
    return _current_step


def add_step_listener(listener: Callable[[int], None]) -> None:
    with _lock:
        _step_listeners.append(listener)


def remove_step_listener(listener: Callable[[int], None]) -> None:
    with _lock:
        if listener in _step_listeners:
            _step_listeners.remove(listener)


def _stamp(attributes: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    step = _current_step
    if step is None or (attributes is not None and STEP_ATTRIBUTE in attributes):
        return attributes
    if not attributes:
        return {STEP_ATTRIBUTE: step}
    stamped = dict(attributes)
    stamped[STEP_ATTRIBUTE] = step
    return stamped


def encode_nonfinite(amount: float, attributes: Mapping[str, Any] | None):
    """(0, attributes + nonfinite marker) for NaN/inf, which the SDK would drop; else unchanged."""
    if isinstance(amount, float) and not math.isfinite(amount):
        marked = dict(attributes or {})
        marked[NONFINITE_ATTRIBUTE] = "nan" if amount != amount else ("inf" if amount > 0 else "-inf")
        return 0.0, marked
    return amount, attributes


class _StepCounter(api.Counter):
    def __init__(self, inner: api.Counter) -> None:
        self._inner = inner

    def add(self, amount: int | float, attributes: Mapping[str, Any] | None = None,
            context: Context | None = None) -> None:
        self._inner.add(amount, _stamp(attributes), context)


class _StepUpDownCounter(api.UpDownCounter):
    def __init__(self, inner: api.UpDownCounter) -> None:
        self._inner = inner

    def add(self, amount: int | float, attributes: Mapping[str, Any] | None = None,
            context: Context | None = None) -> None:
        self._inner.add(amount, _stamp(attributes), context)


class _StepHistogram(api.Histogram):
    def __init__(self, inner: api.Histogram) -> None:
        self._inner = inner

    def record(self, amount: int | float, attributes: Mapping[str, Any] | None = None,
               context: Context | None = None) -> None:
        self._inner.record(amount, _stamp(attributes), context)


class _StepGauge(api._Gauge):  # the API exports Gauge as _Gauge (still experimental in 1.45)
    def __init__(self, inner: api._Gauge) -> None:
        self._inner = inner

    def set(self, amount: int | float, attributes: Mapping[str, Any] | None = None,
            context: Context | None = None) -> None:
        amount, attributes = encode_nonfinite(amount, attributes)
        self._inner.set(amount, _stamp(attributes), context)


def _stamped_callbacks(callbacks: Sequence[Callable] | None) -> list[Callable] | None:
    """Observable callbacks run on the reader's thread: stamp the step current at collect time."""
    if not callbacks:
        return callbacks

    def wrap(callback: Callable[[CallbackOptions], Iterable[Observation]]):
        def stamped(options: CallbackOptions) -> Iterable[Observation]:
            for obs in callback(options):
                yield Observation(obs.value, _stamp(obs.attributes), obs.context)
        return stamped

    return [wrap(cb) for cb in callbacks]


class StepMeter(api.Meter):
    """A meter whose instruments add ``step=<current step>`` unless the caller set one."""

    def __init__(self, inner: api.Meter) -> None:
        super().__init__(inner.name, inner.version, inner.schema_url)
        self._inner = inner

    def create_counter(self, name, unit="", description="") -> api.Counter:
        return _StepCounter(self._inner.create_counter(name, unit, description))

    def create_up_down_counter(self, name, unit="", description="") -> api.UpDownCounter:
        return _StepUpDownCounter(self._inner.create_up_down_counter(name, unit, description))

    def create_histogram(self, name, unit="", description="", *,
                         explicit_bucket_boundaries_advisory=None) -> api.Histogram:
        return _StepHistogram(self._inner.create_histogram(
            name, unit, description,
            explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory))

    def create_gauge(self, name, unit="", description="") -> api._Gauge:
        return _StepGauge(self._inner.create_gauge(name, unit, description))

    def create_observable_counter(self, name, callbacks=None, unit="", description=""):
        return self._inner.create_observable_counter(
            name, _stamped_callbacks(callbacks), unit, description)

    def create_observable_up_down_counter(self, name, callbacks=None, unit="", description=""):
        return self._inner.create_observable_up_down_counter(
            name, _stamped_callbacks(callbacks), unit, description)

    def create_observable_gauge(self, name, callbacks=None, unit="", description=""):
        return self._inner.create_observable_gauge(
            name, _stamped_callbacks(callbacks), unit, description)


class StepMeterProvider(api.MeterProvider):
    """Wraps an SDK MeterProvider so that plain ``metrics.get_meter()`` users get the step."""

    def __init__(self, inner: api.MeterProvider) -> None:
        self._inner = inner

    @property
    def sdk(self) -> api.MeterProvider:
        return self._inner

    def get_meter(self, name, version=None, schema_url=None, attributes=None) -> api.Meter:
        return StepMeter(self._inner.get_meter(name, version, schema_url, attributes))
