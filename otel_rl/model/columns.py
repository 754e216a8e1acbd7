"""Gauges of one sender carried as columns, from the collector's decoder to its sinks.

The collector's common request is one trainer's resource of plain gauges, each point a step, a
time and a float (:mod:`.bulk` reads them as numpy columns). Turning every point into a
:class:`~otel_rl.model.records.Point` and looping over them in each sink cost about half the
collector's CPU; carried as columns, a :class:`~otel_rl.model.records.Batch` is admitted,
routed and written by the TensorBoard and Prometheus sinks a block at a time.

A batch that holds columns is the same batch as the points they stand for: ``batch.points``
makes those points (once, on first use) and from then on the list is the batch's content. Only
the stages that read :meth:`~otel_rl.model.records.Batch.gauge_columns` see columns; each of
them gives the same result as its loop over the points (``tests/collector/test_columns.py``
compares them on generated blocks), and falls back to that loop for a block it does not take.

numpy is imported by the decoder that makes the columns (never in a training process).
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

from otel_rl.model.records import Point


class GaugeColumns:
    """The points of one (run, rank), all ``kind="gauge"`` with float values and no attribute
    but the step. ``names[index[i]]`` is point i's metric; the points are ordered by step, and in
    a step by metric, then as sent (the order of a stable sort by step)."""

    __slots__ = ("run", "rank", "names", "index", "steps", "values", "times")

    def __init__(self, run: str, rank: int, names: list[str], index: Any, steps: Any, values: Any,
                 times: Any) -> None:
        self.run, self.rank, self.names = run, rank, names
        self.index, self.steps, self.values, self.times = index, steps, values, times

    def __len__(self) -> int:
        return len(self.steps)

    def points(self) -> list[Point]:
        import numpy as np

        n = len(self.steps)
        names = np.array(self.names, dtype=object)[self.index].tolist() if n else []
        return list(map(Point, repeat(self.run, n), names, self.steps.tolist(), self.values.tolist(),
                        self.times.tolist(), repeat("gauge", n), repeat((), n), repeat(self.rank, n)))

    def grid(self) -> tuple[Any, list[int], Any] | None:
        """The common shape of a block, or None: every step holds the same metrics in the same
        order, none twice, their times within 5 ms of the step's first (what TensorBoard writes
        as one record per step). Returns (each step, the metric indices of a step, the time of
        each step's first point)."""
        n = len(self.steps)
        if not n:
            return None
        width = int(self.steps.searchsorted(self.steps[0], "right"))
        if n % width:
            return None
        index = self.index.reshape(-1, width)
        steps = self.steps.reshape(-1, width)
        times = self.times.reshape(-1, width)
        row = index[0].tolist()
        if (len(set(row)) != width or not (index == index[0]).all() or not (steps == steps[:, :1]).all()
                or not (steps[1:, 0] > steps[:-1, 0]).all() or not (abs(times - times[:, :1]) <= 0.005).all()):
            return None
        return steps[:, 0], row, times[:, 0]

    def last_per_series(self) -> list[Point]:
        """The points a series that takes the highest (step, time) needs, in the block's order:
        per metric its first point (which makes the series, and names it) and, of its points
        with the highest (step, time), the last one sent (the one it ends with). Applied in
        that order they leave every series as all the points would, also where two names
        share a series."""
        import numpy as np

        n = len(self.steps)
        if not n:
            return []
        order = np.lexsort((np.arange(n), self.times, self.steps, self.index))
        index = self.index[order]
        last = order[np.append(index[1:] != index[:-1], True)]
        first = np.unique(self.index, return_index=True)[1]
        return [Point(self.run, self.names[self.index[i]], int(self.steps[i]), float(self.values[i]),
                      float(self.times[i]), "gauge", (), self.rank) for i in np.union1d(first, last).tolist()]
