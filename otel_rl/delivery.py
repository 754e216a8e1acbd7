"""The shared delivery layer: one bounded queue and one thread per sink.

Retries, queueing and drop accounting live here once, not in each exporter
(STYLE.md #11). A slow or failing sink delays only its own queue; the training
thread and the other sinks never wait for it. When a queue is full the new
batch is dropped, counted in :attr:`SinkStats.dropped_points` and logged:
never silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from opentelemetry.sdk.metrics.export import MetricExportResult

from otel_rl.exporters.base import RecordExporter
from otel_rl.exporters.records import Batch

_log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    """Self-metrics of one sink, in points (a hyperparameter set counts as one)."""

    exported_points: int = 0
    queued_points: int = 0
    dropped_points: int = 0
    failed_attempts: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SinkWorker:
    """Delivers batches to one sink in order, retrying failures with exponential backoff."""

    def __init__(self, sink: RecordExporter, max_queue_points: int, max_retries: int = 5,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0) -> None:
        self.sink = sink
        self.stats = SinkStats()
        self._max_queue_points = max_queue_points
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._queue: deque[Batch] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"otel-rl-sink-{sink.name}", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> bool:
        """Queue a batch; False (and counted as dropped) when the queue is full or stopped."""
        n = len(batch)
        with self._cv:
            if self._stopping or self.stats.queued_points + n > self._max_queue_points:
                self.stats.dropped_points += n
                _log.error("%s: queue full or stopped (%d points queued, limit %d); dropped %d points "
                           "(total dropped %d)", self.sink.name, self.stats.queued_points,
                           self._max_queue_points, n, self.stats.dropped_points)
                return False
            self._queue.append(batch)
            self.stats.queued_points += n
            self._cv.notify_all()
        return True

    def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued so far was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def stop(self, timeout_s: float) -> bool:
        """Deliver what is queued (up to ``timeout_s``), then end the thread."""
        drained = self.drain(timeout_s)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(max(0.1, timeout_s))
        if not drained:
            with self._cv:
                lost = self.stats.queued_points
                self.stats.dropped_points += lost
            _log.error("%s: shutdown timed out; %d queued points not delivered", self.sink.name, lost)
        return drained

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = self._queue.popleft()
                self._busy = True
            try:
                delivered = self._deliver(batch)
            finally:
                with self._cv:
                    n = len(batch)
                    self.stats.queued_points -= n
                    if delivered:
                        self.stats.exported_points += n
                    else:
                        self.stats.dropped_points += n
                    self._busy = False
                    self._cv.notify_all()

    def _deliver(self, batch: Batch) -> bool:
        delay = self._backoff_s
        for attempt in range(self._max_retries + 1):
            if self.sink.export_batch(batch) is MetricExportResult.SUCCESS:
                return True
            self.stats.failed_attempts += 1
            if self.sink.closed or attempt == self._max_retries:
                break
            time.sleep(delay)
            delay = min(delay * 2, self._max_backoff_s)
        _log.error("%s: giving up on a batch of %d points after %d attempts", self.sink.name,
                   len(batch), attempt + 1)
        return False
