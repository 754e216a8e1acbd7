"""The internal per-step records that every sink consumes.

Every source (the in-process SDK's ``MetricsData``, later the collector's OTLP
protobuf) is translated into these, and nothing else knows about backends.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional, Union


def fsum(values: Iterable[float]) -> float:
    """``math.fsum``, with IEEE arithmetic's answer where it raises (values come from clients):
    +inf and -inf give NaN; finite values whose sum passes float's range give +-inf, and a sum
    back within range after an intermediate overflow is still exact."""
    values = values if isinstance(values, list) else list(values)
    try:
        return math.fsum(values)
    except ValueError:  # +inf and -inf
        return math.nan
    except OverflowError:  # halving is exact (but for subnormals); doubling back may overflow: +-inf
        return math.fsum([v * 0.5 for v in values]) * 2.0


def fmean(values: list[float], count: int | None = None) -> float:
    """The mean of ``values`` (standing for ``count`` values: a folded partial sum stands for
    several), finite whenever they are, even where their sum is past float's range."""
    count = count or len(values)
    mean = fsum(values) / count
    if math.isinf(mean) and all(map(math.isfinite, values)):
        mean = fsum([v / count for v in values])
    return mean


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """A distribution at one step.

    ``buckets`` are ``(left, right, count)`` in increasing order; a bucket
    covers ``(left, right]``. The outer edges may be ``-inf``/``+inf`` (OTel
    explicit buckets are open-ended): :meth:`finite_buckets` clamps them to
    min/max. ``min``/``max`` are NaN when the source did not record them.
    """

    count: int
    sum: float
    min: float
    max: float
    buckets: tuple[tuple[float, float, int], ...]

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def scalars(self) -> dict[str, float]:
        """The scalar view used by backends without a histogram type."""
        return {"count": float(self.count), "sum": self.sum, "mean": self.mean,
                "min": self.min, "max": self.max}

    def finite_buckets(self) -> list[tuple[float, float, int]]:
        """Buckets with open outer edges clamped to min/max; empty open-ended buckets dropped."""
        lo = self.min if math.isfinite(self.min) else None
        hi = self.max if math.isfinite(self.max) else None
        out = []
        for left, right, count in self.buckets:
            if not (math.isfinite(left) and math.isfinite(right)):
                if not count:
                    continue
                if not math.isfinite(left):
                    left = min(lo, right) if lo is not None else right
                if not math.isfinite(right):
                    right = max(hi, left) if hi is not None else left
            out.append((left, right, count))
        return out


def merge_histograms(values: list[HistogramValue]) -> HistogramValue:
    """One distribution from several. With one bucket layout, counts add up per bucket; with
    different layouts (bins fitted to each sender's data) the counts are re-binned into equal
    bins from the overall min to max, each source bucket counted in the bin of its midpoint:
    count, sum, min and max stay exact, the shape is approximate within one source bucket."""
    mins = [h.min for h in values if not math.isnan(h.min)]
    maxs = [h.max for h in values if not math.isnan(h.max)]
    count, total = sum(h.count for h in values), fsum([h.sum for h in values])
    lo, hi = (min(mins) if mins else math.nan), (max(maxs) if maxs else math.nan)
    layouts = {tuple((left, right) for left, right, _ in h.buckets) for h in values}
    if len(layouts) == 1 or not (mins and maxs):
        buckets: dict[tuple[float, float], int] = {}
        for h in values:
            for left, right, c in h.buckets:
                buckets[(left, right)] = buckets.get((left, right), 0) + c
        return HistogramValue(count, total, lo, hi, tuple((lo_, hi_, c) for (lo_, hi_), c in sorted(buckets.items())))
    if lo == hi:
        return HistogramValue(count, total, lo, hi, ((lo, hi, count),))
    k = 30
    width = (hi - lo) / k
    counts = [0] * k
    for h in values:
        for left, right, c in h.finite_buckets():
            middle = (left + right) / 2
            counts[min(max(int((middle - lo) / width), 0), k - 1)] += c
    return HistogramValue(count, total, lo, hi, tuple(
        (lo + i * width, hi if i == k - 1 else lo + (i + 1) * width, c) for i, c in enumerate(counts)))


def scalar_items(value: float | HistogramValue) -> list[tuple[str, float]]:
    """The scalar view of a value: ``[("", v)]``, or for a histogram
    ``[("count", .), ("sum", .), ("mean", .), ("min", .), ("max", .)]`` without unrecorded min/max."""
    if not isinstance(value, HistogramValue):
        return [("", value)]
    return [(k, v) for k, v in value.scalars().items() if not (k in ("min", "max") and math.isnan(v))]


