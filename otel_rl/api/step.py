"""The current training step of the current run.

Every measurement is recorded with the step current when it was made (or its own ``step``
attribute); on the wire the step travels as the point attribute ``step`` (OTLP), which the
Prometheus sink strips. Each run (:mod:`otel_rl.api.recording`) has its own step, so runs that
share a process (a sweep in threads, a notebook) do not move each other's steps.
"""

from __future__ import annotations

from otel_rl.api import recording
from otel_rl.model.steps import check_step

_unbound_step: int | None = None  # set_step before any run started: the next run starts there
_current = recording.current


def set_step(step: int) -> None:
    """Set the training step of the current run (see :func:`otel_rl.api.recording.current`): every
    point recorded from now on without its own ``step`` attribute is at this step."""
    set_checked_step(check_step(step))


def set_checked_step(step: int) -> None:
    """:func:`set_step` for a step already validated by :func:`check_step`."""
    global _unbound_step
    recorder = _current()
    if recorder is None:
        _unbound_step = step
    else:
        recorder.set_step(step)


def get_step() -> int | None:
    """The current run's training step, or None before the first :func:`set_step`."""
    recorder = _current()
    return _unbound_step if recorder is None else recorder.step


def take_unbound_step() -> int | None:
    """The step set before any run existed (for the first run started after it)."""
    global _unbound_step
    step, _unbound_step = _unbound_step, None
    return step
