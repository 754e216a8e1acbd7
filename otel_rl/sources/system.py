"""System and process metrics with the OpenTelemetry semantic conventions (``system.*``,
``process.*``), from the maintained psutil-based ``opentelemetry-instrumentation-system-metrics``,
recorded at the run's step like the GPU gauges, under one ``system/`` section in every backend
(``system/memory.usage``, ``system/process.cpu.utilization``, as W&B names its own).

On by default with a small set that is cheap to read and bounded in series (no per-CPU or
per-disk breakdown, which on a 128-core node would be hundreds of series in every backend):

- ``system.cpu.utilization`` is not in it (per CPU); ``process.cpu.utilization`` (this process:
  user, system) is;
- ``system.memory.usage`` / ``system.memory.utilization`` (used), ``system.network.io``
  (transmit, receive, per interface), ``process.memory.usage`` (RSS), ``process.thread.count``,
  ``process.open_file_descriptor.count``.

``system_metrics.metrics`` replaces the set with the instrumentation's own config format
(``{"system.cpu.utilization": ["user", "system"], ...}``; its README lists every metric).
They are read every ``interval_s`` (default 10 s) on the pipeline's drain thread. W&B's own
system-metrics collection stays off, so nothing is counted twice.

The instrumentation can be installed once per process: with several runs at once (a sweep in
threads) the first run that starts gets the system metrics, and the next run after it shuts down.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Optional

from otel_rl.settings import env_default, positive

_log = logging.getLogger(__name__)

DEFAULT_METRICS: dict[str, Optional[list[str]]] = {
    "system.memory.usage": ["used"],
    "system.memory.utilization": ["used"],
    "system.network.io": ["transmit", "receive"],
    "process.cpu.utilization": ["user", "system"],
    "process.memory.usage": None,
    "process.thread.count": None,
    "process.open_file_descriptor.count": None,
}

_lock = threading.Lock()
_owner: Any = None  # the SystemMetrics instance that holds the process-wide instrumentation


@dataclasses.dataclass(frozen=True)
class SystemMetricsConfig:
    """``system_metrics`` section: ``enabled`` (env ``OTEL_RL_SYSTEM_METRICS``; default true, and
    on only when the instrumentation is installed), ``interval_s`` between reads, ``metrics`` (the
    instrumentation's config; None: :data:`DEFAULT_METRICS`)."""

    enabled: bool = env_default("OTEL_RL_SYSTEM_METRICS", True, bool)
    interval_s: float = 10.0
    metrics: Optional[dict] = None

    def validate(self, path: str) -> None:

        positive(f"{path}.interval_s", self.interval_s)


#: Network interfaces left out by default: loopback (traffic of the process with itself).
#: An interface that has moved no bytes (an idle virtual one: ifb0, a down bridge) is left
#: out until it does.
_SKIPPED_DEVICES = frozenset({"lo", "lo0"})


def display_name(name: str) -> str:
    """Where a system metric shows: one ``system/`` section in every backend, as W&B shows its
    own (``system.memory.usage`` -> ``system/memory.usage``, ``process.thread.count`` ->
    ``system/process.thread.count``)."""
    return "system/" + (name[len("system."):] if name.startswith("system.") else name)


def _keep(observation) -> bool:
    attributes = observation.attributes or {}
    device = attributes.get("device")
    if device is None:
        return True
    return device not in _SKIPPED_DEVICES and observation.value != 0


class _ThrottledMeter:
    """A meter whose observable callbacks run at most every ``interval_s`` (each callback on its
    own clock), so reading /proc does not follow the export interval; instruments are named
    :func:`display_name` and loopback and idle interfaces are left out."""

    def __init__(self, meter, interval_s: float) -> None:
        self._meter = meter
        self._interval_s = interval_s

    def _wrap(self, callbacks):
        wrapped = []
        for callback in callbacks or ():
            last = [-float("inf")]

            def throttled(options, callback=callback, last=last):
                now = time.monotonic()
                if now - last[0] < self._interval_s:
                    return []
                last[0] = now
                return [o for o in callback(options) if _keep(o)]

            wrapped.append(throttled)
        return wrapped

    def create_observable_counter(self, name, callbacks=None, unit="", description=""):
        return self._meter.create_observable_counter(display_name(name), self._wrap(callbacks), unit, description)

    def create_observable_up_down_counter(self, name, callbacks=None, unit="", description=""):
        return self._meter.create_observable_up_down_counter(display_name(name), self._wrap(callbacks), unit,
                                                             description)

    def create_observable_gauge(self, name, callbacks=None, unit="", description=""):
        return self._meter.create_observable_gauge(display_name(name), self._wrap(callbacks), unit, description)

    def __getattr__(self, name):
        return getattr(self._meter, name)


class _Provider:
    def __init__(self, provider, interval_s: float) -> None:
        self._provider = provider
        self._interval_s = interval_s

    def get_meter(self, name, version=None, schema_url=None, attributes=None):
        return _ThrottledMeter(self._provider.get_meter(name, version, schema_url), self._interval_s)


class SystemMetrics:
    """The instrumentation installed on one run's meter provider (see the module docstring)."""

    def __init__(self, meter_provider, config: SystemMetricsConfig) -> None:
        self._provider = meter_provider
        self._config = config
        self._instrumentor = None

    def start(self) -> bool:
        global _owner
        try:
            from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
        except ImportError:
            _log.info("otel-rl: system metrics off (pip install 'otel-rl[system]' for system.*/process.*)")
            return False
        with _lock:
            if _owner is not None:
                _log.info("otel-rl: system metrics are recorded by another run of this process")
                return False
            instrumentor = SystemMetricsInstrumentor(config=dict(self._config.metrics or DEFAULT_METRICS))
            if instrumentor.is_instrumented_by_opentelemetry:
                _log.info("otel-rl: system metrics already instrumented by the application; not again")
                return False
            instrumentor.instrument(meter_provider=_Provider(self._provider, self._config.interval_s))
            self._instrumentor, _owner = instrumentor, self
        return True

    def close(self) -> None:
        global _owner
        with _lock:
            if self._instrumentor is not None and _owner is self:
                self._instrumentor.uninstrument()
                self._instrumentor, _owner = None, None
