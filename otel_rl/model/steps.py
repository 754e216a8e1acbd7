"""Training steps as every stage reads them: int64, non-negative, or :data:`NO_STEP`."""

from __future__ import annotations

from typing import Any

from otel_rl.model.semconv import MAX_STEP

#: The step of a point that carried none (placed at its run's latest step after admission).
NO_STEP = -1


def check_step(step: object) -> int:
    """Return ``step`` as an int, or raise ValueError/TypeError naming the bad value."""
    if type(step) is int and 0 <= step <= MAX_STEP:  # the hot path: one check
        return step
    if isinstance(step, bool) or not isinstance(step, int):
        index = getattr(step, "__index__", None)
        if index is None or isinstance(step, bool):
            raise TypeError(f"step must be a non-negative int, got {step!r} ({type(step).__name__})")
        step = index()
    if step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if step > MAX_STEP:
        raise ValueError(f"step must fit in int64 (<= {MAX_STEP}), got {step!r}")
    return step


def as_step(raw: Any) -> int | None:
    """A non-negative int64 step from an attribute value, or None."""
    step = None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        step = raw
    elif isinstance(raw, float) and raw.is_integer():
        step = int(raw)
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 20:
        step = int(raw)
    return step if step is not None and 0 <= step <= MAX_STEP else None
