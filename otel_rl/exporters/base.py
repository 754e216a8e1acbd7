"""The sink contract every backend implements, and the one adapter to the OTel SDK.

A backend subclasses :class:`Sink` and implements :meth:`Sink.write` (an admitted
:class:`Batch`) and :meth:`Sink.close` (with the run's final status). Everything else (queues,
retries, spools, deadlines) lives once in :mod:`otel_rl.delivery`. Where otel-rl meets the
SDK, :class:`SinkExporter` turns any sink into a real ``MetricExporter`` (DELTA temporality,
``export`` never raises, FAILURE after shutdown, a harmless double shutdown).

Errors a write raises are classified by :func:`classify`: :class:`TransientError` and
``OSError`` (connection refused, timeouts, a full disk) are retried; :class:`PermanentError`
and errors that mean the data itself is bad (``TypeError``, ``ValueError``, ...) are not;
anything else is retried a bounded number of times, then treated as permanent.
"""

from __future__ import annotations

import enum
import importlib
import logging
import threading
import uuid
from abc import ABC, abstractmethod

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

_log = logging.getLogger(__name__)

#: Every instrument class under DELTA: each collect exports only what was
#: recorded since the last one, so per-step attribute sets do not pile up.
DELTA_TEMPORALITY = {
    cls: AggregationTemporality.DELTA
    for cls in (Counter, UpDownCounter, Histogram, _Gauge,
                ObservableCounter, ObservableUpDownCounter, ObservableGauge)
}

#: Run statuses a sink is closed with.
SUCCESS, FAILED, KILLED = "success", "failed", "killed"


class MissingExtraError(ImportError):
    """An optional backend package is not installed."""


class PermanentError(Exception):
    """A write the backend refused for good (e.g. HTTP 4xx): retrying cannot help."""


class TransientError(Exception):
    """A write that may succeed later (5xx, 429, connection refused); ``retry_after_s`` is the
    backend's hint (HTTP ``Retry-After``), if any."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Verdict(enum.Enum):
    """How the delivery layer treats a failed write."""

    TRANSIENT = "transient"  # retry, backing off
    PERMANENT = "permanent"  # never retry
    UNKNOWN = "unknown"  # retry a bounded number of times, then permanent


#: Errors that mean the data or the code is wrong: the same batch will fail the same way.
_PERMANENT_TYPES = (PermanentError, TypeError, ValueError, OverflowError, KeyError, IndexError,
                    AttributeError, UnicodeError, RecursionError)


def classify(exc: BaseException) -> Verdict:
    if isinstance(exc, TransientError):
        return Verdict.TRANSIENT
    if isinstance(exc, _PERMANENT_TYPES):
        return Verdict.PERMANENT
    if isinstance(exc, OSError):  # network, timeouts, a full disk: the world may change
        return Verdict.TRANSIENT
    return Verdict.UNKNOWN


def require(module: str, extra: str):
    """Import an optional dependency, or raise an error that names the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is not installed; install it with: pip install 'otel-rl[{extra}]'") from exc


class WarnOnce:
    """Log a warning once per key (bounded, so hostile keys cannot grow it without end)."""

    def __init__(self, logger: logging.Logger, limit: int = 10_000) -> None:
        self._log = logger
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, key: str, message: str, *args) -> None:
        if key in self._seen or len(self._seen) >= self._limit:
            return
        self._seen.add(key)
        self._log.warning(message, *args)


class SinkClosedError(PermanentError):
    """A write to a sink after :meth:`Sink.shutdown`."""


class Sink(ABC):
    """Base class for backends: one ``write`` per admitted batch, in order, from one thread."""

    #: The registry name, e.g. ``"tensorboard"``.
    name: str = ""
    #: Run identity (README, "Runs"): False (the default), a run id that the backend already
    #: holds from an earlier process starts a new backend run; True continues it. Set by the
    #: pipeline from its ``resume`` setting before the first write.
    resume: bool = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.warn_once = WarnOnce(logging.getLogger(f"otel_rl.sinks.{self.name}"))
        #: Who is writing: the spool id when fed from a spool (so a restarted process finds its
        #: own backend runs again), else a random id of this sink instance.
        self.instance = uuid.uuid4().hex[:12]

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self, run: str) -> str:
        """Where run ``run``'s data goes (a directory, a URL), for the startup log."""
        return self.name

    def open(self, run: str) -> None:
        """Start the backend's run ``run`` now, at the training's start (so its start time and
        runtime are the training's), instead of at the first write. Default: nothing to do."""

    def open_run(self, run: str) -> None:
        """:meth:`open` under the sink's lock; errors are logged (the first write opens it again)."""
        with self._lock:
            if self._closed:
                return
            try:
                self.open(run)
            except Exception as exc:
                _log.warning("%s: could not open run %r at start (%s); it opens at the first write",
                             self.name, run, exc)

    def write_batch(self, batch: Batch) -> None:
        """:meth:`write` under the sink's lock; raises :class:`SinkClosedError` after shutdown."""
        with self._lock:
            if self._closed:
                raise SinkClosedError(f"{self.name}: write after shutdown ({len(batch)} records not written)")
            if batch:
                self.write(batch)

    def force_flush(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            try:
                self.flush()
            except Exception:
                _log.exception("%s: flush failed", self.name)
                return False
        return True

    def shutdown(self, status: str = SUCCESS) -> None:
        """Close once with the run's final status; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.close(status)
            except Exception:
                _log.exception("%s: close failed", self.name)

    # -- durable state (sinks that can make a replay after a crash exact) ---------------------
    def bind_spool(self, spool_id: str, state: dict | None) -> None:
        """Called once before the first write when this sink is fed from a spool: ``state`` is
        what :meth:`checkpoint_state` returned at the spool's last checkpoint (None: none yet).
        Subclasses that override it call this one."""
        self.instance = spool_id

    def checkpoint_state(self) -> dict | None:
        """JSON-able state saved with the spool checkpoint after each delivered batch."""
        return None

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Write one batch. Raise :class:`PermanentError` for a refusal that retrying cannot
        fix, :class:`TransientError` (or ``OSError``) for one that may pass later. A retried
        batch is passed again as the same object, so a sink that writes in chunks can resume
        where it stopped."""

    def flush(self) -> None:
        """Make everything written so far durable/visible."""

    @abstractmethod
    def close(self, status: str = SUCCESS) -> None:
        """Flush and release the backend (called once); ``status`` is the run's outcome."""


#: The former name of :class:`Sink` (third-party entry points may still import it).
RecordExporter = Sink


class SinkExporter(MetricExporter):
    """A sink as an OTel SDK ``MetricExporter``: translate, admit, write; never raises."""

    def __init__(self, sink: Sink) -> None:
        from otel_rl.exporters.accumulate import Stream

        super().__init__(preferred_temporality=DELTA_TEMPORALITY)
        self.sink = sink
        self._stream = Stream()

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        from otel_rl.exporters.translate import translate_sdk

        if self.sink.closed:
            _log.warning("%s: export after shutdown; nothing written", self.sink.name)
            return MetricExportResult.FAILURE
        try:
            translation = translate_sdk(metrics_data)
            if translation.rejected:
                _log.warning("%s: %d points not translated: %s", self.sink.name, translation.rejected,
                             translation.reason)
            self.sink.write_batch(self._stream.admit(translation.batch))
        except Exception as exc:  # never into the SDK's thread
            _log.error("%s: export failed: %s", self.sink.name, exc, exc_info=not isinstance(exc, PermanentError))
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.sink.force_flush()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.sink.shutdown()
