"""One deadline shared by every step of a flush or shutdown (STYLE.md #13)."""

from __future__ import annotations

import time


class Deadline:
    """A point in time that every step of a shutdown shares."""

    def __init__(self, timeout_s: float) -> None:
        self.at = time.monotonic() + max(0.0, timeout_s)

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at
