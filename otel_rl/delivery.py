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

from otel_rl.exporters.base import Outcome, RecordExporter
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


class MemoryQueue:
    """Batches in memory (the default): lost if the process dies."""

    durable = False

    def __init__(self) -> None:
        self._items: deque[Batch] = deque()

    def put(self, batch: Batch) -> bool:
        self._items.append(batch)
        return True

    def peek(self):
        return (self._items[0], None) if self._items else None

    def done(self, token) -> None:
        self._items.popleft()

    def discard_all(self) -> int:
        n = sum(len(b) for b in self._items)
        self._items.clear()
        return n


class SpoolQueue:
    """Batches in a :class:`~otel_rl.spool.Spool`: durable, replayed in order after a restart."""

    durable = True

    def __init__(self, spool) -> None:
        self.spool = spool
        self._cursor = spool.cursor
        self._head = None

    def put(self, batch: Batch) -> bool:
        return self.spool.append(batch)

    def peek(self):
        if self._head is None:
            self._head = self.spool.read(self._cursor)
        return self._head

    def done(self, token) -> None:
        self.spool.ack(token)
        self._cursor, self._head = token, None

    def discard_all(self) -> int:
        return 0  # nothing is lost: it stays in the spool for the next start (or `otel-rl replay`)

    def pending_points(self) -> int:
        return sum(len(b) for b in self.spool)


class SinkWorker:
    """Delivers batches to one sink in order, retrying transient failures with exponential backoff.

    A batch the sink refuses for good (:class:`~otel_rl.exporters.base.PermanentError`) is
    dropped and counted. A transient failure is retried, backing off up to ``max_backoff_s``,
    until ``max_retries`` (None: for as long as the sink is down; new batches queue behind it,
    bounded by ``max_queue_points``) or until :meth:`stop` runs out of time.
    """

    def __init__(self, sink: RecordExporter, max_queue_points: int, max_retries: int | None = None,
                 backoff_s: float = 0.25, max_backoff_s: float = 8.0, spool=None) -> None:
        self.sink = sink
        self.stats = SinkStats()
        self._queue = SpoolQueue(spool) if spool is not None else MemoryQueue()
        if spool is not None:
            self.stats.queued_points = self._queue.pending_points()
            if self.stats.queued_points:
                _log.info("%s: replaying %d spooled points from %s", sink.name, self.stats.queued_points, spool.dir)
        self._max_queue_points = max_queue_points
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._cv = threading.Condition()
        self._busy = False
        self._stopping = False
        self._abandon = False  # set when stop() timed out: stop retrying
        self._thread = threading.Thread(target=self._run, name=f"otel-rl-sink-{sink.name}", daemon=True)
        self._thread.start()

    @property
    def durable(self) -> bool:
        return self._queue.durable

    @property
    def spooled_bytes(self) -> int:
        """Bytes waiting in the spool (0 for an in-memory queue)."""
        return self._queue.spool.pending_bytes if self.durable else 0

    def submit(self, batch: Batch) -> bool:
        """Queue a batch (durably, with a spool); False (and counted as dropped) when the queue
        is full or stopped."""
        n = len(batch)
        with self._cv:
            # in memory, max_queue_points bounds RAM; a spool is bounded by its max_bytes
            full = not self.durable and self.stats.queued_points + n > self._max_queue_points
            if self._stopping or full or not self._queue.put(batch):
                self.stats.dropped_points += n
                _log.error("%s: queue full or stopped (%d points queued, limit %d); dropped %d points "
                           "(total dropped %d)", self.sink.name, self.stats.queued_points,
                           self._max_queue_points, n, self.stats.dropped_points)
                return False
            self.stats.queued_points += n
            self._cv.notify_all()
        return True

    def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued so far was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._queue.peek() is not None or self._busy:
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
            if not drained:
                self._abandon = True
                where = "left in the spool for the next start" if self.durable else "not delivered"
                _log.error("%s: shutdown timed out; %d queued points %s", self.sink.name,
                           self.stats.queued_points, where)
            self._cv.notify_all()
        self._thread.join(5.0)
        return drained

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._queue.peek() is None and not self._stopping:
                    self._cv.wait()
                head = self._queue.peek()
                if head is None:
                    return
                if self._abandon:  # stop() timed out: in memory that is a loss; spooled, it waits
                    n = self._queue.discard_all()
                    self.stats.queued_points -= n
                    self.stats.dropped_points += n
                    return
                batch, token = head
                self._busy = True
            outcome = "abandon"
            try:
                outcome = self._deliver(batch)
            finally:
                with self._cv:
                    if not (outcome == "abandon" and self._queue.durable):  # spooled: it waits
                        n = len(batch)
                        self._queue.done(token)
                        self.stats.queued_points -= n
                        if outcome == "ok":
                            self.stats.exported_points += n
                        else:
                            self.stats.dropped_points += n
                    self._busy = False
                    self._cv.notify_all()

    def _deliver(self, batch: Batch) -> str:
        """``"ok"``, ``"drop"`` (refused for good, or out of retries) or ``"abandon"`` (stopping)."""
        delay = self._backoff_s
        attempt = 0
        while True:
            outcome = self.sink.try_write(batch)
            if outcome is Outcome.OK:
                return "ok"
            attempt += 1
            self.stats.failed_attempts += 1
            if outcome is Outcome.DROP or (self._max_retries is not None and attempt > self._max_retries):
                break
            with self._cv:  # sleep, but wake early when stop() gives up waiting
                if self._cv.wait_for(lambda: self._abandon, timeout=delay):
                    if self._queue.durable:
                        _log.warning("%s: stopping; the undelivered batch stays in the spool", self.sink.name)
                        return "abandon"
                    break
            delay = min(delay * 2, self._max_backoff_s)
        _log.error("%s: dropped a batch of %d points after %d attempts", self.sink.name, len(batch), attempt)
        return "drop"
