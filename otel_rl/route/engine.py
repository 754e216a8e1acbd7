"""The engine: tape records -> points -> admission -> sinks.

It is the part of a run that does the work (translation, admission, the backends' own
Python), so it runs where it cannot take the training loop's GIL: in the run's helper process
(:mod:`otel_rl.runtime.link`, the default), or in the training process itself with
``pipeline.helper: false``. Either way it is the same code, fed the same frames::

    (records, step now, release, time now)

``records`` are the tape's tuples (:mod:`otel_rl.api.recording`). The step the loop is still at
may get more values (a histogram's samples, a counter's increments), so its records are held
back and emitted whole with a later frame (at most ``HOLD_MAX_S`` of frame time, or
``HOLD_MAX_RECORDS``), or when a frame says ``release`` (flush, shutdown).

Processing is a function of the engine's state and the frame: the hold rule uses the frame's
time, not a clock. The helper numbers each frame; its batch carries that number as its
``emission``; after the sinks' spools took it, :meth:`Engine.state` (running totals, held
records, the last emission) is checkpointed. A helper restarted after a crash restores that
state and is sent again what it had not acknowledged: sinks skip emissions their spool
already holds (:meth:`otel_rl.route.delivery.SinkSet.submit`), so every value is delivered once.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_rl.errors import ConfigError
from otel_rl.model.codec import load_state
from otel_rl.model.records import Batch
from otel_rl.model.tables import print_table
from otel_rl.model.tape import record_step, translate_records
from otel_rl.route.admit import Stream
from otel_rl.route.deadline import Deadline
from otel_rl.route.delivery import SinkSet
from otel_rl.route.spool import Spool, write_atomic
from otel_rl.sinks import registry
from otel_rl.sinks.base import SUCCESS, Sink, SinkContext

if TYPE_CHECKING:
    from otel_rl.config import Config

_log = logging.getLogger("otel_rl.pipeline")

#: Records of the step still being recorded are held back at most this long (or this many).
HOLD_MAX_S = 60.0
HOLD_MAX_RECORDS = 200_000
STATE_FILE = "engine.state"
#: The file in a sink's spool directory that names its ``otel-rl replay --to`` target.
REPLAY_TARGET = "replay-target"


def build_sinks(config: Config) -> list[Sink]:
    """A sink for every enabled backend that has one."""
    sinks = []
    for name, backend_config in config.enabled().items():
        spec = registry.spec(name)
        if spec.exporter is None:
            continue
        exporter = registry.create(name, backend_config)
        if not isinstance(exporter, Sink):
            raise ConfigError(f"backend {name!r}: {type(exporter).__name__} is not an otel_rl Sink "
                              "(otel_rl.sinks.base.Sink: write/flush/close); plugins must implement it")
        sinks.append(exporter)
    return sinks


def spool_root(config: Config) -> Path | None:
    """Where the run's spools live: ``<spool_dir>[/rank-<n>]``, or None (in-memory queues)."""
    pcfg = config.pipeline
    if not pcfg.spool_dir:
        return None
    return Path(pcfg.spool_dir) / f"rank-{pcfg.rank}" if pcfg.rank is not None else Path(pcfg.spool_dir)


def open_spools(root: Path | None, names: list[str], max_bytes: int, fsync: bool = True,
                parent: int | None = None, lock_wait_s: float = 0.0) -> dict:
    """A durable spool per sink under ``root``, or {} (in-memory queues). ``parent``: the
    training process, when a helper opens them; ``lock_wait_s``: how long to wait for an orphaned
    helper of an earlier process to release them (:func:`~otel_rl.route.spool._lock_dir`)."""
    if root is None:
        return {}
    spools = {}
    try:
        for name in names:
            spools[name] = Spool(Path(root) / name, max_bytes=max_bytes, fsync=fsync, parent=parent,
                                 lock_wait_s=lock_wait_s)
    except BaseException:
        for spool in spools.values():
            spool.close()
        raise
    return spools


