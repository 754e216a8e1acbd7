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
    RANK,
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


def rank_of(resource_attributes: Mapping[str, Any]) -> int:
    """``otel_rl.rank`` as an int, -1 when absent or not an integer."""
    raw = resource_attributes.get(RANK)
    step = _as_step(raw)
    return step if step is not None else -1


def any_value(value) -> Any:
    """An OTLP protobuf ``AnyValue`` as a Python value (arrays as tuples, maps as text)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return str({kv.key: any_value(kv.value) for kv in value.kvlist_value.values})
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def proto_attributes(key_values) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


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
        self._rank = -1
        self.overflow_points = 0
        self.rejected, self.reject_reason = 0, ""

    # -- front-end: the SDK's MetricsData -------------------------------------------------
    def translate_sdk(self, metrics_data) -> Batch:
        """Translate an SDK ``MetricsData`` into one sorted :class:`Batch`."""
        batch = Batch()
        if metrics_data is None:  # a DELTA collect with nothing new
            return batch
        for rm in metrics_data.resource_metrics:
            self._rank = rank_of(rm.resource.attributes)
            run = run_of(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self._sdk_metric(run, metric, batch)
        return self.finish(batch)

    # -- front-end: the OTLP wire protobuf (the collector) ----------------------------------
    def translate_proto(self, request) -> tuple[Batch, int, str]:
        """Translate an ``ExportMetricsServiceRequest``: (batch, rejected points, reason)."""
        batch = Batch()
        self.rejected, self.reject_reason = 0, ""
        for rm in request.resource_metrics:
            resource = proto_attributes(rm.resource.attributes)
            self._rank = rank_of(resource)
            run = run_of(resource)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self._proto_metric(run, metric, batch)
        return self.finish(batch), self.rejected, self.reject_reason

    def _reject(self, count: int, reason: str) -> None:
        self.rejected += count
        self.reject_reason = self.reject_reason or reason

    def _proto_metric(self, run: str, metric, batch: Batch) -> None:
        kind = metric.WhichOneof("data")
        if kind is None or kind == "summary":
            n = len(metric.summary.data_points) if kind == "summary" else 0
            self._reject(n, f"metric {metric.name!r}: {kind or 'no data'} is not supported")
            return
        data = getattr(metric, kind)
        temporality = getattr(data, "aggregation_temporality", None)
        if kind != "gauge":
            if temporality not in (1, 2):
                self._reject(len(data.data_points), f"metric {metric.name!r}: aggregation temporality "
                             "unspecified")
                return
            temporality = DELTA if temporality == 1 else CUMULATIVE
        if kind in ("gauge", "sum"):
            point_kind = "gauge" if kind == "gauge" else ("counter" if data.is_monotonic else "sum")
            fast = kind == "gauge" and metric.name != HPARAMS_METRIC
            for dp in data.data_points:
                which = dp.WhichOneof("value")
                if which is None:
                    if not dp.flags & 1:  # FLAG_NO_RECORDED_VALUE: nothing to reject
                        self._reject(1, f"metric {metric.name!r}: data point without a value")
                    continue
                if not (fast and self._fast_gauge(batch, run, metric.name, dp, which)):
                    self.number(batch, run, metric.name, point_kind, temporality,
                                proto_attributes(dp.attributes), dp.time_unix_nano, getattr(dp, which))
            return
        for dp in data.data_points:
            if kind == "histogram":
                buckets = explicit_buckets(dp.explicit_bounds, dp.bucket_counts)
                if len(dp.bucket_counts) not in (0, len(dp.explicit_bounds) + 1):
                    self._reject(1, f"metric {metric.name!r}: bucket_counts/explicit_bounds mismatch")
                    continue
            else:
                buckets = exponential_buckets(dp.scale, dp.zero_count, dp.zero_threshold, dp.positive.offset,
                                              dp.positive.bucket_counts, dp.negative.offset,
                                              dp.negative.bucket_counts)
            self.histogram(batch, run, metric.name, temporality, proto_attributes(dp.attributes),
                           dp.time_unix_nano, dp.count, dp.sum if dp.HasField("sum") else 0.0,
                           dp.min if dp.HasField("min") else None, dp.max if dp.HasField("max") else None,
                           buckets)

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

    def _fast_gauge(self, batch: Batch, run: str, name: str, dp, which: str) -> bool:
        """The common collector case, a gauge whose only attribute is an int ``step``, without
        building attribute dicts (the same result as :meth:`number`); False: take the general path."""
        attrs = dp.attributes
        if len(attrs) != 1 or attrs[0].key != STEP_ATTRIBUTE or attrs[0].value.WhichOneof("value") != "int_value":
            return False
        step = attrs[0].value.int_value
        if step < 0:
            return False
        if step > self._latest_step.get(run, -1):
            self._latest_step[run] = step
        batch.points.append(Point(run, name, step, float(getattr(dp, which)), dp.time_unix_nano / 1e9, "gauge",
                                  (), self._rank))
        return True

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
        batch.points.append(Point(run, name, step, value, wall, kind, rest, self._rank))

    def _sum_total(self, run, name, rest, step, temporality, attributes, value):
        series = (run, self._rank, name, rest)  # per rank: ranks of one run add up separately
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
            key = ((run, self._rank, name, rest), step)
            if self._seen_cumulative.get(key) == count:
                return
            self._seen_cumulative.put(key, count)
        value = HistogramValue(
            int(count), float(total or 0.0),
            math.nan if minimum is None else float(minimum),
            math.nan if maximum is None else float(maximum), buckets)
        batch.points.append(Point(run, name, step, value, time_ns / 1e9, "histogram", rest, self._rank))

    def finish(self, batch: Batch) -> Batch:
        batch.points.sort(key=lambda p: (p.run, p.step))
        return batch

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        if key in self._warned or len(self._warned) > MAX_TRACKED:
            return
        self._warned.add(key)
        _log.warning(message, *args)

