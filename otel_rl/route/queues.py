"""What waits between admission and a sink: in memory, or durable in a spool."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from otel_rl.model.records import Batch


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

    def done(self, token, state=None) -> None:
        self._items.popleft()

    def discard_all(self) -> int:
        n = sum(len(b) for b in self._items)
        self._items.clear()
        return n


class SpoolQueue:
    """Batches in a :class:`~otel_rl.route.spool.Spool`: durable, replayed in order after a restart.

    The latest batches appended are also kept in memory (up to :attr:`RECENT` of them and
    :attr:`RECENT_BYTES` of their spool records), by their place in the spool: a sink that keeps
    up takes each from there, and the spool is only read (and decoded) for what it holds from
    before, or once a slow sink has fallen further behind."""

    durable = True
    RECENT, RECENT_BYTES = 2, 8 << 20

    def __init__(self, spool) -> None:
        self.spool = spool
        self._cursor = spool.cursor
        self._head = None
        self._recent: OrderedDict[tuple[int, int], tuple[Batch, tuple[int, int], int]] = OrderedDict()
        self._recent_bytes = 0
        self._recent_lock = threading.Lock()  # put runs on the engine's thread, peek on the sink's

    def put(self, batch: Batch) -> bool:
        if not self.spool.append(batch):
            return False
        at, after = self.spool.last_append
        size = after[1] - at[1]
        with self._recent_lock:
            if size <= self.RECENT_BYTES:
                self._recent[at] = (batch, after, size)
                self._recent_bytes += size
            while len(self._recent) > self.RECENT or self._recent_bytes > self.RECENT_BYTES:
                self._recent_bytes -= self._recent.popitem(last=False)[1][2]
        return True

    def peek(self):
        if self._head is None:
            with self._recent_lock:
                hit = self._recent.pop(self._cursor, None)
                self._recent_bytes -= hit[2] if hit is not None else 0
            if hit is not None:
                self._head = hit[:2]
            else:
                self._head = self.spool.read(self._cursor)
        return self._head

    def done(self, token, state=None) -> None:
        self.spool.ack(token, state)
        self._cursor, self._head = token, None

    def discard_all(self) -> int:
        return 0  # nothing is lost: it stays in the spool for the next start (or `otel-rl replay`)

    def pending_points(self) -> int:
        return sum(len(b) for b in self.spool)
