"""The stateful half of the path, applied once to admitted data, in order.

:mod:`~otel_rl.model.translate` keeps no state, so a request that is refused (503) or
retried leaves no trace. What needs memory of earlier data runs here, after admission:

- **steps**: a point sent without a ``step`` is placed at its run's latest step
  (:meth:`Stream.place`);
- **increments** (:meth:`Stream.deltas`): a CUMULATIVE sum becomes the increment since its
  last value (per sender rank); a per-step CUMULATIVE point that the SDK re-exports unchanged
  every cycle is dropped;
- **running totals** (:meth:`Stream.totals`): increments are added up per series, *after*
  the cross-rank reduction (a collector sums the ranks' increments of one step), so the total
  at a step is the true total of every rank, whichever steps the ranks incremented at. An
  increment that arrives for a step older than the series' latest (a rank later than the
  reduction's timeout, steps logged out of order) changes the totals of that step and of every
  later one: they are emitted again, corrected, in step order (:data:`CORRECTION_WINDOW` steps
  per series at most; counted in :attr:`Stream.corrected_points`). A correction carries no
  ``increment`` (it adds nothing; an OTLP sink does not send it on).

A :class:`Stream` is deterministic: the same admitted batches in the same order give the same
output, and :meth:`Stream.state` / :meth:`Stream.restore` snapshot it, so a collector that
restarts from a checkpoint and replays its ingress produces exactly what it produced before.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from otel_rl.model.lru import LRU, MAX_TRACKED
from otel_rl.model.records import Batch, HistogramValue, Point, fsum
from otel_rl.model.steps import NO_STEP

_RUN, _STEP, _TEMPORALITY = (operator.attrgetter(a) for a in ("run", "step", "temporality"))
_AS_IS = frozenset({"", "delta"})
#: Steps per counter series whose totals a late increment can still correct; an increment older
#: than that corrects the totals of the steps kept (its own step's total is not emitted again).
CORRECTION_WINDOW = 256
#: Counter series that keep such a window (least recently used first out: a series without one
#: adds a late increment to its total without correcting earlier steps). Bounds the memory a
#: client can make the collector hold: 20,000 x 256 steps.
WINDOWED_SERIES = 20_000


class Stream:
    """Step placement, increments and running totals for one stream of admitted batches."""

    def __init__(self, limit: int = MAX_TRACKED) -> None:
        self.latest_step = LRU(limit)  # run -> latest step
        self.previous = LRU(limit)  # cumulative series (and step) -> last value seen
        self.running = LRU(limit)  # (run, name, attributes) -> [running total, highest step]
        #: (run, name, attributes) -> [total before the window, {step: increments}]
        self.windows = LRU(min(limit, WINDOWED_SERIES))
        #: Totals emitted again because a late increment changed them.
        self.corrected_points = 0

    # -- admission -------------------------------------------------------------------------
    def place(self, batch: Batch) -> Batch:
        """Give step-less points their run's latest step (this batch's steps included)."""
        latest = self.latest_step
        columns = batch.gauge_columns()
        if columns is not None:  # one run, every point with a step, in step order
            if len(columns) and columns.steps[-1] > latest.get(columns.run, -1):
                latest.put(columns.run, int(columns.steps[-1]))
            return batch
        points = batch.points
        if not points:
            return batch
        runs = set(map(_RUN, points))
        if len(runs) == 1:  # the common case, without a Python loop per point
            steps = list(map(_STEP, points))
            highest = {runs.pop(): max(steps)}
            stepless = min(steps) == NO_STEP
        else:
            highest = {}
            stepless = False
            for p in points:
                if p.step > highest.get(p.run, -1):
                    highest[p.run] = p.step
                elif p.step == NO_STEP:
                    stepless = True
        for run, step in highest.items():
            if step > latest.get(run, -1):
                latest.put(run, step)
        if stepless:
            batch.points = sorted((p if p.step != NO_STEP else p.replace(step=latest.get(p.run, 0))
                                   for p in batch.points), key=lambda p: (p.run, p.step))
        return batch

    def deltas(self, points: Iterable[Point]) -> list[Point]:
        """Every sum as an increment (``temporality == "delta"``); unchanged re-exports dropped."""
        points = points if isinstance(points, list) else list(points)
        if set(map(_TEMPORALITY, points)) <= _AS_IS:
            return points  # the common case: gauges and DELTA sums
        out = []
        for p in points:
            mode = p.temporality
            if mode in ("", "delta"):
                out.append(p)
                continue
            value = p.value
            if mode == "cumulative_step":
                key = (p.run, p.rank, p.name, p.attributes, p.step)
                seen = self.previous.get(key)
                marker = value.count if isinstance(value, HistogramValue) else value
                if seen == marker:
                    continue  # the SDK re-exported this step unchanged
                self.previous.put(key, marker)
                if isinstance(value, HistogramValue):
                    out.append(p.replace(temporality=""))
                    continue
                out.append(p.replace(value=value - (seen or 0.0), temporality="delta"))
            else:  # "cumulative": a total since the series started (e.g. an upstream SDK counter)
                key = (p.run, p.rank, p.name, p.attributes)
                seen = self.previous.get(key)
                self.previous.put(key, value)
                restarted = seen is None or (p.kind == "counter" and value < seen)
                out.append(p.replace(value=value if restarted else value - seen, temporality="delta"))
        return out

    def totals(self, points: Iterable[Point]) -> list[Point]:
        """Increments added up per series: ``value`` becomes the running total, ``increment``
        the amount this point added."""
        points = points if isinstance(points, list) else list(points)
        if "delta" not in set(map(_TEMPORALITY, points)):
            return points
        out = []
        running = self.running
        late: dict[tuple, tuple[int, Point]] = {}  # series -> (its lowest late step, a point of it)
        for p in points:
            if p.temporality != "delta":
                out.append(p)
                continue
            key = (p.run, p.name, p.attributes)
            series = running.get(key)
            if series is None:
                series = [0.0, -1]
                running.put(key, series)
            window = self.windows.get(key)
            if window is None:  # from here on (a series' start, or its window forgotten)
                window = [series[0], {}]
                self.windows.put(key, window)
            steps, step = window[1], p.step
            series[0] += p.value
            if step >= series[1]:  # in order: the total so far is this step's
                steps[step] = steps.get(step, 0.0) + p.value
                series[1] = step
                total = series[0]
            elif not steps or (len(steps) >= CORRECTION_WINDOW and step < min(steps)):  # older than the window
                window[0] += p.value
                total = series[0]
                late.setdefault(key, (step, p))
            else:
                steps[step] = steps.get(step, 0.0) + p.value
                total = window[0] + fsum([v for s, v in steps.items() if s <= step])
                if key not in late or step < late[key][0]:
                    late[key] = (step, p)
            out.append(p.replace(value=total, increment=p.value, temporality=""))
            if len(steps) > CORRECTION_WINDOW * 5 // 4:
                _trim(window)
        for key, (lowest, p) in late.items():
            out.extend(self._corrections(self.windows.get(key), lowest, p))
        return out

    def _corrections(self, window: list | None, lowest: int, p: Point) -> list[Point]:
        """The true totals of the window's steps from ``lowest`` up to the series' highest, in
        step order."""
        if window is None:
            return []
        base, steps = window[0], window[1]
        total, out = base, []
        for step in sorted(steps):
            total += steps[step]
            if step >= lowest:
                out.append(p.replace(step=step, value=total, increment=None, temporality=""))
        self.corrected_points += len(out)
        return out

    def admit(self, batch: Batch) -> Batch:
        """The whole single-process path: place, increments, totals (no cross-rank reduction)."""
        self.place(batch)
        batch.points = self.totals(self.deltas(batch.points))
        return batch

    # -- snapshots -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"latest_step": list(self.latest_step.items()), "previous": list(self.previous.items()),
                "running": list(self.running.items()), "windows": list(self.windows.items())}

    def restore(self, state: dict[str, Any]) -> None:
        for name in ("latest_step", "previous", "running", "windows"):
            table = getattr(self, name)
            table.clear()
            for key, value in state.get(name, ()):
                table.put(key, value)


def _trim(window: list) -> None:
    """Fold the oldest steps of a counter series' window into its base, keeping
    :data:`CORRECTION_WINDOW`."""
    steps = window[1]
    for step in sorted(steps)[: len(steps) - CORRECTION_WINDOW]:
        window[0] += steps.pop(step)