@dataclass(frozen=True, slots=True)
class Table:
    """Rows of samples logged together at one step (``otel_rl.log_samples``): ``columns`` in
    first-seen order, each row a tuple of cells (str, int, float, bool or None) aligned with them."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def markdown(self) -> str:
        """A markdown table (TensorBoard's text plugin renders it): ``|`` escaped, newlines as
        ``<br>``. Cells are untrusted text (a model's generations): HTML and markdown images and
        links are shown as text, never rendered (an ``<img>`` or ``![](url)`` in a sample made
        every viewer of the Text tab fetch that URL)."""
        def cell(value: Any) -> str:
            text = "" if value is None else str(value)
            text = text.replace("\\", "\\\\").replace("|", "\\|").replace("&", "&amp;").replace("<", "&lt;")
            text = text.replace(">", "&gt;").replace("[", "\\[").replace("]", "\\]").replace("`", "\\`")
            return text.replace("\r", "").replace("\n", "<br>")

        lines = ["| " + " | ".join(cell(c) for c in self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows)
        return "\n".join(lines)


# Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which made
# constructing a Point 5x slower (2.7 µs for its 10 fields, measured), and every value is
# constructed at least twice on its way. Points are still treated as immutable (``replace``),
# and hash by value as before.
@dataclass(eq=True, unsafe_hash=True, slots=True)
class Point:
    """One value of one series at one training step.

    ``name`` is the OTel metric name; ``attributes`` are the point attributes
    other than the step, sorted, as ``(key, str(value))`` pairs. ``kind`` is
    ``"gauge"``, ``"counter"`` (monotonic sum: a running total), ``"sum"`` (non-monotonic
    sum: a running total that may go down), ``"histogram"``, ``"text"`` (``value`` is a
    string: ``SummaryWriter.add_text``) or ``"table"`` (``value`` is a :class:`Table`: samples
    logged together); ``time`` is Unix seconds.
    """

    run: str
    name: str
    step: int
    value: Union[float, HistogramValue, str, Table]
    time: float
    kind: str = "gauge"
    attributes: tuple[tuple[str, str], ...] = ()
    #: The sender's rank (resource attribute ``otel_rl.rank``), -1 when not set.
    rank: int = -1
    #: Sums only. Before accumulation: how ``value`` is meant (``"delta"``: an increment;
    #: ``"cumulative"``: a total since the series started; ``"cumulative_step"``: a per-step
    #: total the SDK re-exports every cycle). After accumulation ``""``: ``value`` is the running
    #: total shown by backends and ``increment`` what this point added to it.
    temporality: str = ""
    increment: Optional[float] = None

    def replace(self, **changes: Any) -> Point:
        row = list(POINT_FIELDS(self))
        for key, value in changes.items():
            row[_POINT_INDEX[key]] = value
        return Point(*row)


_POINT_NAMES = ("run", "name", "step", "value", "time", "kind", "attributes", "rank", "temporality", "increment")
_POINT_INDEX = {name: i for i, name in enumerate(_POINT_NAMES)}
#: A point's fields as a tuple, in constructor order (C speed).
POINT_FIELDS = operator.attrgetter(*_POINT_NAMES)


@dataclass(frozen=True, slots=True)
class RunParams:
    """Hyperparameters of a run (flattened ``key -> bool|int|float|str``)."""

    run: str
    params: dict[str, Any]
    time: float


class Batch:
    """What one export hands to a sink: points sorted by (run, step), plus params.

    The collector may carry a sender's gauges as columns (:mod:`otel_rl.model.columns`):
    ``points`` then makes the points from them on first use, and the list is the batch's
    content from then on; :meth:`gauge_columns` gives the columns to the stages that read them."""

    __slots__ = ("_points", "_columns", "params", "meta", "info")

    def __init__(self, points: list[Point] | None = None, params: list[RunParams] | None = None,
                 meta: dict[str, Any] | None = None, info: dict[str, tuple[str, str, str]] | None = None,
                 *, columns: Any = None) -> None:
        self._points = points if points is not None or columns is not None else []
        self._columns = columns if points is None else None
        self.params: list[RunParams] = params if params is not None else []
        #: Delivery metadata (a sender's batch id, an emission number), kept through spools.
        self.meta: dict[str, Any] = meta if meta is not None else {}
        #: What the instruments said of their metrics: name -> (unit, description, instrumentation
        #: scope), for the sinks that carry it (OTLP, Prometheus ``# HELP``).
        self.info: dict[str, tuple[str, str, str]] = info if info is not None else {}

    @property
    def points(self) -> list[Point]:
        points = self._points
        if points is None:
            columns = self._columns
            if columns is None:  # another thread made them between the two reads
                return self._points
            points = self._points = columns.points()
            self._columns = None
        return points

    @points.setter
    def points(self, points: list[Point]) -> None:
        self._points, self._columns = points, None

    def gauge_columns(self) -> Any:
        """The :class:`~otel_rl.model.columns.GaugeColumns` this batch's points are, while they
        have not been made into points; else None."""
        return self._columns

    def point_count(self) -> int:
        columns = self._columns
        return len(columns) if columns is not None else len(self._points)

    def __len__(self) -> int:
        return self.point_count() + len(self.params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return NotImplemented
        return (self.points, self.params, self.meta, self.info) == (other.points, other.params, other.meta, other.info)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it was

    def __repr__(self) -> str:
        columns = self._columns  # made for the text, not kept: a repr changes nothing
        points = columns.points() if columns is not None else self._points
        return f"Batch(points={points!r}, params={self.params!r}, meta={self.meta!r}, info={self.info!r})"

    def runs(self) -> list[str]:
        seen = dict.fromkeys(p.run for p in self.params)
        columns = self._columns
        if columns is not None:
            seen[columns.run] = None
        else:
            seen.update(dict.fromkeys(p.run for p in self.points))
        return list(seen)
