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

**Media** (images, videos, audio) is never reduced: every rank's item is kept, with a ``rank``
attribute.

**Memory is bounded whatever clients send.** A group holds a folded value (a partial sum, the
max, a merged histogram) and a count, not the points: a million late points for one step cost
what a few do. At most ``max_pending`` groups wait at once; past that, the oldest groups of the
run with the most waiting are emitted early (as after a timeout: a rank that comes later
corrects them). A run idle for ``idle_s`` with nothing waiting is forgotten.

Deterministic: time comes from the caller (``now``), so replaying the same input gives the same
output, and :meth:`state` / :meth:`restore` snapshot everything.
"""

from __future__ import annotations

import fnmatch
import operator
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from otel_rl.model.records import HistogramValue, Point, fmean, fsum, merge_histograms

_RUN = operator.attrgetter("run")
OPS = ("mean", "max", "min", "sum", "none")
_SUMS = ("counter", "sum")
_NOT_REDUCED = ("text", "table", "media")
#: Values a group keeps before folding them into one (exact sums come from ``math.fsum`` over
#: up to this many partial sums).
FOLD = 32


def reduce_values(op: str, values: list, count: int | None = None) -> float | HistogramValue:
    """``values`` reduced by ``op``; ``count`` is how many values they stand for (a folded
    partial sum stands for several), for the mean."""
    if isinstance(values[0], HistogramValue):
        return merge_histograms(values) if len(values) > 1 else values[0]
    if op == "mean":
        return fmean(values, count)
    if op == "sum":
        return fsum(values)
    return max(values) if op == "max" else min(values)


class Group:
    """What one (run, metric, kind, attributes, step) holds while it waits, or after it was
    emitted (for corrections): its size does not grow with the points it takes."""

    __slots__ = ("first", "ranks", "values", "count", "time", "temporality", "emitted_at")

    def __init__(self, first: float, temporality: str = "") -> None:
        self.first = first
        self.ranks: set[int] = set()
        self.values: list = []
        self.count = 0
        self.time = 0.0
        self.temporality = temporality
        self.emitted_at = 0.0

    def add(self, p: Point, op: str, rank: bool = True) -> None:
        if rank:
            self.ranks.add(p.rank)
        self.values.append(p.value)
        self.count += 1
        if p.time > self.time:
            self.time = p.time
        if len(self.values) >= FOLD:
            self.values = [reduce_values("sum" if op == "mean" else op, self.values)]

    def value(self, op: str) -> float | HistogramValue:
        return reduce_values(op, self.values, self.count)


class Reducer:
    """Groups points of one (run, metric, attributes, step) across ranks. Not thread-safe: the
    collector calls it from one thread at a time."""

    def __init__(self, rules: Iterable[tuple[str, str]] = (), *, gauge_op: str = "mean",
                 counter_op: str = "sum", timeout_s: float = 5.0, window: int = 20_000,
                 max_pending: int = 200_000, idle_s: float | None = None) -> None:
        self.rules = list(rules) + [("timing/*", "max")]
        self.gauge_op, self.counter_op = gauge_op, counter_op
        self.timeout_s = timeout_s
        self.window = window
        self.max_pending = max_pending
        self.idle_s = idle_s if idle_s is not None else max(600.0, 10 * timeout_s)
        self._ops: dict[tuple[str, str], str] = {}
        self._pending: dict[str, dict[tuple, Group]] = {}  # run -> gauge group -> ranks so far
        self._increments: dict[str, dict[tuple, Group]] = {}  # run -> sum group -> increments so far
        self._emitted: OrderedDict[tuple, Group | None] = OrderedDict()  # None: a summed step
        self._progress: dict[str, dict[int, int]] = {}  # run -> rank -> highest step seen
        self._active: dict[str, float] = {}  # run -> when it last sent a reduced point
        self._waiting = 0
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
        touched: dict[str, dict[int, int]] = {}  # run -> its ranks' progress
        late: dict[tuple, str] = {}  # groups corrected by this call: reduced once, at the end
        ops, pending = self._ops, self._pending
        for p in points:
            run, kind, rank = p.run, p.kind, p.rank
            size = world_size.get(run, 1)
            if size <= 1 or rank < 0 or kind in _NOT_REDUCED:
                if kind == "media" and size > 1 and rank >= 0:  # every rank's item, told apart
                    p = p.replace(attributes=p.attributes + (("rank", str(rank)),))
                ready.append(p)  # texts and samples: every rank's, as logged
                continue
            name, step = p.name, p.step
            op = ops.get((name, kind)) or self.op_for(name, kind)
            progress = touched.get(run)  # _advance, inline (the collector's hottest loop)
            if progress is None:
                progress = touched[run] = self._progress.setdefault(run, {})
            if step > progress.get(rank, -1):
                progress[rank] = step
            if op == "none":
                ready.append(p.replace(attributes=p.attributes + (("rank", str(rank)),), rank=-1))
            elif kind in _SUMS and p.temporality == "delta":
                self._increment(p, op, now, ready)
            else:  # _group and Group.add, inline: the common case, a gauge waiting for its ranks
                key = (run, name, kind, p.attributes, step)
                if key in self._emitted:
                    self._group(p, size, op, now, ready, late)
                    continue
                groups = pending.get(run)
                if groups is None:
                    groups = pending[run] = {}
                group = groups.get(key)
                if group is None:
                    group = groups[key] = Group(now, p.temporality)
                    self._waiting += 1
                group.ranks.add(rank)
                values = group.values
                values.append(p.value)
                group.count += 1
                if p.time > group.time:
                    group.time = p.time
                if len(values) >= FOLD:
                    group.values = [reduce_values("sum" if op == "mean" else op, values)]
                if len(group.ranks) >= size:
                    self._emit_group(groups, key, op, ready)
        return self._after(ready, late, touched, world_size, now)

    def add_columns(self, columns, world_size: dict[str, int], now: float) -> list[Point]:
        """:meth:`add` for the points of a block of gauge columns (one run and rank,
        :mod:`otel_rl.model.columns`), without making an input point: the same output and state."""
        run, rank, names = columns.run, columns.rank, columns.names
        size = world_size.get(run, 1)
        ops = [self._ops.get((name, "gauge")) or self.op_for(name, "gauge") for name in names]
        if size <= 1 or rank < 0 or "none" in ops or not len(columns):
            return self.add(columns.points(), world_size, now)
        progress = self._progress.setdefault(run, {})  # nothing reads it before _after
        if columns.steps[-1] > progress.get(rank, -1):
            progress[rank] = int(columns.steps[-1])
        ready: list[Point] = []
        late: dict[tuple, str] = {}
        emitted, pending = self._emitted, self._pending
        for i, step, value, t in zip(columns.index.tolist(), columns.steps.tolist(), columns.values.tolist(),
                                     columns.times.tolist()):
            name, op = names[i], ops[i]
            key = (run, name, "gauge", (), step)
            if key in emitted:
                self._group(Point(run, name, step, value, t, "gauge", (), rank), size, op, now, ready, late)
                continue
            groups = pending.get(run)  # as in add (the group's update inline)
            if groups is None:
                groups = pending[run] = {}
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group(now, "")
                self._waiting += 1
            group.ranks.add(rank)
            values = group.values
            values.append(value)
            group.count += 1
            if t > group.time:
                group.time = t
            if len(values) >= FOLD:
                group.values = [reduce_values("sum" if op == "mean" else op, values)]
            if len(group.ranks) >= size:
                self._emit_group(groups, key, op, ready)
        return self._after(ready, late, {run: progress}, world_size, now)

    def _after(self, ready: list[Point], late: dict, touched: dict, world_size: dict[str, int],
               now: float) -> list[Point]:
        """The end of an add: the steps corrected by late points, once each; sums due; shedding."""
        for key, op in late.items():
            group = self._emitted.get(key)
            if group is None:  # evicted by newer groups of this same call
                continue
            corrected = self._point(key, op, group)
            # after the value it corrects, also for backends that order a step's values by time
            corrected = corrected.replace(time=max(corrected.time, group.emitted_at + 0.001))
            group.emitted_at = corrected.time
            ready.append(corrected)
        for run in touched:
            self._active[run] = now
            self._flush_increments(run, world_size.get(run, 1), ready)
        if self._waiting > self.max_pending:
            self._shed(ready)
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
            emitted.add(p, op, rank=False)
            late[key] = op
            return
        groups = self._pending.get(p.run)
        if groups is None:
            groups = self._pending[p.run] = {}
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(now, p.temporality)
            self._waiting += 1
        # every value a rank logged at this step counts (a name logged several times at one
        # step); a resent request never gets here (the collector dedupes batch ids)
        group.add(p, op)
        if len(group.ranks) >= size:
            self._emit_group(groups, key, op, ready)

    def _emit_group(self, groups: dict, key: tuple, op: str, ready: list[Point]) -> None:
        group = groups.pop(key)
        self._waiting -= 1
        if not groups:
            del self._pending[key[0]]
        point = self._point(key, op, group)
        ready.append(point)
        group.emitted_at = point.time
        self._remember(key, group)

    @staticmethod
    def _point(key: tuple, op: str, group: Group) -> Point:
        run, name, kind, attributes, step = key
        return Point(run, name, step, group.value(op), group.time, kind, attributes, temporality=group.temporality)

    def _remember(self, key: tuple, group: Group | None) -> None:
        if group is not None:
            group.ranks = set()  # a late point corrects the value whichever rank sends it
        self._emitted[key] = group
        if len(self._emitted) > self.window:
            self._emitted.popitem(last=False)

    # -- counters and sums: increments summed per step once every rank moved past it ----------
    def _increment(self, p: Point, op: str, now: float, ready: list[Point]) -> None:
        key = (p.run, p.name, p.kind, p.attributes, p.step)
        if key in self._emitted:  # its step was emitted already: pass the increment on
            self.late_points += 1
            ready.append(p.replace(rank=-1))
            return
        groups = self._increments.get(p.run)
        if groups is None:
            groups = self._increments[p.run] = {}
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(now, "delta")
            self._waiting += 1
        group.add(p, "sum")

    def _flush_increments(self, run: str, size: int, ready: list[Point], now: float | None = None,
                          everything: bool = False) -> None:
        groups = self._increments.get(run)
        if not groups:
            return
        progress = self._progress.get(run, {})
        done_below = min(progress.values()) if len(progress) >= size else -1
        due = sorted((k for k, g in groups.items()
                      if everything or k[4] < done_below or len(g.ranks) >= size
                      or (now is not None and self._waited(g.first, now))), key=lambda k: k[4])
        timed_out = now is not None and not everything
        for key in due:
            self._emit_increments(groups, key, ready, partial=timed_out and key[4] >= done_below)
        if not groups:
            self._increments.pop(run, None)

    def _emit_increments(self, groups: dict, key: tuple, ready: list[Point], partial: bool) -> None:
        group = groups.pop(key)
        self._waiting -= 1
        if partial:
            self.partial_groups += 1
        self._remember(key, None)
        ready.append(self._point(key, "sum", group))

    def _shed(self, ready: list[Point]) -> None:
        """Over ``max_pending``: emit the oldest groups of the run with the most waiting, as a
        timeout would (never dropped; a rank that sends later corrects them)."""
        while self._waiting > self.max_pending * 0.9:
            counts: dict[str, int] = {}
            for table in (self._pending, self._increments):
                for run, groups in table.items():
                    counts[run] = counts.get(run, 0) + len(groups)
            run = max(counts, key=counts.__getitem__)
            excess = max(1, self._waiting - int(self.max_pending * 0.9))
            gauges, sums = self._pending.get(run, {}), self._increments.get(run, {})
            for key in list(gauges)[:excess]:
                self.partial_groups += 1
                self._emit_group(gauges, key, self.op_for(key[1], key[2]), ready)
            for key in sorted(sums, key=lambda k: k[4])[:max(0, excess - len(gauges))]:
                self._emit_increments(sums, key, ready, partial=True)
            if not sums:
                self._increments.pop(run, None)

    # -- time ------------------------------------------------------------------------------
    def expire(self, now: float, everything: bool = False) -> list[Point]:
        """Emit groups waiting longer than ``timeout_s`` (all of them with ``everything``)."""
        ready: list[Point] = []
        for run in list(self._pending):
            groups = self._pending[run]
            for key in [k for k, g in groups.items() if everything or self._waited(g.first, now)]:
                self.partial_groups += 1
                self._emit_group(groups, key, self.op_for(key[1], key[2]), ready)
                if run not in self._pending:
                    break
        for run in list(self._increments):
            self._flush_increments(run, 1 << 30, ready, now=now, everything=everything)
        for run in [r for r, t in self._active.items() if abs(now - t) >= self.idle_s
                    and r not in self._pending and r not in self._increments]:
            del self._active[run]  # idle: its ranks' progress is forgotten (a rank that comes
            self._progress.pop(run, None)  # back is waited for by the timeout, as at the start)
        ready.sort(key=lambda p: (p.run, p.step))
        return ready

    def restart_clock(self, now: float) -> None:
        """A restart after downtime: every waiting group gets a fresh ``timeout_s`` from ``now``,
        so ranks replaying their spools are not taken for late ranks."""
        for table in (self._pending, self._increments):
            for groups in table.values():
                for group in groups.values():
                    group.first = now
        self._active = dict.fromkeys(self._active, now)

    def _waited(self, first: float, now: float) -> bool:
        """Whether a group that began waiting at ``first`` (wall time, as the ingress records it)
        has waited ``timeout_s`` at ``now``. A clock set back by more than that counts as waited:
        else a step would stay pending for the size of the jump."""
        return abs(now - first) >= self.timeout_s

    def due(self, now: float) -> bool:
        """Whether :meth:`expire` at ``now`` would emit something."""
        waited = self._waited
        return any(waited(g.first, now) for table in (self._pending, self._increments)
                   for groups in table.values() for g in groups.values())

    @property
    def pending(self) -> int:
        return self._waiting

    # -- snapshots -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"version": 2, "pending": self._pending, "emitted": list(self._emitted.items()),
                "increments": self._increments, "progress": self._progress, "active": self._active,
                "late_points": self.late_points, "partial_groups": self.partial_groups}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 2:
            state = _from_points(state, self)
        self._pending = state["pending"]
        self._emitted = OrderedDict(state["emitted"])
        self._increments = state["increments"]
        self._progress = state["progress"]
        self._active = dict(state.get("active", {}))
        self._waiting = sum(len(g) for table in (self._pending, self._increments) for g in table.values())
        self.late_points, self.partial_groups = state["late_points"], state["partial_groups"]


def _from_points(state: dict[str, Any], reducer: Reducer) -> dict[str, Any]:
    """A checkpoint of the collector before groups were folded (points kept per rank)."""
    def group(first: float, points: list[Point], op: str) -> Group:
        g = Group(first, points[0].temporality if points else "")
        for p in points:
            g.add(p, op)
        return g

    pending: dict[str, dict[tuple, Group]] = {}
    for key, (first, ranks) in state["pending"].items():
        pending.setdefault(key[0], {})[key] = group(first, [p for ps in ranks.values() for p in ps],
                                                    reducer.op_for(key[1], key[2]))
    emitted = []
    for key, ranks in state["emitted"]:
        points = [p for ps in ranks.values() for p in ps]
        g = group(0.0, points, reducer.op_for(key[1], key[2])) if points else None
        if g is not None:
            g.ranks = set()
            g.emitted_at = state.get("emitted_at", {}).get(key, 0.0)
        emitted.append((key, g))
    increments = {run: {key: group(first, parts, "sum") for key, (first, parts) in groups.items()}
                  for run, groups in state["increments"].items()}
    return {"pending": pending, "emitted": emitted, "increments": increments, "progress": state["progress"],
            "late_points": state["late_points"], "partial_groups": state["partial_groups"]}
