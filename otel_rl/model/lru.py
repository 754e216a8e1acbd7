"""A bounded mapping that forgets its least recently used keys."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

#: Bound on each per-series table (least recently used entries go first).
MAX_TRACKED = 100_000


class LRU(OrderedDict):
    """A dict bounded to ``limit`` entries, evicting the least recently written."""

    def __init__(self, limit: int = MAX_TRACKED, items: Iterable = ()) -> None:
        super().__init__(items)
        self.limit = limit

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)

    def trim(self) -> None:
        """Back to ``limit`` entries, after a loop that wrote with ``d[k] = v; move_to_end(k)``."""
        while len(self) > self.limit:
            self.popitem(last=False)
