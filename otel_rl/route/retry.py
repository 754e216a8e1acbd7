"""When to try a failed write again: the retry policy and the verdict on an exception."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Optional

from otel_rl.errors import PermanentError, TransientError


@dataclass(frozen=True)
class RetryPolicy:
    """How a worker retries a failed write.

    - ``initial_backoff_s`` / ``max_backoff_s``: exponential backoff bounds (a ``Retry-After``
      from the backend is honored up to ``max_backoff_s * 4``);
    - ``jitter``: +- fraction applied to each wait, so many ranks do not retry in lockstep;
    - ``max_elapsed_s``: give up on a batch after this long (None: keep trying until shutdown;
      with a spool the batch is then kept for the next start);
    - ``unknown_attempts``: attempts for an error that is neither known transient nor known
      permanent, after which it is treated as permanent.
    """

    initial_backoff_s: float = 0.25
    max_backoff_s: float = 8.0
    jitter: float = 0.2
    max_elapsed_s: Optional[float] = None
    unknown_attempts: int = 5

    def validate(self, path: str) -> None:
        from otel_rl.errors import ConfigError
        from otel_rl.settings import positive

        positive(f"{path}.initial_backoff_s", self.initial_backoff_s)
        positive(f"{path}.max_backoff_s", self.max_backoff_s)
        if self.max_elapsed_s is not None:
            positive(f"{path}.max_elapsed_s", self.max_elapsed_s)
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"{path}.jitter: must be in [0, 1), got {self.jitter!r}")
        if self.unknown_attempts < 1:
            raise ConfigError(f"{path}.unknown_attempts: must be >= 1, got {self.unknown_attempts!r}")

    def wait_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        base = min(self.initial_backoff_s * 2 ** max(0, attempt - 1), self.max_backoff_s)
        if retry_after_s is not None:
            base = min(max(base, retry_after_s), self.max_backoff_s * 4)
        return base * (1 + random.uniform(-self.jitter, self.jitter))


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
