"""The OpenTelemetry metrics API, recorded as written: every measurement on a tape.

Training code keeps calling the OTel API (``metrics.get_meter(...).create_gauge("charts/SPS")``,
``.set(v)``), but the SDK's aggregation cannot keep what ML backends need (DESIGN.md, "fidelity
traps"): it folds names to lower case, keeps one gauge value per attribute set per collect,
stamps points with the collection time, refuses negative histogram values and merges steps past
its cardinality limit. So otel-rl implements the API itself: each call appends one tuple

    (kind, name, value, step, time_ns, attributes)

to its run's :class:`Recorder` tape, a ``deque`` (an atomic append; no lock, no aggregation on
the training thread). The pipeline drains the tape on its own thread (:func:`points_from`):
every gauge value stays a point of its own, at its step, with the time it was recorded and the
name as written; counter increments of one step add up; histogram samples become a
distribution whose bins fit the data. Nothing of the wire changes: the result is ordinary OTLP
(names keep their case there too).

Several runs in one process: the global meter provider (set once, OTel allows no second) sends
each measurement to the run *current* where it is recorded: the run of the last
:func:`otel_rl.init` in this thread/context, else the last one started in the process
(:func:`current`). A sweep running runs in threads keeps them apart; a notebook that calls
``init`` again simply records into the new run.
"""

from __future__ import annotations

import inspect
import logging
import operator
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from itertools import repeat

from opentelemetry.metrics import CallbackOptions

from otel_rl.model.semconv import NONFINITE_ATTRIBUTE, STEP_ATTRIBUTE
from otel_rl.model.tape import INFO, PARAMS

_log = logging.getLogger(__name__)


_time_ns = time.time_ns
_call = getattr(operator, "call", None)  # Python 3.11+
_sleep = time.sleep


#: What a tape record of each kind is, for messages.
_WHAT = {"g": "a gauge value", "c": "a counter increment", "u": "an up-down increment", "h": "a histogram sample",
         "m": "Logger metrics", "p": "hyperparameters", "r": "samples", "l": "a log record", "t": "a text",
         "hs": "a histogram"}


