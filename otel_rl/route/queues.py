"""What waits between admission and a sink: in memory, or durable in a spool."""

from __future__ import annotations

from collections import deque

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
    """Batches in a :class:`~otel_rl.route.spool.Spool`: durable, replayed in order after a restart."""

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

    def done(self, token, state=None) -> None:
        self.spool.ack(token, state)
        self._cursor, self._head = token, None

    def discard_all(self) -> int:
        return 0  # nothing is lost: it stays in the spool for the next start (or `otel-rl replay`)

    def pending_points(self) -> int:
        return sum(len(b) for b in self.spool)
