"""The current training step of the current run.

Every measurement is recorded with the step current when it was made (or its own ``step``
attribute); on the wire the step travels as the point attribute ``step`` (OTLP), which the
Prometheus sink strips. Each run (:mod:`otel_rl.recording`) has its own step, so runs that
share a process (a sweep in threads, a notebook) do not move each other's steps.
"""

from __future__ import annotations


#: The point attribute that carries the training step. Prometheus sinks strip it.
STEP_ATTRIBUTE = "step"
#: See otel_rl.semconv.NONFINITE_ATTRIBUTE (defined here to avoid an import cycle).
NONFINITE_ATTRIBUTE = "otel_rl.nonfinite"
#: Steps are int64 in every backend (TensorBoard events, MLflow, the OTLP int attribute).
MAX_STEP = 2**63 - 1

_unbound_step: int | None = None  # set_step before any run started: the next run starts there
_current = None  # otel_rl.recording.current, bound on first use (recording imports this module)


def _bind_current():
    global _current
    from otel_rl import recording

    _current = recording.current
    return _current


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


def set_step(step: int) -> None:
    """Set the training step of the current run (see :func:`otel_rl.recording.current`): every
    point recorded from now on without its own ``step`` attribute is at this step."""
    set_checked_step(check_step(step))


def set_checked_step(step: int) -> None:
    """:func:`set_step` for a step already validated by :func:`check_step`."""
    global _unbound_step
    recorder = (_current or _bind_current())()
    if recorder is None:
        _unbound_step = step
    else:
        recorder.set_step(step)


def get_step() -> int | None:
    """The current run's training step, or None before the first :func:`set_step`."""
    from otel_rl import recording

    recorder = recording.current()
    return _unbound_step if recorder is None else recorder.step


def take_unbound_step() -> int | None:
    """The step set before any run existed (for the first run started after it)."""
    global _unbound_step
    step, _unbound_step = _unbound_step, None
    return step