class Engine:
    """One run's translation, admission state and sink set."""

    def __init__(self, config: Config, run_name: str, rank: int, resource: dict[str, Any],
                 root: Path | None = None, fsync: bool = True, numbered: bool = False) -> None:
        self.config = config
        self.run_name = run_name
        self.rank = rank
        pcfg = config.pipeline
        sinks = build_sinks(config)
        for sink in sinks:
            sink.bind(SinkContext(dict(resource), pcfg.resume))
        self.root = root
        # a helper waits for an earlier process's orphaned helper (a crash, then a restart) as
        # long as that one may deliver: its shutdown deadline, plus a margin
        spools = open_spools(root, [s.name for s in sinks], pcfg.spool_max_bytes, fsync,
                             parent=os.getppid() if numbered else None,
                             lock_wait_s=pcfg.shutdown_timeout_s + 10 if numbered else 0.0)
        self._fsync = fsync
        for sink in sinks:  # what `otel-rl replay <root>` sends each spool to
            target = sink.replay_target()
            if sink.name in spools and target:
                # rewritten at every start: no fsync (it was never synced), only the private, no-symlink write
                write_atomic(spools[sink.name].dir / REPLAY_TARGET, (target + "\n").encode(), fsync=False)
        self._numbered = numbered
        self._state_path = root / STATE_FILE if (root is not None and numbered) else None
        self._stream = Stream()
        self._held: list[tuple] = []
        self._held_since: float | None = None
        #: The number of the last frame processed (its batch's ``emission``).
        self.emission = max((s.last_emission for s in spools.values()), default=0)
        self.rejected_points = 0
        #: Points admitted (translated and queued on the sinks).
        self.admitted_points = 0
        self.rejected_reasons: dict[str, str] = {}
        self._warned: set[str] = set()
        self.restored = False
        # in this process (not numbered), a batch its spool cannot store (a full disk) waits in
        # memory; the helper (numbered) instead leaves the frame unacknowledged and restarts
        self.sinkset = SinkSet(sinks, pcfg.max_queue_points, config.sources["retry"], spools=spools,
                               hold_unstored=not numbered)
        # the helper (numbered) says it is ready first and imports the SDKs after (seconds; one
        # loader thread, one SDK after another), each sink's thread waiting for its own
        self._sdks = {sink.name: threading.Event() for sink in sinks} if numbered else None
        self.sinkset.start(open_runs=(run_name,), gates=self._sdks)
        #: What instruments said of their metrics (unit, description, scope), sent to the sinks
        #: with the batch it came in, and again once after a restart (a sink remembers it).
        self._info: dict[str, tuple] = {}
        self._info_again = False

    def load_sdks(self) -> None:
        """Import the sinks' SDKs on a loader thread, one after the other, each sink's delivery
        thread starting once its own is in. numpy is imported here first: W&B's lazy import of
        it deadlocked against this thread importing it (unpickling a frame with an array)."""
        if self._sdks is None:
            return
        import numpy  # noqa: F401

        threading.Thread(target=self.sinkset.preload, args=(self._sdks,), name="otel-rl-sdk-loader",
                         daemon=True).start()

    # -- state across a helper restart -----------------------------------------------------
    def restore(self, session: str) -> None:
        """Load the checkpointed state. Of an earlier trainer process (another ``session``), only
        its held records (handed over, not yet emitted) and the emission number carry over; its
        running totals start again, as a restarted process's counters do."""
        if self._state_path is None or not self._state_path.exists():
            return
        try:
            state = load_state(self._state_path.read_bytes())
        except Exception as exc:  # unreadable: the spools' emission numbers still prevent duplicates
            _log.error("otel-rl: unreadable engine state %s (%s); continuing without it", self._state_path, exc)
            return
        self._held = list(state.get("held", []))
        self._held_since = state.get("held_since")
        if state.get("session") == session:
            # the same trainer: go on from the checkpoint exactly. Frames after it are processed
            # again from this state and give the same emissions; sinks skip those they hold.
            self.emission = int(state.get("emission", 0))
            self._stream = state["stream"]
            self._info = dict(state.get("info", {}))
            self._info_again = bool(self._info)
            self.restored = True
        else:
            self.emission = max(self.emission, int(state.get("emission", 0)))

    def checkpoint(self, session: str) -> None:
        """Write the state (atomically: a crash leaves the old one or the new one)."""
        if self._state_path is None:
            return
        doc = {"session": session, "emission": self.emission, "held": self._held,
               "held_since": self._held_since, "stream": self._stream, "info": self._info}
        write_atomic(self._state_path, pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL), self._fsync)

    # -- the path ----------------------------------------------------------------------------
    def process(self, records: list[tuple], step: int | None, release: bool, now: float,
                emission: int | None = None) -> None:
        """Admit one frame of records (see the module doc) and queue the result on every sink."""
        if emission is not None:
            self.emission = emission
        if self._held:
            records = self._held + records
            self._held = []
        if step is not None and not release and records:
            held, rest = [], []
            for r in records:
                (held if record_step(r) == step else rest).append(r)
            since = self._held_since if self._held_since is not None else now
            if held and len(held) < HOLD_MAX_RECORDS and now - since < HOLD_MAX_S:
                self._held = held
                self._held_since = since
                records = rest
            else:
                self._held_since = None
        else:
            self._held_since = None
        if not records:
            if not self._numbered:
                for worker in self.sinkset.workers:
                    worker.store_unstored()
            return
        translation = translate_records(records, self.run_name, self.rank)
        if translation.rejected or translation.reasons:
            self._report(translation)
        batch = translation.batch
        info = batch.info
        if info and len(self._info) < 10_000:
            self._info.update(info)
        if self._info_again and batch.points:
            info, self._info_again = {**self._info, **info}, False
        batch = self._stream.admit(Batch(batch.points, batch.params,
                                         {"emission": emission} if emission is not None else {}, info))
        print_rows = self.config.sources["samples"].print_rows
        if print_rows:
            for p in batch.points:
                if p.kind == "table":
                    print_table(p.run, p.name, p.step, p.value, print_rows)
        if batch:
            self.admitted_points += len(batch.points)
            self.sinkset.submit(batch)

    def _report(self, translation) -> None:
        self.rejected_points += translation.rejected
        for kind, reason in translation.reasons.items():
            if kind not in self._warned and len(self._warned) < 10_000:
                self._warned.add(kind)
                self.rejected_reasons.setdefault(kind, reason)
                _log.warning("otel-rl: %s (reported once; counted in "
                             "otel_rl.get_pipeline().stats()['rejected_points'])", reason)

    @property
    def held(self) -> int:
        return len(self._held)

    # -- the rest ------------------------------------------------------------------------------
    @property
    def sinks(self) -> list[Sink]:
        return [w.sink for w in self.sinkset.workers]

    def describe(self) -> list[str]:
        """Where the data goes, one line per sink."""
        lines = []
        for sink in self.sinks:
            where = sink.location(self.run_name)
            lines.append(f"{sink.name}: {where}" if where is not None else sink.describe(self.run_name))
        return lines

    def flush(self, deadline: Deadline) -> bool:
        return self.sinkset.flush(deadline)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = self.sinkset.stats()
        out["rejected_points"] = self.rejected_points
        return out

    def shutdown(self, deadline: Deadline, status: str = SUCCESS) -> bool:
        """Deliver and close every sink; False when anything was not delivered, a batch a sink
        refused for good included (it is kept, and the log says how to send it once fixed)."""
        delivered = self.sinkset.shutdown(deadline, status)
        refused = [w for w in self.sinkset.workers if w.stats.quarantined_points]
        for worker in refused:
            _log.error("otel-rl: %s refused %d points for good (%s); %s", worker.sink.name,
                       worker.stats.quarantined_points, worker.refusal, self._resend_hint(worker))
        return delivered and not refused

    def _resend_hint(self, worker) -> str:
        if worker.spool is None:
            return "they were not kept (no spool: set spool_dir to keep what a backend refuses)"
        where = worker.spool.dir / "quarantine"
        target = worker.sink.replay_target()
        to = f" --to {target}" if target else " --to TARGET"
        return f"they are kept in {where}; once fixed, send them with: otel-rl replay {worker.spool.dir}{to}"