class Recorder:
    """One run's tape and current step.

    ``put`` never waits on a backend: past ``wake_at`` records it asks the drain thread to run
    now; past ``yield_at`` (a loop recording faster than the drain thread converts, e.g. a tight
    loop with no compute) each record yields the GIL once (``time.sleep(0)``) so the drain thread
    keeps up; past ``throttle_at`` (the drain thread is stuck on a slow spool disk) each record
    pauses 0.5 ms, so the loop slows down instead of memory growing or values being dropped;
    past ``max_records`` (a drain thread that cannot run at all) a record is dropped and
    counted in :attr:`dropped`.
    """

    def __init__(self, *, wake: Callable[[], None] = lambda: None,
                 on_step: Callable[[int], None] = lambda step: None,
                 wake_at: int = 5_000, yield_at: int = 10_000, throttle_at: int = 50_000,
                 max_records: int = 2_000_000) -> None:
        self.tape: deque = deque()
        self.step: int | None = None
        self.closed = False
        self.dropped = 0
        #: Values recorded after the run ended (not recorded; warned once).
        self.after_close = 0
        #: Logs-API records without an event name (not samples: ignored; warned once).
        self.ignored_log_records = 0
        #: Images, videos and audio refused for their size (otel_rl.api.media; warned once per tag).
        self.refused_media = 0
        self.media_step: tuple = (None, 0)  # (step, media bytes recorded at it)
        #: The pid of the process that started this run, when this is a fork of it.
        self.forked_from: int | None = None
        self.observables: list[tuple[str, str, Sequence[Callable]]] = []
        self._deferred: list = []  # (step at span end, settle) of spans not yet placed at a step
        self._wake = wake
        self._on_step = on_step
        self._wake_at = wake_at
        self._yield_at = max(yield_at, wake_at)
        self._throttle_at = max(throttle_at, self._yield_at)
        #: Records that paused because the tape was past ``throttle_at``.
        self.throttled = 0
        self._max = max_records

    def refuse(self, what: str) -> None:
        """A value recorded after this run ended: counted, warned once (one rule for every API)."""
        self.after_close += 1
        if self.after_close != 1:
            return
        if self.forked_from is not None:
            _log.warning("otel-rl: %s recorded in a forked child (pid %d) of the process that runs the run "
                         "(pid %d): not recorded (warned once); record in the parent, or call otel_rl.init() "
                         "in the child for a run of its own (with the parent's run_name and a rank to join "
                         "it through a collector)", what, os.getpid(), self.forked_from)
        else:
            _log.warning("otel-rl: %s after its run ended (shutdown, close or finish): not recorded; "
                         "warned once, counted in its Pipeline's stats()['records_after_close'] (the object "
                         "otel_rl.init returned; Logger.pipeline, SummaryWriter.pipeline); start a new "
                         "run to record more", what)

    def ignore_log_record(self) -> None:
        """A Logs-API record without an event name: not a sample row; counted, said once."""
        self.ignored_log_records += 1
        if self.ignored_log_records == 1:
            _log.warning("otel-rl: a log record without an event_name reached the OTel logs API: otel-rl "
                         "keeps only records with an event_name (rows of the samples table of that name); "
                         "ignored, counted in otel_rl.get_pipeline().stats()['ignored_log_records'] (warned once)")

    def put(self, record: tuple) -> None:
        if self.closed:
            self.refuse(f"{record[1] or 'a value'!r} ({_WHAT.get(record[0], 'a value')})")
            return
        if self._deferred:
            self._settle(record)
        self.put_quiet(record)

    def put_quiet(self, record: tuple) -> None:
        """:meth:`put` without settling deferred span timings (the timings themselves)."""
        tape = self.tape
        if len(tape) >= self._wake_at:
            if len(tape) >= self._max:
                self.dropped += 1
                if self.dropped == 1:
                    _log.error("otel-rl: the recording tape is full (%d records): the drain thread "
                               "has not run; records are dropped and counted", self._max)
                return
            self._wake()
            if len(tape) >= self._yield_at:
                if len(tape) >= self._throttle_at:
                    self.throttled += 1
                    _sleep(0.0005)
                else:
                    _sleep(0)  # hand the GIL to the drain thread
        tape.append(record)

    def set_step(self, step: int) -> None:
        if step != self.step:
            if self._deferred:  # the step is over: timings still waiting belong to it
                self._settle_at(self.step)
            self.step = step
            self._on_step(step)

    # -- span timings: which step they belong to (docs/guide.md, "Timing spans") --------------------
    def defer(self, settle: Callable[[int | None], None]) -> None:
        """A span ended: ``settle(step)`` runs with the step of the next value recorded (when it
        is not lower than the step now), or with the step now when the step changes first."""
        self._deferred.append((self.step, settle))

    def _settle(self, record: tuple) -> None:
        from otel_rl.model.steps import NO_STEP
        from otel_rl.model.tape import record_step

        step = record_step(record) if record[0] != PARAMS else NO_STEP
        self._settle_at(step if step != NO_STEP else None)

    def _settle_at(self, step: int | None) -> None:
        deferred, self._deferred = self._deferred, []
        for at_end, settle in deferred:
            if step is None or (at_end is not None and step < at_end):
                step_for = at_end
            else:
                step_for = step
            try:
                settle(step_for)
            except Exception:
                _log.exception("otel-rl: recording a span timing failed")

    def settle_all(self) -> None:
        """Settle every deferred timing at the step current when its span ended (shutdown)."""
        deferred, self._deferred = self._deferred, []
        for at_end, settle in deferred:
            settle(at_end)

    def drain(self, limit: int | None = None) -> list[tuple]:
        """Take the records recorded so far (at most ``limit``), oldest first."""
        tape = self.tape
        n = len(tape) if limit is None else min(limit, len(tape))
        if _call is not None:  # popleft n times without a Python frame per record
            return list(map(_call, repeat(tape.popleft, n)))
        popleft = tape.popleft
        return [popleft() for _ in range(n)]

    def observe(self, timeout_s: float = 10.0) -> list[tuple]:
        """Run the observable instruments' callbacks (this run's, and the global meter's when this
        is the process's current run): one record per observation. Each callback gets
        ``timeout_millis`` (what is left of ``timeout_s``); a generator callback is sent the options,
        as the OTel SDK does."""
        out = []
        now = _time_ns()
        observables = list(self.observables)
        if _started and _started[-1] is self:
            observables += _global_observables
        deadline = time.monotonic() + timeout_s
        for kind, name, callbacks in observables:
            for callback in callbacks:
                options = CallbackOptions(timeout_millis=max(0.0, deadline - time.monotonic()) * 1e3)
                try:
                    if inspect.isgenerator(callback):
                        observations = list(callback.send(options))
                    else:
                        observations = list(callback(options))
                except Exception:
                    _log.exception("otel-rl: callback of observable %r failed", name)
                    continue
                for obs in observations:
                    out.append((kind, name, obs.value, self.step, now, dict(obs.attributes or {})))
        return out


# -- which run a measurement belongs to ---------------------------------------------------
_context: ContextVar[Recorder | None] = ContextVar("otel_rl_recorder", default=None)
_context_get = _context.get
_started: list[Recorder] = []
_lock = threading.Lock()
#: Observable instruments of the global meter provider: they observe into the current run.
_global_observables: list[tuple[str, str, list]] = []
#: name -> (unit, description, scope) of every instrument that said more than its name.
_instrument_info: dict[str, tuple[str, str, str]] = {}


def instrument_info() -> list[tuple]:
    """Tape records of what instruments created so far said of their metrics (a new run starts
    with them, so instruments created before it keep their unit and description)."""
    now = _time_ns()
    with _lock:
        return [(INFO, name, info, None, now, None) for name, info in _instrument_info.items()]


def _after_fork_in_child() -> None:
    """A fork (vectorized environments, DataLoader workers) has the parent's recorders but no
    drain thread and no helper: what the child records would wait on a tape forever. Each run is
    closed in the child, so a value recorded there is counted and explained once."""
    parent = os.getppid()
    for recorder in list(_started):
        recorder.forked_from = parent
        recorder.closed = True
    _started.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> Recorder | None:
    """The recorder of the run current here: this context's last :func:`activate`, else the
    process's last one still open."""
    recorder = _context.get()
    if recorder is not None and not recorder.closed:
        return recorder
    return _started[-1] if _started else None


def activate(recorder: Recorder, context_only: bool = False) -> None:
    """Make ``recorder`` current in this context and (unless ``context_only``) the process default."""
    _context.set(recorder)
    if not context_only:
        with _lock:
            if recorder in _started:
                _started.remove(recorder)
            _started.append(recorder)


def deactivate(recorder: Recorder) -> None:
    recorder.closed = True
    with _lock:
        while recorder in _started:
            _started.remove(recorder)


__all__ = ["Recorder", "current", "activate", "deactivate", "instrument_info",
           "STEP_ATTRIBUTE", "NONFINITE_ATTRIBUTE"]
