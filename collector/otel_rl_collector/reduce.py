"""Cross-rank, per-step reduction.

**Gauges and histograms.** A point from rank r of a run with world size N waits until all N
ranks have sent the same (metric, attributes, step), or ``timeout_s`` passed since the first
one arrived; then the reduced value is emitted once. Every value counts: a name a rank logged
several times at one step adds each value (``mean`` is the mean of all of them). Ops: ``mean``,
``max``, ``min``, ``sum``, or ``none`` (every rank kept as its own series with a ``rank`` attribute). Histograms are
merged. A late point (its step was already emitted) is never dropped: the step is reduced again
and emitted as a correction, counted in :attr:`Reducer.late_points`. The memory of emitted
steps is bounded (``window``).

**Counters and sums** arrive as increments (see :mod:`otel_rl.route.admit`). Ranks
increment at different steps (an episode ends when it ends), so a rank that sent nothing at a
step is not missing, it added zero. The increments of one step are summed across ranks once
every rank sent one, or every rank of the run has moved past that step (it sent any point at a
later step), or after ``timeout_s``; the running total is computed after that, over the run. A rank's increment that
arrives after its step was emitted is passed on as it is, so the total is never short.

Deterministic: time comes from the caller (``now``), so replaying the same input gives the same
output, and :meth:`state` / :meth:`restore` snapshot everything.
"""

from __future__ import annotations

import fnmatch
import math
import operator
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from otel_rl.model.records import HistogramValue, Point, merge_histograms

_RUN = operator.attrgetter("run")
OPS = ("mean", "max", "min", "sum", "none")
_SUMS = ("counter", "sum")
_NOT_REDUCED = ("text", "table")


def reduce_values(op: str, values: list) -> float | HistogramValue:
    if isinstance(values[0], HistogramValue):
        return merge_histograms(values)
    if op == "mean":
        return math.fsum(values) / len(values)
    if op == "sum":
        return math.fsum(values)
    return max(values) if op == "max" else min(values)


