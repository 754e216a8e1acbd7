"""The OpenTelemetry metrics API as otel-rl implements it: meters and instruments whose every
call is one append to a run's tape (:mod:`otel_rl.api.recording`).

Instruments keep their name exactly as written (case included); a meter bound to a run records
into it, the global meter into the run current where it records. What an instrument says of its
metric (unit, description, the meter's name as the instrumentation scope) travels once, as a
tape record, to OTLP and Prometheus ``# HELP``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import metrics as api
from opentelemetry.context import Context

from otel_rl.api.recording import (
    Recorder,
    _context_get,
    _global_observables,
    _instrument_info,
    _lock,
    _time_ns,
    current,
)
from otel_rl.model.tape import COUNTER, GAUGE, HISTOGRAM, INFO, OBSERVED_SUM, OBSERVED_UPDOWN, UPDOWN


def _primed(callback):
    """A generator callback advanced to its first ``yield`` (the SDK sends options from there)."""
    if inspect.isgenerator(callback):
        next(callback)
    return callback


# -- the API: meters and instruments ------------------------------------------------------
class _Instrument:
    __slots__ = ("_name", "_recorder", "_kind", "unit", "description", "bounds")

    def __init__(self, kind: str, name: str, recorder: Recorder | None, unit: str, description: str,
                 bounds: Sequence[float] | None = None) -> None:
        self._kind, self._name, self._recorder = kind, name, recorder
        self.unit, self.description, self.bounds = unit, description, bounds

    @property
    def name(self) -> str:
        return self._name

    def _record(self, amount: int | float, attributes: Mapping[str, Any] | None = None,
                context: Context | None = None) -> None:
        """One measurement on the tape: ``Gauge.set``, ``Counter.add`` and ``UpDownCounter.add``
        are this method itself (the hot path: no call in between). The record is appended
        straight to the tape unless the recorder has work for it (deferred span timings, a
        tape past its wake mark)."""
        recorder = self._recorder or _context_get()
        if recorder is None or recorder.closed:
            ended = recorder
            recorder = None if self._recorder is not None else current()  # a bound run stays bound
            if recorder is None:
                if ended is not None:
                    ended.refuse(f"{self._name!r} (a measurement)")
                return
        record = (self._kind, self._name, amount, recorder.step, _time_ns(),
                  dict(attributes) if attributes else None)
        tape = recorder.tape
        if recorder._deferred or len(tape) >= recorder._wake_at:
            recorder.put(record)
        else:
            tape.append(record)


class Gauge(_Instrument, api._Gauge):  # the API exports Gauge as _Gauge (experimental in 1.45)
    __slots__ = ()
    set = _Instrument._record


class Counter(_Instrument, api.Counter):
    __slots__ = ()
    add = _Instrument._record


class UpDownCounter(_Instrument, api.UpDownCounter):
    __slots__ = ()
    add = _Instrument._record


class Histogram(_Instrument, api.Histogram):
    __slots__ = ()

    def record(self, amount: int | float, attributes: Mapping[str, Any] | None = None,
               context: Context | None = None) -> None:
        if self.bounds is None:
            self._record(amount, attributes)
            return
        recorder = self._recorder or current()
        if recorder is not None:
            recorder.put((HISTOGRAM, self._name, amount, recorder.step, _time_ns(),
                          dict(attributes) if attributes else None, self.bounds))


class _Observable(api.ObservableGauge, api.ObservableCounter, api.ObservableUpDownCounter):
    def __init__(self, name: str) -> None:
        self.name = name


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"instrument name must be a non-empty string, got {name!r}")
    return name


class Meter(api.Meter):
    """Instruments keep their name exactly as written (case included); each name and kind is
    one instrument (creating it again returns the same one)."""

    def __init__(self, name: str, version: str | None, schema_url: str | None,
                 recorder: Recorder | None) -> None:
        super().__init__(name, version, schema_url)
        self._recorder = recorder
        self._instruments: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _get(self, kind: str, cls, name: str, unit: str, description: str, bounds=None):
        key = (kind, _check_name(name))
        instrument = self._instruments.get(key)
        if instrument is None:
            with self._lock:
                instrument = self._instruments.get(key)
                if instrument is None:
                    instrument = self._instruments[key] = cls(kind, name, self._recorder, unit,
                                                              description, bounds)
                    self._describe(name, unit, description)
        return instrument

    def _describe(self, name: str, unit: str, description: str) -> None:
        """Unit, description and scope of ``name``: to the run (the tape), and kept for runs that
        start later (:func:`instrument_info`)."""
        if not unit and not description:
            return  # nothing said of it beyond its name: no record (the tape stays one per value)
        info = (str(unit or ""), str(description or ""), str(self.name or ""))
        with _lock:
            _instrument_info[name] = info
        recorder = self._recorder or current()
        if recorder is not None and not recorder.closed:
            recorder.put_quiet((INFO, name, info, None, _time_ns(), None))

    def create_counter(self, name, unit="", description="") -> api.Counter:
        return self._get(COUNTER, Counter, name, unit, description)

    def create_up_down_counter(self, name, unit="", description="") -> api.UpDownCounter:
        return self._get(UPDOWN, UpDownCounter, name, unit, description)

    def create_histogram(self, name, unit="", description="", *,
                         explicit_bucket_boundaries_advisory=None) -> api.Histogram:
        bounds = None
        if explicit_bucket_boundaries_advisory:
            bounds = sorted(float(b) for b in explicit_bucket_boundaries_advisory)
        return self._get(HISTOGRAM, Histogram, name, unit, description, bounds)

    def create_gauge(self, name, unit="", description="") -> api._Gauge:
        return self._get(GAUGE, Gauge, name, unit, description)

    def _observable(self, kind: str, name, callbacks, unit="", description="") -> _Observable:
        """Callbacks of a meter bound to a run observe into that run; those of the global meter
        into the process's current run, whichever run that is when they are called."""
        _check_name(name)
        self._describe(name, unit, description)
        if callbacks:
            callbacks = [_primed(c) for c in callbacks]
            with _lock:
                (self._recorder.observables if self._recorder is not None else _global_observables).append(
                    (kind, name, callbacks))
        return _Observable(name)

    def create_observable_counter(self, name, callbacks=None, unit="", description=""):
        return self._observable(OBSERVED_SUM, name, callbacks, unit, description)

    def create_observable_up_down_counter(self, name, callbacks=None, unit="", description=""):
        return self._observable(OBSERVED_UPDOWN, name, callbacks, unit, description)

    def create_observable_gauge(self, name, callbacks=None, unit="", description=""):
        return self._observable(GAUGE, name, callbacks, unit, description)


class MeterProvider(api.MeterProvider):
    """Meters recording into ``recorder``, or (None) into the run current where they record."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self._recorder = recorder
        self._meters: dict[tuple, Meter] = {}
        self._lock = threading.Lock()

    def get_meter(self, name, version=None, schema_url=None, attributes=None) -> Meter:
        key = (name, version, schema_url)
        with self._lock:
            meter = self._meters.get(key)
            if meter is None:
                meter = self._meters[key] = Meter(name, version, schema_url, self._recorder)
        return meter
