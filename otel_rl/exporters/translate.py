"""OTel metric data -> per-step :class:`~otel_rl.exporters.records.Point` records.

The one translation path (DESIGN.md). A front-end adapts a source into
``(resource attributes, metric, data points)``; :class:`Translator` applies the
same rules to all of them:

- **step**: the ``step`` point attribute; a point without one gets the latest
  step seen for its run (0 before any), so step-less gauges (GPU, process)
  land at the current step.
- **gauges**: the value as-is; an ``otel_rl.nonfinite`` attribute restores NaN/inf.
- **sums** (counters, up-down counters): the backend shows the running total
  per series. DELTA points are added up; CUMULATIVE points without a step are
  already totals; CUMULATIVE points *with* a step hold that step's increment
  and are re-exported every cycle, so unchanged re-exports are skipped.
- **histograms / exponential histograms**: a :class:`HistogramValue` per step.
- the ``otel_rl.hparams`` gauge becomes :class:`RunParams`.
- points in the SDK's cardinality-overflow series cannot be placed at a step:
  they are counted in :attr:`Translator.overflow_points` and logged, never
  silently merged.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from otel_rl.exporters.records import Batch, HistogramValue, Point, RunParams
from otel_rl.semconv import (
    HPARAMS_METRIC,
    NONFINITE_ATTRIBUTE,
    OVERFLOW_ATTRIBUTE,
    RUN_ID,
    STEP_ATTRIBUTE,
)

_log = logging.getLogger(__name__)

DELTA, CUMULATIVE = "delta", "cumulative"
_DEFAULT_RUN = "default"
_RESERVED = frozenset({STEP_ATTRIBUTE, NONFINITE_ATTRIBUTE})
_NONFINITE = frozenset({"nan", "inf", "-inf"})
#: Bound on per-series state (running totals, cumulative de-duplication).
MAX_TRACKED = 100_000


class _LRU(OrderedDict):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)


def run_of(resource_attributes: Mapping[str, Any]) -> str:
    """The run a resource belongs to: ``otel_rl.run.id``, else ``service.name``."""
    run = resource_attributes.get(RUN_ID) or resource_attributes.get("service.name")
    return str(run) if run else _DEFAULT_RUN


def _as_step(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if raw >= 0 else None
    if isinstance(raw, float) and raw.is_integer() and raw >= 0:
        return int(raw)
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    return None


def exponential_buckets(scale: int, zero_count: int, zero_threshold: float,
                        pos_offset: int, pos_counts: Iterable[int],
                        neg_offset: int, neg_counts: Iterable[int]) -> tuple:
    """OTel base-2 exponential buckets as increasing ``(left, right, count)``.

    Bucket ``i`` covers ``(base**i, base**(i+1)]`` with ``base = 2**(2**-scale)``
    (mirrored for negative values; the zero bucket is ``[-t, t]``).
    """
    base = 2.0 ** (2.0 ** -scale)
    out = []
    for k, count in reversed(list(enumerate(neg_counts))):
        i = neg_offset + k
        out.append((-(base ** (i + 1)), -(base ** i), int(count)))
    if zero_count:
        out.append((-zero_threshold, zero_threshold, int(zero_count)))
    for k, count in enumerate(pos_counts):
        i = pos_offset + k
        out.append((base ** i, base ** (i + 1), int(count)))
    return tuple(out)


def explicit_buckets(bounds: Iterable[float], counts: Iterable[int]) -> tuple:
    bounds = list(bounds)
    edges = [-math.inf, *bounds, math.inf]
    return tuple((edges[i], edges[i + 1], int(c)) for i, c in enumerate(counts))


class Translator:
    """Stateful per-source translator (running totals need memory of earlier exports)."""

    def __init__(self) -> None:
        self._latest_step: dict[str, int] = {}
        self._totals = _LRU(MAX_TRACKED)
        self._seen_cumulative = _LRU(MAX_TRACKED)
        self._warned: set[str] = set()
        self.overflow_points = 0

    # -- front-end: the SDK's MetricsData -------------------------------------------------
    def translate_sdk(self, metrics_data) -> Batch:
        """Translate an SDK ``MetricsData`` into one sorted :class:`Batch`."""
        batch = Batch()
        if metrics_data is None:  # a DELTA collect with nothing new
            return batch
        for rm in metrics_data.resource_metrics:
            run = run_of(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self._sdk_metric(run, metric, batch)
        return self.finish(batch)

    def _sdk_metric(self, run: str, metric, batch: Batch) -> None:
        data = metric.data
        kind = type(data).__name__
        temporality = getattr(data, "aggregation_temporality", None)
        temporality = None if temporality is None else (
            DELTA if int(temporality) == 1 else CUMULATIVE)
        if kind in ("Gauge", "Sum"):
            point_kind = "gauge" if kind == "Gauge" else ("counter" if data.is_monotonic else "sum")
            for dp in data.data_points:
                self.number(batch, run, metric.name, point_kind, temporality, dp.attributes,
                            dp.time_unix_nano, dp.value)
        elif kind == "Histogram":
            for dp in data.data_points:
                buckets = explicit_buckets(dp.explicit_bounds, dp.bucket_counts)
                self.histogram(batch, run, metric.name, temporality, dp.attributes, dp.time_unix_nano,
                               dp.count, dp.sum, dp.min, dp.max, buckets)
        elif kind == "ExponentialHistogram":
            for dp in data.data_points:
                buckets = exponential_buckets(
                    dp.scale, dp.zero_count, getattr(dp, "zero_threshold", 0.0) or 0.0,
                    dp.positive.offset, dp.positive.bucket_counts,
                    dp.negative.offset, dp.negative.bucket_counts)
                self.histogram(batch, run, metric.name, temporality, dp.attributes, dp.time_unix_nano,
                               dp.count, dp.sum, dp.min, dp.max, buckets)
        else:
            self.warn_once(f"kind:{kind}", "metric %r has unsupported data type %s; skipped",
                           metric.name, kind)

    # -- shared rules ---------------------------------------------------------------------
    def _split(self, run: str, name: str, attributes: Mapping[str, Any] | None):
        """(step, other attributes) or None for an overflow point."""
        attributes = attributes or {}
        if attributes.get(OVERFLOW_ATTRIBUTE):
            self.overflow_points += 1
            self.warn_once(f"overflow:{name}",
                           "metric %r exceeded the cardinality limit in one export interval; "
                           "points past the limit cannot be placed at a step and were counted in "
                           "overflow_points. Raise `cardinality_limit` or export more often.", name)
            return None
        step = None
        if STEP_ATTRIBUTE in attributes:
            step = _as_step(attributes[STEP_ATTRIBUTE])
            if step is None:
                self.warn_once(f"step:{name}", "metric %r has a bad %r attribute %r; using the "
                               "run's latest step", name, STEP_ATTRIBUTE, attributes[STEP_ATTRIBUTE])
        if step is None:
            step = self._latest_step.get(run, 0)
        elif step > self._latest_step.get(run, -1):
            self._latest_step[run] = step
        rest = tuple(sorted((k, str(v)) for k, v in attributes.items() if k not in _RESERVED))
        return step, rest

    def number(self, batch: Batch, run: str, name: str, kind: str, temporality: str | None,
               attributes: Mapping[str, Any] | None, time_ns: int, value: float) -> None:
        split = self._split(run, name, attributes)
        if split is None:
            return
        step, rest = split
        wall = time_ns / 1e9
        if name == HPARAMS_METRIC:
            batch.params.append(RunParams(run, {k: v for k, v in (attributes or {}).items()
                                                if k not in _RESERVED}, wall))
            return
        marker = (attributes or {}).get(NONFINITE_ATTRIBUTE)
        value = float(marker) if marker in _NONFINITE else float(value)
        if kind != "gauge":
            value = self._sum_total(run, name, rest, step, temporality, attributes, value)
            if value is None:
                return
        batch.points.append(Point(run, name, step, value, wall, kind, rest))

    def _sum_total(self, run, name, rest, step, temporality, attributes, value):
        series = (run, name, rest)
        if temporality == CUMULATIVE:
            if STEP_ATTRIBUTE not in (attributes or {}):
                return value
            key = (series, step)
            previous = self._seen_cumulative.get(key)
            if previous == value:
                return None  # the same step re-exported unchanged
            self._seen_cumulative.put(key, value)
            value -= previous or 0.0
        total = self._totals.get(series, 0.0) + value
        self._totals.put(series, total)
        return total

    def histogram(self, batch: Batch, run: str, name: str, temporality: str | None,
                  attributes: Mapping[str, Any] | None, time_ns: int, count: int, total: float,
                  minimum: float | None, maximum: float | None, buckets: tuple) -> None:
        split = self._split(run, name, attributes)
        if split is None:
            return
        step, rest = split
        if temporality == CUMULATIVE and STEP_ATTRIBUTE in (attributes or {}):
            key = ((run, name, rest), step)
            if self._seen_cumulative.get(key) == count:
                return
            self._seen_cumulative.put(key, count)
        value = HistogramValue(
            int(count), float(total or 0.0),
            math.nan if minimum is None else float(minimum),
            math.nan if maximum is None else float(maximum), buckets)
        batch.points.append(Point(run, name, step, value, time_ns / 1e9, "histogram", rest))

    def finish(self, batch: Batch) -> Batch:
        batch.points.sort(key=lambda p: (p.run, p.step))
        return batch

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        if key in self._warned or len(self._warned) > MAX_TRACKED:
            return
        self._warned.add(key)
        _log.warning(message, *args)

