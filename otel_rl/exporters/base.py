"""The exporter contract every backend implements.

A backend subclasses :class:`RecordExporter` and implements
:meth:`RecordExporter.write` (a translated :class:`Batch`) and
:meth:`RecordExporter.close`. The base class makes it a real SDK
``MetricExporter``: DELTA temporality, ``export`` never raises into the SDK,
FAILURE after shutdown, and a harmless double shutdown.
"""

from __future__ import annotations

import enum
import importlib
import logging
import threading
from abc import abstractmethod

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
    _Gauge,  # the SDK's public name for the (still experimental) synchronous Gauge
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult

from otel_rl.exporters.records import Batch
from otel_rl.exporters.translate import Translator

_log = logging.getLogger(__name__)

#: Every instrument class under DELTA: each collect exports only what was
#: recorded since the last one, so per-step attribute sets do not pile up.
DELTA_TEMPORALITY = {
    cls: AggregationTemporality.DELTA
    for cls in (Counter, UpDownCounter, Histogram, _Gauge,
                ObservableCounter, ObservableUpDownCounter, ObservableGauge)
}


class MissingExtraError(ImportError):
    """An optional backend package is not installed."""


class PermanentError(Exception):
    """A write the backend refused for good (e.g. HTTP 4xx): retrying cannot help."""


class Outcome(enum.Enum):
    """What the delivery layer should do with a batch after one write attempt."""

    OK = "ok"
    RETRY = "retry"  # transient: connection refused, timeout, 5xx, 429
    DROP = "drop"  # permanent refusal, or the exporter is shut down


def require(module: str, extra: str):
    """Import an optional dependency, or raise an error that names the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is not installed; install it with: pip install 'otel-rl[{extra}]'") from exc


class RecordExporter(MetricExporter):
    """Base class for per-step backend exporters."""

    #: The registry name, e.g. ``"tensorboard"``.
    name: str = ""

    def __init__(self) -> None:
        super().__init__(preferred_temporality=DELTA_TEMPORALITY)
        self._translator = Translator()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def export(self, metrics_data, timeout_millis: float = 10_000) -> MetricExportResult:
        """Translate SDK ``MetricsData`` and write it. Never raises."""
        try:
            batch = self._translator.translate_sdk(metrics_data)
        except Exception:  # a translation bug must not reach the SDK's thread
            _log.exception("%s: could not translate metrics", self.name)
            return MetricExportResult.FAILURE
        return self.export_batch(batch)

    def export_batch(self, batch: Batch) -> MetricExportResult:
        """Write an already translated batch. Never raises."""
        ok = self.try_write(batch) is Outcome.OK
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def try_write(self, batch: Batch) -> Outcome:
        """One write attempt, classified for the delivery layer. Never raises."""
        with self._lock:
            if self._closed:
                _log.warning("%s: export after shutdown; %d records not written", self.name, len(batch))
                return Outcome.DROP
            if not batch:
                return Outcome.OK
            try:
                self.write(batch)
            except PermanentError as exc:
                _log.error("%s: backend refused %d records: %s", self.name, len(batch), exc)
                return Outcome.DROP
            except Exception as exc:  # transient by default: the delivery layer retries
                _log.warning("%s: write failed (%d records), will retry: %s", self.name, len(batch),
                             exc, exc_info=_log.isEnabledFor(logging.DEBUG))
                return Outcome.RETRY
        return Outcome.OK

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        with self._lock:
            if self._closed:
                return False
            try:
                self.flush()
            except Exception:
                _log.exception("%s: flush failed", self.name)
                return False
        return True

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.close()
            except Exception:
                _log.exception("%s: close failed", self.name)

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Write one batch. Raise :class:`PermanentError` for a refusal that retrying cannot
        fix, any other exception for a transient failure. A retried batch is passed again
        as the same object, so a sink that writes in chunks can resume where it stopped."""

    def flush(self) -> None:
        """Make everything written so far durable/visible."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the backend (called once)."""
