"""Which run is current here: the run whose recorder :func:`otel_rl.api.recording.current`
returns. Runs register their recorder when they start, so the recorder needs no pointer back
up to its run, and the modules that ask (timing, tracing, the package's functions) need not
import the run."""

from __future__ import annotations

import weakref
from typing import Any

from otel_rl.api import recording

_runs: weakref.WeakKeyDictionary[recording.Recorder, Any] = weakref.WeakKeyDictionary()


def register(recorder: recording.Recorder, run: Any) -> None:
    """``run`` owns ``recorder`` (a :class:`~otel_rl.api.run.Pipeline`)."""
    _runs[recorder] = run


def run_of(recorder: recording.Recorder) -> Any:
    """The run that owns ``recorder``, or None."""
    return _runs.get(recorder)


def current_run() -> Any:
    """The run current here (see :func:`otel_rl.api.recording.current`), or None."""
    recorder = recording.current()
    return _runs.get(recorder) if recorder is not None else None
