"""Cross-rank, per-step reduction.

A point from rank r of a run with world size N waits until all N ranks have sent the same
(metric, attributes, step), or ``timeout_s`` passed since the first one arrived; then the
reduced value is emitted once. Ops: ``mean``, ``max``, ``min``, ``sum``, or ``none`` (every
rank kept as its own series with a ``rank`` attribute). Histograms are merged.

Late points (a rank arriving after its step was emitted) are never dropped: the step is
reduced again with the late value and emitted as a correction (backends then hold the
corrected value as the latest at that step), counted in :attr:`Reducer.late_points`. The
memory of emitted steps for corrections is bounded (``window``); a point later than that
starts a new group and is emitted on its own after the timeout, counted the same way.
"""

from __future__ import annotations

import fnmatch
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from otel_rl.exporters.records import HistogramValue, Point

OPS = ("mean", "max", "min", "sum", "none")


def merge_histograms(values: list[HistogramValue]) -> HistogramValue:
    buckets: dict[tuple[float, float], int] = {}
    for h in values:
        for left, right, count in h.buckets:
            buckets[(left, right)] = buckets.get((left, right), 0) + count
    mins = [h.min for h in values if not math.isnan(h.min)]
    maxs = [h.max for h in values if not math.isnan(h.max)]
    return HistogramValue(sum(h.count for h in values), sum(h.sum for h in values),
                          min(mins) if mins else math.nan, max(maxs) if maxs else math.nan,
                          tuple((lo, hi, c) for (lo, hi), c in sorted(buckets.items())))


def reduce_values(op: str, values: list) -> float | HistogramValue:
    if isinstance(values[0], HistogramValue):
        return merge_histograms(values)
    if op == "mean":
        return math.fsum(values) / len(values)
    if op == "sum":
        return math.fsum(values)
    return max(values) if op == "max" else min(values)


class Reducer:
    """Groups points of one (run, metric, attributes, step) across ranks."""

    def __init__(self, rules: Iterable[tuple[str, str]] = (), *, gauge_op: str = "mean",
                 counter_op: str = "sum", timeout_s: float = 5.0, window: int = 100_000) -> None:
        self.rules = list(rules) + [("timing/*", "max")]
        self.gauge_op, self.counter_op = gauge_op, counter_op
        self.timeout_s = timeout_s
        self.window = window
        self._lock = threading.Lock()
        self._pending: dict[tuple, tuple[float, dict[int, Point]]] = {}
        self._origins: dict[tuple, int] = {}  # pending group -> first ingress record it came from
        self._emitted: OrderedDict[tuple, dict[int, Point]] = OrderedDict()
        self._ops: dict[tuple[str, str], str] = {}
        self.late_points = 0
        self.partial_groups = 0

    def op_for(self, name: str, kind: str) -> str:
        op = self._ops.get((name, kind))
        if op is None:
            op = next((o for pattern, o in self.rules if fnmatch.fnmatchcase(name, pattern)),
                      self.counter_op if kind == "counter" else self.gauge_op)
            self._ops[(name, kind)] = op
        return op

    def add(self, points: Iterable[Point], world_size: dict[str, int], origin: int = 0) -> list[Point]:
        """Take points; return those ready to emit now (pass-through, complete or corrected).
        ``origin`` numbers the durable ingress record they came from (see :meth:`oldest_origin`)."""
        ready: list[Point] = []
        now = time.monotonic()
        with self._lock:
            for p in points:
                size = world_size.get(p.run, 1)
                op = self.op_for(p.name, p.kind)
                if size <= 1 or p.rank < 0:
                    ready.append(p)
                elif op == "none":
                    ready.append(Point(p.run, p.name, p.step, p.value, p.time, p.kind,
                                       p.attributes + (("rank", str(p.rank)),)))
                else:
                    self._group(p, size, op, now, ready, origin)
        return ready

    def oldest_origin(self) -> int | None:
        """The oldest ingress record that still has points waiting in a group (None: none waits)."""
        with self._lock:
            return min(self._origins.values(), default=None)

    def _group(self, p: Point, size: int, op: str, now: float, ready: list[Point], origin: int) -> None:
        key = (p.run, p.name, p.kind, p.attributes, p.step)
        emitted = self._emitted.get(key)
        if emitted is not None:  # late: correct the step
            if p.rank not in emitted:
                self.late_points += 1
            emitted[p.rank] = p
            ready.append(self._reduced(key, op, emitted))
            return
        first, ranks = self._pending.setdefault(key, (now, {}))
        self._origins.setdefault(key, origin)
        ranks[p.rank] = p  # a resent rank overwrites: idempotent
        if len(ranks) >= size:
            del self._pending[key]
            self._origins.pop(key, None)
            ready.append(self._reduced(key, op, ranks))
            self._remember(key, ranks)

    def _reduced(self, key: tuple, op: str, ranks: dict[int, Point]) -> Point:
        run, name, kind, attributes, step = key
        points = list(ranks.values())
        value = reduce_values(op, [p.value for p in points])
        return Point(run, name, step, value, max(p.time for p in points), kind, attributes)

    def _remember(self, key: tuple, ranks: dict[int, Point]) -> None:
        self._emitted[key] = ranks
        if len(self._emitted) > self.window:
            self._emitted.popitem(last=False)

    def expire(self, now: float | None = None, everything: bool = False) -> list[Point]:
        """Emit groups waiting longer than ``timeout_s`` (all of them with ``everything``)."""
        now = time.monotonic() if now is None else now
        ready: list[Point] = []
        with self._lock:
            for key in [k for k, (first, _) in self._pending.items()
                        if everything or now - first >= self.timeout_s]:
                _, ranks = self._pending.pop(key)
                self._origins.pop(key, None)
                self.partial_groups += 1
                ready.append(self._reduced(key, self.op_for(key[1], key[2]), ranks))
                self._remember(key, ranks)
        return ready

    @property
    def pending(self) -> int:
        return len(self._pending)