class Reducer:
    """Groups points of one (run, metric, attributes, step) across ranks. Not thread-safe: the
    collector calls it from one thread at a time."""

    def __init__(self, rules: Iterable[tuple[str, str]] = (), *, gauge_op: str = "mean",
                 counter_op: str = "sum", timeout_s: float = 5.0, window: int = 20_000) -> None:
        self.rules = list(rules) + [("timing/*", "max")]
        self.gauge_op, self.counter_op = gauge_op, counter_op
        self.timeout_s = timeout_s
        self.window = window
        self._ops: dict[tuple[str, str], str] = {}
        self._pending: dict[tuple, tuple[float, dict[int, list[Point]]]] = {}  # group -> (first seen, ranks)
        self._emitted: OrderedDict[tuple, dict[int, list[Point]]] = OrderedDict()
        self._emitted_at: dict[tuple, float] = {}  # group -> time of its latest emission
        self._increments: dict[str, dict[tuple, tuple[float, list[Point]]]] = {}  # run -> group -> ...
        self._progress: dict[str, dict[int, int]] = {}  # run -> rank -> highest step seen
        self.late_points = 0
        self.partial_groups = 0

    def op_for(self, name: str, kind: str) -> str:
        op = self._ops.get((name, kind))
        if op is None:
            op = next((o for pattern, o in self.rules if fnmatch.fnmatchcase(name, pattern)),
                      self.counter_op if kind in _SUMS else self.gauge_op)
            if len(self._ops) >= 100_000:  # a cache: bounded against clients inventing names
                self._ops.clear()
            self._ops[(name, kind)] = op
        return op

    def add(self, points: Iterable[Point], world_size: dict[str, int], now: float) -> list[Point]:
        """Take points; return those ready to emit now (pass-through, complete or corrected)."""
        points = points if isinstance(points, list) else list(points)
        if all(world_size.get(run, 1) <= 1 for run in set(map(_RUN, points))):
            return list(points)  # no run here is reduced across ranks: everything passes through
        ready: list[Point] = []
        touched: set[str] = set()
        late: dict[tuple, str] = {}  # groups corrected by this call: reduced once, at the end
        for p in points:
            size = world_size.get(p.run, 1)
            if size <= 1 or p.rank < 0 or p.kind in _NOT_REDUCED:
                ready.append(p)  # texts and samples: every rank's, as logged
                continue
            op = self.op_for(p.name, p.kind)
            self._advance(p.run, p.rank, p.step)
            touched.add(p.run)
            if op == "none":
                ready.append(p.replace(attributes=p.attributes + (("rank", str(p.rank)),), rank=-1))
            elif p.kind in _SUMS and p.temporality == "delta":
                self._increment(p, now, ready)
            else:
                self._group(p, size, op, now, ready, late)
        for key, op in late.items():
            emitted = self._emitted.get(key)
            if emitted is None:  # evicted by newer groups of this same call
                continue
            before = self._emitted_at.get(key, 0.0)
            corrected = self._reduced(key, op, emitted)
            # after the value it corrects, also for backends that order a step's values by time
            corrected = corrected.replace(time=max(corrected.time, before + 0.001))
            self._emitted_at[key] = corrected.time
            ready.append(corrected)
        for run in touched:
            self._flush_increments(run, world_size.get(run, 1), ready)
        return ready

    def _advance(self, run: str, rank: int, step: int) -> None:
        progress = self._progress.setdefault(run, {})
        if step > progress.get(rank, -1):
            progress[rank] = step

    # -- gauges and histograms ---------------------------------------------------------------
    def _group(self, p: Point, size: int, op: str, now: float, ready: list[Point], late: dict) -> None:
        key = (p.run, p.name, p.kind, p.attributes, p.step)
        emitted = self._emitted.get(key)
        if emitted is not None:  # late: the step is corrected once this call's points are in
            self.late_points += 1
            emitted.setdefault(p.rank, []).append(p)
            late[key] = op
            return
        first, ranks = self._pending.setdefault(key, (now, {}))
        # every value a rank logged at this step counts (a name logged several times at one
        # step); a resent request never gets here (the collector dedupes batch ids)
        ranks.setdefault(p.rank, []).append(p)
        if len(ranks) >= size:
            del self._pending[key]
            point = self._reduced(key, op, ranks)
            ready.append(point)
            self._remember(key, ranks, point.time)

    def _reduced(self, key: tuple, op: str, ranks: dict[int, list[Point]]) -> Point:
        run, name, kind, attributes, step = key
        points = [p for values in ranks.values() for p in values]
        value = reduce_values(op, [p.value for p in points])
        return Point(run, name, step, value, max(p.time for p in points), kind, attributes,
                     temporality=points[0].temporality)

    def _remember(self, key: tuple, ranks: dict[int, list[Point]], at: float | None = None) -> None:
        self._emitted[key] = ranks
        if at is not None:
            self._emitted_at[key] = at
        if len(self._emitted) > self.window:
            old, _ = self._emitted.popitem(last=False)
            self._emitted_at.pop(old, None)

    # -- counters and sums: increments summed per step once every rank moved past it ----------
    def _increment(self, p: Point, now: float, ready: list[Point]) -> None:
        key = (p.run, p.name, p.kind, p.attributes, p.step)
        if key in self._emitted:  # its step was emitted already: pass the increment on
            self.late_points += 1
            ready.append(p.replace(rank=-1))
            return
        groups = self._increments.setdefault(p.run, {})
        first, parts = groups.setdefault(key, (now, []))
        parts.append(p)

    def _flush_increments(self, run: str, size: int, ready: list[Point], now: float | None = None,
                          everything: bool = False) -> None:
        groups = self._increments.get(run)
        if not groups:
            return
        progress = self._progress.get(run, {})
        done_below = min(progress.values()) if len(progress) >= size else -1
        due = sorted((k for k, (first, parts) in groups.items()
                      if everything or k[4] < done_below or len({p.rank for p in parts}) >= size
                      or (now is not None and self._waited(first, now))), key=lambda k: k[4])
        for key in due:
            _, parts = groups.pop(key)
            if now is not None and not everything and key[4] >= done_below:
                self.partial_groups += 1
            self._remember(key, {})
            value = math.fsum(p.value for p in parts)
            ready.append(Point(key[0], key[1], key[4], value, max(p.time for p in parts), key[2], key[3],
                               temporality="delta"))
        if not groups:
            del self._increments[run]

    # -- time ------------------------------------------------------------------------------
    def expire(self, now: float, everything: bool = False) -> list[Point]:
        """Emit groups waiting longer than ``timeout_s`` (all of them with ``everything``)."""
        ready: list[Point] = []
        for key in [k for k, (first, _) in self._pending.items()
                    if everything or self._waited(first, now)]:
            _, ranks = self._pending.pop(key)
            self.partial_groups += 1
            point = self._reduced(key, self.op_for(key[1], key[2]), ranks)
            ready.append(point)
            self._remember(key, ranks, point.time)
        for run in list(self._increments):
            self._flush_increments(run, 1 << 30, ready, now=now, everything=everything)
        ready.sort(key=lambda p: (p.run, p.step))
        return ready

    def restart_clock(self, now: float) -> None:
        """A restart after downtime: every waiting group gets a fresh ``timeout_s`` from ``now``,
        so ranks replaying their spools are not taken for late ranks."""
        self._pending = {k: (now, ranks) for k, (_, ranks) in self._pending.items()}
        self._increments = {run: {k: (now, parts) for k, (_, parts) in groups.items()}
                            for run, groups in self._increments.items()}

    def _waited(self, first: float, now: float) -> bool:
        """Whether a group that began waiting at ``first`` (wall time, as the ingress records it)
        has waited ``timeout_s`` at ``now``. A clock set back by more than that counts as waited:
        else a step would stay pending for the size of the jump."""
        return abs(now - first) >= self.timeout_s

    def due(self, now: float) -> bool:
        """Whether :meth:`expire` at ``now`` would emit something."""
        waited = self._waited
        return (any(waited(first, now) for first, _ in self._pending.values())
                or any(waited(first, now) for groups in self._increments.values() for first, _ in groups.values()))

    @property
    def pending(self) -> int:
        return len(self._pending) + sum(len(g) for g in self._increments.values())

    # -- snapshots -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"pending": self._pending, "emitted": list(self._emitted.items()), "emitted_at": self._emitted_at,
                "increments": self._increments, "progress": self._progress,
                "late_points": self.late_points, "partial_groups": self.partial_groups}

    def restore(self, state: dict[str, Any]) -> None:
        self._pending = dict(state["pending"])
        self._emitted = OrderedDict(state["emitted"])
        self._emitted_at = dict(state.get("emitted_at", {}))
        self._increments = state["increments"]
        self._progress = state["progress"]
        self.late_points, self.partial_groups = state["late_points"], state["partial_groups"]
