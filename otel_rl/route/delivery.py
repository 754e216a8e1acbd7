"""The shared delivery layer: a sink set, one worker thread and one queue per sink.

Retries, queueing, quarantine and drop accounting live here once, not in each sink
(STYLE.md #11); the embedded pipeline and the collector use the same :class:`SinkSet`. A slow
or failing sink delays only its own queue; the training thread and the other sinks never wait.

- **Retry policy** (:class:`RetryPolicy`): exponential backoff with jitter, honoring a
  backend's ``Retry-After``, for as long as ``max_elapsed_s`` allows (default: until shutdown).
  Errors are classified by :func:`~otel_rl.sinks.base.classify`.
- **Poison batches never block a queue.** A batch refused for good is split by run, so one bad
  run cannot take the others down with it; what is still refused is *quarantined*: written to
  ``<spool>/quarantine/`` (replayable with ``otel-rl replay`` once fixed) or, without a spool,
  logged; always counted, with the reason.
- **Threads never die silently.** An unexpected error in a worker is logged with its
  traceback and counted; the worker reports itself broken (:attr:`SinkWorker.broken`, which the
  collector turns into 503 and ``/health``) and keeps going.
- **One deadline** (:class:`Deadline`) is shared by every shutdown step: :meth:`SinkSet.shutdown`
  returns when it runs out, whatever the sinks do; a sink stuck in a backend call is left behind
  on its daemon thread and reported.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from otel_rl.errors import TransientError, redact
from otel_rl.model.records import Batch
from otel_rl.route.deadline import Deadline
from otel_rl.route.queues import MemoryQueue, SpoolQueue
from otel_rl.route.retry import RetryPolicy, Verdict, classify
from otel_rl.sinks.base import SUCCESS, Sink

_log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    """Self-metrics of one sink, in points (a hyperparameter set counts as one)."""

    exported_points: int = 0
    queued_points: int = 0
    dropped_points: int = 0
    quarantined_points: int = 0
    failed_attempts: int = 0
    worker_errors: int = 0
    unstored_points: int = 0  # points its spool could not store (a full disk), held in memory until it can

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def split_by_run(batch: Batch) -> list[Batch]:
    runs = batch.runs()
    if len(runs) <= 1:
        return [batch]
    return [Batch([p for p in batch.points if p.run == run], [p for p in batch.params if p.run == run],
                  dict(batch.meta), batch.info) for run in runs]


class SinkWorker:
    """Delivers batches to one sink in order, on its own thread (see the module docstring)."""

    def __init__(self, sink: Sink, max_queue_points: int, policy: RetryPolicy | None = None, spool=None,
                 hold_unstored: bool = False) -> None:
        self.sink = sink
        #: Batches the spool could not store (a full disk), oldest first, when ``hold_unstored``
        #: (else the error propagates: the helper then does not acknowledge the frame).
        self._unstored: deque[Batch] = deque()
        self._hold_unstored = hold_unstored
        self.policy = policy or RetryPolicy()
        self.stats = SinkStats()
        self.spool = spool
        self._queue = SpoolQueue(spool) if spool is not None else MemoryQueue()
        self._max_queue_points = max_queue_points
        self._cv = threading.Condition()
        self._busy = False
        self._stopping = False
        self._abandon = False  # set when stop() ran out of time: stop retrying
        self._closed = threading.Event()
        self._close_status = SUCCESS
        self._written: tuple | None = None  # (batch, outcome) delivered but not yet checkpointed
        #: An unexpected worker error (a corrupt spool, a full disk at checkpoint time, a bug),
        #: None when healthy; cleared by the next delivery. The collector answers 503 meanwhile.
        self.broken: str | None = None
        self.failing: str | None = None  # why the backend refuses writes now (retried); None: it does not
        self.refusal: str | None = None  # why the first batch refused for good was (None: none was)
        self._warned_disk = False
        self._thread = threading.Thread(target=self._run, name=f"otel-rl-sink-{sink.name}", daemon=True)
        if spool is not None:
            sink.bind_spool(spool.id, (spool.state or {}).get("sink"))
            self.stats.queued_points = self._queue.pending_points()
            if self.stats.queued_points:
                _log.info("%s: replaying %d spooled points from %s", sink.name, self.stats.queued_points, spool.dir)

    def start(self, open_runs: tuple[str, ...] = (), gate: threading.Event | None = None) -> SinkWorker:
        """Start the worker thread: past ``gate`` (SDKs imported), it opens ``open_runs`` first."""
        self._open_runs = tuple(open_runs)
        self._gate = gate
        self._thread.start()
        return self

    @property
    def durable(self) -> bool:
        return self._queue.durable

    @property
    def spooled_bytes(self) -> int:
        """Bytes waiting in the spool (0 for an in-memory queue)."""
        return self.spool.pending_bytes if self.durable else 0

    @property
    def last_emission(self) -> int:
        """The highest ``emission`` number (batch meta) this sink's spool holds or delivered."""
        return self.spool.last_emission if self.spool is not None else -1

    def warn_full_disk(self, exc: OSError) -> None:
        if not self._warned_disk:
            self._warned_disk = True
            _log.error("%s: its spool's disk is full (%s); the batch waits and is offered again as space "
                       "comes back (delivered batches free theirs)", self.sink.name, exc)

    def submit(self, batch: Batch) -> bool:
        """Queue a batch (durably, with a spool); False (counted as dropped) when full or stopped."""
        n = len(batch)
        with self._cv:
            if self._unstored and not self._store_unstored_locked():
                return self._hold_locked(batch)  # behind the batches already waiting: in order
            # in memory, max_queue_points bounds RAM; a spool is bounded by its max_bytes
            full = not self.durable and self.stats.queued_points + n > self._max_queue_points
            try:
                refused = self._stopping or full or not self._queue.put(batch)
            except OSError as exc:
                if not self._hold_unstored:
                    raise
                return self._hold_locked(batch, exc)
            if refused:
                self.stats.dropped_points += n
                _log.error("%s: queue full or stopped (%d points queued, limit %d); %d points not queued "
                           "(total %d)", self.sink.name, self.stats.queued_points,
                           self._max_queue_points, n, self.stats.dropped_points)
                return False
            self.stats.queued_points += n
            self._cv.notify_all()
        return True

    def _hold_locked(self, batch: Batch, exc: OSError | None = None) -> bool:
        n = len(batch)
        if self._stopping or self.stats.unstored_points + n > self._max_queue_points:
            self.stats.dropped_points += n
            _log.error("%s: %d points could not be stored in the spool and %d are already held in memory "
                       "(limit max_queue_points=%d); %d points dropped (total %d)", self.sink.name, n,
                       self.stats.unstored_points, self._max_queue_points, n, self.stats.dropped_points)
            return False
        if not self._unstored:
            _log.error("%s: the spool at %s cannot store a batch (%s); batches are held in memory, in "
                       "order, until it can (at most max_queue_points=%d points)", self.sink.name,
                       self.spool.dir, exc, self._max_queue_points)
        self._unstored.append(batch)
        self.stats.unstored_points += n
        return True

    def _store_unstored_locked(self) -> bool:
        """Store the held batches, oldest first; True when none is left."""
        while self._unstored:
            batch = self._unstored[0]
            try:
                stored = self._queue.put(batch)
            except OSError:
                return False
            if not stored:  # the spool's own bound (max_bytes): it frees up as batches deliver
                return False
            self._unstored.popleft()
            self.stats.unstored_points -= len(batch)
            self.stats.queued_points += len(batch)
            self._cv.notify_all()
            if not self._unstored:
                _log.warning("%s: the spool stores batches again; every held batch is in it", self.sink.name)
        return True

    def store_unstored(self) -> bool:
        """Try again to store what the spool could not (each drain cycle, flush and shutdown)."""
        with self._cv:
            return self._store_unstored_locked() if self._unstored else True

    def drain(self, deadline: Deadline) -> bool:
        """Wait until everything queued so far was delivered or given up; False on timeout."""
        if not self.store_unstored():
            return False
        with self._cv:
            while (self._queue.peek() is not None or self._busy) and self._thread.is_alive():
                left = deadline.left()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))
        return True

    def stop(self, deadline: Deadline, status: str = SUCCESS) -> bool:
        """Deliver what is queued, close the sink with ``status``; returns by ``deadline``."""
        drained = self.drain(deadline) if self._thread.is_alive() else False
        with self._cv:
            if self._unstored:
                lost = self.stats.unstored_points
                self.stats.dropped_points += lost
                self.stats.unstored_points = 0
                self._unstored.clear()
                _log.error("%s: at shutdown the spool still cannot store %d held points; they are "
                           "dropped (counted in dropped_points)", self.sink.name, lost)
            self._stopping = True
            self._close_status = status
            if not drained:
                self._abandon = True
                where = "left in the spool for the next start" if self.durable else "not delivered"
                _log.error("%s: shutdown deadline reached; %d queued points %s", self.sink.name,
                           self.stats.queued_points, where)
            self._cv.notify_all()
        if not self._thread.is_alive():
            self._close()
        elif not self._closed.wait(deadline.left()):
            _log.error("%s: still busy in the backend at the shutdown deadline; left behind", self.sink.name)
            return False
        if self.spool is not None:
            self.spool.close()
        return drained

    def _close(self) -> None:
        if not self._closed.is_set():
            self.sink.shutdown(self._close_status)
            self._closed.set()

    # -- the worker thread -----------------------------------------------------------------
    def _run(self) -> None:
        if getattr(self, "_gate", None) is not None:
            self._gate.wait()
        for run in getattr(self, "_open_runs", ()):
            self.sink.open_run(run)
        try:
            while self._step():
                pass
        finally:
            self._close()

    def _step(self) -> bool:
        """One delivery; False when the worker should end. Never raises."""
        try:
            with self._cv:
                while self._queue.peek() is None and not self._stopping:
                    self._cv.wait()
                head = self._queue.peek()
                if head is None:
                    return False
                if self._abandon:  # stop() ran out of time: in memory that is a loss; spooled, it waits
                    n = self._queue.discard_all()
                    self.stats.queued_points -= n
                    self.stats.dropped_points += n
                    return False
                batch, token = head
                self._busy = True
            if self._written is not None and self._written[0] is batch:
                delivered, undelivered = self._written[1]  # written; only its checkpoint failed
            else:
                delivered, undelivered = self._deliver(batch)
            with self._cv:
                if delivered is None:  # stopping: a spooled batch waits for the next start
                    return False
                self._written = (batch, (delivered, undelivered))
                self._queue.done(token, self._ack_state(batch))
                self._written = None
                self.stats.queued_points -= len(batch)
                self.stats.exported_points += delivered
                self.stats.dropped_points += undelivered
                self.broken = self.failing = None
            return True
        except Exception as exc:  # a corrupt spool, a full disk at ack time, a bug: count, report, go on
            self.stats.worker_errors += 1
            self.broken = f"{type(exc).__name__}: {exc}"
            _log.exception("%s: worker error (the worker keeps running)", self.sink.name)
            time.sleep(min(1.0, self.policy.max_backoff_s))
            return not self._abandon
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _ack_state(self, batch: Batch) -> dict | None:
        if not self.durable:
            return None
        state = {"sink": self.sink.checkpoint_state()}
        emission = batch.meta.get("emission")
        if emission is not None:
            state["emission"] = emission
        return state

    def _deliver(self, batch: Batch) -> tuple[int | None, int]:
        """(points delivered, points quarantined or dropped); (None, 0) when stopping."""
        verdict = self._attempts(batch)
        if verdict is None:
            return len(batch), 0
        if verdict == "stop":  # spooled, it waits for the next start; in memory it is lost (counted)
            return (None, 0) if self.durable else (0, len(batch))
        parts = split_by_run(batch)
        if len(parts) > 1:  # isolate the poison run(s)
            delivered = undelivered = 0
            for part in parts:
                outcome = self._attempts(part)
                if outcome == "stop":
                    _log.error("%s: stopping in the middle of a split batch", self.sink.name)
                    return (None, 0) if self.durable else (delivered, len(batch) - delivered)
                if outcome is None:
                    delivered += len(part)
                else:
                    undelivered += len(part)
                    self._quarantine(part, outcome)
            return delivered, undelivered
        self._quarantine(batch, verdict)
        return 0, len(batch)

    def _attempts(self, batch: Batch):
        """Write ``batch`` until it succeeds (None), is refused for good (the reason), or the
        worker stops ("stop")."""
        started = time.monotonic()
        attempt = unknown = 0
        while True:
            try:
                self.sink.write_batch(batch)
                return None
            except Exception as exc:
                attempt += 1
                self.stats.failed_attempts += 1
                verdict = classify(exc)
                reason = redact(f"{type(exc).__name__}: {exc}")[:500]
                if verdict is Verdict.UNKNOWN:
                    unknown += 1
                    if unknown >= self.policy.unknown_attempts:
                        _log.error("%s: %s, %d times; treated as permanent", self.sink.name, reason, unknown,
                                   exc_info=exc)
                        return reason
                elif verdict is Verdict.PERMANENT:
                    return reason
                repeated = reason == self.failing
                self.failing = reason
                wait = self.policy.wait_s(attempt, getattr(exc, "retry_after_s", None))
                limit = self.policy.max_elapsed_s
                if limit is not None and time.monotonic() - started + wait > limit:
                    return f"{reason} (gave up after {attempt} attempts)"
                if repeated:  # the same error again: one short line, the reason was said
                    _log.warning("%s: still failing (same error); retry %d in %.1f s", self.sink.name, attempt, wait)
                else:
                    _log.warning("%s: write of %d records failed (%s); retry %d in %.1f s", self.sink.name,
                                 len(batch), reason, attempt, wait)
            with self._cv:  # sleep, but wake early when stop() gives up waiting
                if self._cv.wait_for(lambda: self._abandon, timeout=wait):
                    return "stop"

    def _quarantine(self, batch: Batch, reason: str) -> None:
        self.stats.quarantined_points += len(batch)
        self.refusal = self.refusal or reason
        where = "not written"
        if self.spool is not None:
            try:
                where = f"kept in {self.spool.quarantine(batch, reason)}"
            except OSError as exc:
                where = f"could not be kept ({exc})"
        _log.error("%s: %d records of run(s) %s refused for good: %s; %s", self.sink.name, len(batch),
                   ", ".join(repr(r) for r in batch.runs()[:5]), reason, where)


class SinkSet:
    """A worker per sink; what the pipeline and the collector hand admitted batches to."""

    def __init__(self, sinks: list[Sink], max_queue_points: int, policy: RetryPolicy | None = None,
                 spools: dict | None = None, hold_unstored: bool = False) -> None:
        spools = spools or {}
        self.workers = [SinkWorker(s, max_queue_points, policy, spool=spools.get(s.name), hold_unstored=hold_unstored)
                        for s in sinks]

    def start(self, open_runs: tuple[str, ...] = (), gates: dict | None = None) -> SinkSet:
        """Start every worker; each opens ``open_runs`` once its gate (by sink name) is set by
        :meth:`preload`, which runs here first without gates."""
        if gates is None:
            self.preload()
        for worker in self.workers:
            worker.start(open_runs, (gates or {}).get(worker.sink.name))
        return self

    def preload(self, gates: dict | None = None) -> None:
        """Import the sinks' SDKs here, one after another (none first), then open each one's gate."""
        for worker in sorted(self.workers, key=lambda w: w.sink.needs_preload()):
            try:
                worker.sink.preload()
            except Exception as exc:  # noqa: BLE001 - that sink fails its deliveries; the others go on
                _log.error("%s: loading its SDK failed: %s", worker.sink.name, exc)
            if gates:
                gates[worker.sink.name].set()

    def submit(self, batch: Batch) -> bool:
        """Queue on every sink whose spool does not hold this emission yet; False when any refused."""
        return not self.submit_each(batch)

    def submit_each(self, batch: Batch, workers=None, full_disk_refuses: bool = False) -> list[SinkWorker]:
        """Queue on each of ``workers`` (default all); the workers that refused. With
        ``full_disk_refuses`` (a caller that holds the batch durably and offers it again: the
        collector's router), a spool whose disk is full refuses too; else that error is raised."""
        emission = batch.meta.get("emission")
        refused = []
        for worker in workers or self.workers:
            if emission is not None and emission <= worker.last_emission:
                continue  # already spooled before a restart: exactly once
            try:
                taken = worker.submit(batch)
            except OSError as exc:
                if not full_disk_refuses or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                worker.warn_full_disk(exc)
                taken = False
            if not taken:
                refused.append(worker)
        return refused

    def flush(self, deadline: Deadline) -> bool:
        drained = [w.drain(deadline) for w in self.workers]
        # a sink still in a write at the deadline holds its lock (a hung backend): its flush
        # would wait for that write, so only idle sinks flush; the flush returns by the deadline
        flushed = [ok and w.sink.force_flush() for w, ok in zip(self.workers, drained)]
        return all(drained) and all(flushed)

    def shutdown(self, deadline: Deadline, status: str = SUCCESS) -> bool:
        """Drain and close every sink in parallel; returns by ``deadline``."""
        results: dict[str, bool] = {}
        threads = [threading.Thread(target=lambda w=w: results.__setitem__(w.sink.name, w.stop(deadline, status)),
                                    daemon=True) for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(deadline.left() + 0.05)
        return all(results.get(w.sink.name, False) for w in self.workers)

    def broken(self) -> dict[str, str]:
        """Sinks failing right now, with the reason."""
        return {w.sink.name: w.broken for w in self.workers if w.broken}

    def stats(self) -> dict[str, dict[str, int]]:
        return {w.sink.name: w.stats.as_dict() for w in self.workers}


__all__ = ["Deadline", "RetryPolicy", "SinkSet", "SinkStats", "SinkWorker", "TransientError"]
