"""OTel metric data -> per-step :class:`~otel_rl.exporters.records.Point` records, without state.

The one translation path (DESIGN.md). :func:`translate_sdk` (the SDK's ``MetricsData``) and
:func:`translate_proto` (an OTLP ``ExportMetricsServiceRequest``) apply the same rules and keep
nothing between calls; what they could not translate comes back in the :class:`Translation`:

- **step**: the ``step`` point attribute; a point without one gets :data:`NO_STEP`, and
  :class:`~otel_rl.exporters.accumulate.Stream` places it at its run's latest step once the
  data is admitted (step-less gauges such as GPU ones land at the current step).
- **gauges**: the value as-is; an ``otel_rl.nonfinite`` attribute restores NaN/inf.
- **sums** (counters, up-down counters): the value as sent, with its temporality on the
  point; running totals are computed after admission (``accumulate``), never here, so a
  refused or retried request is never counted.
- **histograms / exponential histograms**: a :class:`HistogramValue` per step.
- the ``otel_rl.hparams`` gauge becomes :class:`RunParams`.
- points in the SDK's cardinality-overflow series cannot be placed at a step: they are
  returned as rejected (reason included), never silently merged.
"""

from __future__ import annotations

import logging
import math
import operator
from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping
from typing import Any

from otel_rl.exporters.bulk import gauge_points
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
#: The step of a point that carried none (placed at its run's latest step after admission).
NO_STEP = -1
_RESERVED = frozenset({STEP_ATTRIBUTE, NONFINITE_ATTRIBUTE})
_NONFINITE = frozenset({"nan", "inf", "-inf"})
#: A resource with at least this many points is first tried as columns (:mod:`.bulk`).
BULK_MIN_POINTS = 16

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


#: Buckets per histogram data point (OTel SDKs default to 160 exponential buckets).
MAX_HISTOGRAM_BUCKETS = 4096
#: Attributes per data point (the step included).
MAX_ATTRIBUTES = 128
#: Buckets per request, all points together (64 MB of decompressed varints could otherwise
#: declare tens of millions, each a Python object).
MAX_REQUEST_BUCKETS = 200_000

#: Steps are int64 in every backend (TensorBoard events, MLflow, the OTLP int attribute).
MAX_STEP = 2**63 - 1


def _as_step(raw: Any) -> int | None:
    """A non-negative int64 step from an attribute value, or None."""
    step = None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        step = raw
    elif isinstance(raw, float) and raw.is_integer():
        step = int(raw)
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 20:
        step = int(raw)
    return step if step is not None and 0 <= step <= MAX_STEP else None


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


@dataclass
class Translation:
    """What one translation produced: the records, and the points it could not place."""

    batch: Batch = field(default_factory=Batch)
    rejected: int = 0
    #: The first reason per kind of rejection, e.g. ``{"overflow": "metric 'x' exceeded ..."}``.
    reasons: dict[str, str] = field(default_factory=dict)
    #: Of ``rejected``: points in the SDK's cardinality-overflow series.
    overflow: int = 0
    #: Histogram buckets taken so far (bounded per request: :data:`MAX_REQUEST_BUCKETS`).
    buckets: int = 0

    def reject(self, count: int, kind: str, reason: str) -> None:
        self.rejected += count
        self.reasons.setdefault(kind, reason)
        if kind == "overflow":
            self.overflow += count

    @property
    def reason(self) -> str:
        """All rejection reasons in one line (OTLP ``partial_success.error_message``)."""
        return "; ".join(self.reasons.values())


def translate_sdk(metrics_data) -> Translation:
    """Translate an SDK ``MetricsData`` (None: a DELTA collect with nothing new)."""
    out = Translation()
    if metrics_data is None:
        return out
    for rm in metrics_data.resource_metrics:
        rank = rank_of(rm.resource.attributes)
        run = run_of(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                _sdk_metric(out, run, rank, metric)
    return _finish(out)


def translate_proto(request) -> Translation:
    """Translate an OTLP ``ExportMetricsServiceRequest``."""
    out = Translation()
    # True while the points are already in (run, step) order: resources whose metrics were all
    # read as columns (ordered by step), runs increasing
    ordered, last_run = True, None
    for rm in request.resource_metrics:
        resource = proto_attributes(rm.resource.attributes)
        metrics = [m for sm in rm.scope_metrics for m in sm.metrics]
        count = sum(map(_points, metrics))
        if _empty_run(out, resource, count):
            continue
        rank = rank_of(resource)
        run = run_of(resource)
        points = _bulk_gauges(run, rank, metrics) if count >= BULK_MIN_POINTS else None
        if points is not None:
            out.batch.points.extend(points)
            ordered = ordered and (last_run is None or run > last_run)
            last_run = run
            continue
        ordered = False
        for metric in metrics:
            _proto_metric(out, run, rank, metric)
    return out if ordered else _finish(out)


def _bulk_gauges(run: str, rank: int, metrics: list) -> list[Point] | None:
    """A resource's points read as columns (:mod:`.bulk`) when all its metrics are plain gauges
    of the simple shape (the collector's common case), in (step, metric) order; else None."""
    if not all(m.WhichOneof("data") == "gauge" and m.name != HPARAMS_METRIC for m in metrics):
        return None
    return gauge_points(Point, run, rank, [(m.name, m.gauge.SerializeToString()) for m in metrics])


def translate_logs(request, max_chars: int = 10_000) -> Translation:
    """Translate an OTLP ``ExportLogsServiceRequest``: a record with an ``event_name`` is a text
    (``otel_rl.kind = text``) or one row of the samples table of that name, at its ``step``
    attribute; consecutive rows of one table, step and time are one table (otel-rl's OTLP sink
    numbers them with ``otel_rl.sample.index``). A record without an event name is not a sample:
    rejected, with the reason in the partial success."""
    from otel_rl.exporters.otlp import INDEX_ATTRIBUTE, KIND_ATTRIBUTE
    from otel_rl.samples import row_of, table_from_rows

    out = Translation()
    points = out.batch.points
    for rl in request.resource_logs:
        resource = proto_attributes(rl.resource.attributes)
        if _empty_run(out, resource, sum(len(sl.log_records) for sl in rl.scope_logs)):
            continue
        rank, run = rank_of(resource), run_of(resource)
        for sl in rl.scope_logs:
            table: list | None = None  # [name, step, time, rows]

            def flush() -> None:
                if table is not None:
                    points.append(Point(run, table[0], table[1], table_from_rows(table[3]), table[2], "table",
                                        (), rank))

            for record in sl.log_records:
                name = record.event_name
                if not name:
                    out.reject(1, "no_event_name", "log records without an event_name are not samples or "
                               "texts; otel-rl keeps only those (the event name is the table's name)")
                    continue
                attrs = proto_attributes(record.attributes)
                step = _attribute_step(out, name, attrs, NO_STEP, "the run's latest step")
                t = (record.time_unix_nano or record.observed_time_unix_nano) / 1e9
                body = any_value(record.body) if record.body.WhichOneof("value") != "kvlist_value" else {
                    kv.key: any_value(kv.value) for kv in record.body.kvlist_value.values}
                if attrs.get(KIND_ATTRIBUTE) == "text" and isinstance(body, str):
                    flush()
                    table = None
                    points.append(Point(run, name, step, body, t, "text", (), rank))
                    continue
                row = row_of(body, max_chars)
                if table is not None and (table[0], table[1], table[2]) == (name, step, t) and \
                        attrs.get(INDEX_ATTRIBUTE) != 0:
                    table[3].append(row)
                else:
                    flush()
                    table = [name, step, t, [row]]
            flush()
    return _finish(out)


def _points(metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


def _empty_run(out: Translation, resource: Mapping[str, Any], count: int) -> bool:
    """An ``otel_rl.run.id`` that is set but empty: refused (merging it into another run, or
    into ``default``, would mix clients' data)."""
    raw = resource.get(RUN_ID)
    if raw is None or str(raw).strip():
        return False
    out.reject(count, "empty_run", "empty otel_rl.run.id: set it to the run's name (or leave it out to "
               "use service.name)")
    return True


_RUN_STEP = operator.attrgetter("run", "step")


def _finish(out: Translation) -> Translation:
    out.batch.points.sort(key=_RUN_STEP)
    return out


def _proto_metric(out: Translation, run: str, rank: int, metric) -> None:
    kind = metric.WhichOneof("data")
    if kind is None or kind == "summary":
        n = len(metric.summary.data_points) if kind == "summary" else 0
        out.reject(n, "unsupported", f"metric {metric.name!r}: {kind or 'no data'} is not supported")
        return
    data = getattr(metric, kind)
    if any(len(dp.attributes) > MAX_ATTRIBUTES for dp in data.data_points):
        # each attribute set is a series in every backend: a point with thousands is refused
        wide = [dp for dp in data.data_points if len(dp.attributes) > MAX_ATTRIBUTES]
        out.reject(len(wide), "attributes", f"metric {metric.name!r}: more than {MAX_ATTRIBUTES} attributes "
                   "on a data point")
        keep = [dp for dp in data.data_points if len(dp.attributes) <= MAX_ATTRIBUTES]
        del data.data_points[:]
        data.data_points.extend(keep)
    temporality = getattr(data, "aggregation_temporality", None)
    if kind != "gauge":
        if temporality not in (1, 2):
            out.reject(len(data.data_points), "temporality",
                       f"metric {metric.name!r}: aggregation temporality unspecified")
            return
        temporality = DELTA if temporality == 1 else CUMULATIVE
    if kind in ("gauge", "sum"):
        point_kind = "gauge" if kind == "gauge" else ("counter" if data.is_monotonic else "sum")
        fast = kind == "gauge" and metric.name != HPARAMS_METRIC
        for dp in data.data_points:
            which = dp.WhichOneof("value")
            if which is None:
                if not dp.flags & 1:  # FLAG_NO_RECORDED_VALUE: nothing to reject
                    out.reject(1, "no_value", f"metric {metric.name!r}: data point without a value")
                continue
            if not (fast and _fast_gauge(out.batch, run, rank, metric.name, dp, which)):
                number(out, run, rank, metric.name, point_kind, temporality,
                       proto_attributes(dp.attributes), dp.time_unix_nano, getattr(dp, which))
        return
    for dp in data.data_points:
        if kind == "histogram":
            if len(dp.bucket_counts) not in (0, len(dp.explicit_bounds) + 1):
                out.reject(1, "buckets", f"metric {metric.name!r}: bucket_counts/explicit_bounds mismatch")
                continue
            n = len(dp.bucket_counts)
        else:
            n = len(dp.positive.bucket_counts) + len(dp.negative.bucket_counts)
        if n > MAX_HISTOGRAM_BUCKETS:  # a few KB of gzip can declare millions of buckets
            out.reject(1, "buckets", f"metric {metric.name!r}: {n} buckets in one data point; at most "
                       f"{MAX_HISTOGRAM_BUCKETS}")
            continue
        if out.buckets + n > MAX_REQUEST_BUCKETS:
            out.reject(1, "request_buckets", f"more than {MAX_REQUEST_BUCKETS} histogram buckets in one "
                       "request; send the rest in another request")
            continue
        if kind == "histogram":
            buckets = explicit_buckets(dp.explicit_bounds, dp.bucket_counts)
        else:
            try:
                if not -10 <= dp.scale <= 20:  # the OTLP spec's range
                    raise ValueError(f"scale {dp.scale} is outside -10..20")
                buckets = exponential_buckets(dp.scale, dp.zero_count, dp.zero_threshold, dp.positive.offset,
                                              dp.positive.bucket_counts, dp.negative.offset,
                                              dp.negative.bucket_counts)
                if not all(math.isfinite(left) and math.isfinite(right) for left, right, _ in buckets):
                    raise OverflowError("bucket bounds overflow a double")
            except (OverflowError, ValueError) as exc:
                out.reject(1, "exp_range", f"metric {metric.name!r}: exponential histogram out of range ({exc})")
                continue
        out.buckets += n
        histogram(out, run, rank, metric.name, temporality, proto_attributes(dp.attributes),
                  dp.time_unix_nano, dp.count, dp.sum if dp.HasField("sum") else 0.0,
                  dp.min if dp.HasField("min") else None, dp.max if dp.HasField("max") else None, buckets)


def _sdk_metric(out: Translation, run: str, rank: int, metric) -> None:
    data = metric.data
    kind = type(data).__name__
    temporality = getattr(data, "aggregation_temporality", None)
    temporality = None if temporality is None else (DELTA if int(temporality) == 1 else CUMULATIVE)
    if kind in ("Gauge", "Sum"):
        point_kind = "gauge" if kind == "Gauge" else ("counter" if data.is_monotonic else "sum")
        for dp in data.data_points:
            number(out, run, rank, metric.name, point_kind, temporality, dp.attributes,
                   dp.time_unix_nano, dp.value)
    elif kind in ("Histogram", "ExponentialHistogram"):
        for dp in data.data_points:
            if kind == "Histogram":
                buckets = explicit_buckets(dp.explicit_bounds, dp.bucket_counts)
            else:
                buckets = exponential_buckets(
                    dp.scale, dp.zero_count, getattr(dp, "zero_threshold", 0.0) or 0.0,
                    dp.positive.offset, dp.positive.bucket_counts,
                    dp.negative.offset, dp.negative.bucket_counts)
            histogram(out, run, rank, metric.name, temporality, dp.attributes, dp.time_unix_nano,
                      dp.count, dp.sum, dp.min, dp.max, buckets)
    else:
        out.reject(len(getattr(data, "data_points", ())), "unsupported",
                   f"metric {metric.name!r}: data type {kind} is not supported")


def _fast_gauge(batch: Batch, run: str, rank: int, name: str, dp, which: str) -> bool:
    """The common collector case, a gauge whose only attribute is an int ``step``, without
    building attribute dicts (the same result as :func:`number`); False: take the general path."""
    attrs = dp.attributes
    if len(attrs) != 1 or attrs[0].key != STEP_ATTRIBUTE or attrs[0].value.WhichOneof("value") != "int_value":
        return False
    step = attrs[0].value.int_value
    if step < 0:
        return False
    batch.points.append(Point(run, name, step, float(getattr(dp, which)), dp.time_unix_nano / 1e9, "gauge",
                              (), rank))
    return True


def _split(out: Translation, name: str, attributes: Mapping[str, Any] | None):
    """(step or NO_STEP, other attributes), or None for an overflow point."""
    attributes = attributes or {}
    if attributes.get(OVERFLOW_ATTRIBUTE):
        out.reject(1, "overflow",
                   f"metric {name!r} exceeded the cardinality limit in one export interval; points past "
                   "the limit cannot be placed at a step (raise cardinality_limit or export more often)")
        return None
    step = _attribute_step(out, name, attributes, NO_STEP, "the run's latest step")
    rest = tuple(sorted((k, str(v)) for k, v in attributes.items() if k not in _RESERVED))
    return step, rest


def _attribute_step(out: Translation, name: str, attributes: Mapping[str, Any], default: Any,
                    placed_at: str) -> Any:
    """The ``step`` attribute as an int64 step; ``default`` when absent, or when bad (reported,
    saying the point is ``placed_at`` instead)."""
    if STEP_ATTRIBUTE not in attributes:
        return default
    parsed = _as_step(attributes[STEP_ATTRIBUTE])
    if parsed is None:
        out.reject(0, "bad_step", f"metric {name!r}: bad {STEP_ATTRIBUTE!r} attribute "
                   f"{attributes[STEP_ATTRIBUTE]!r}; placed at {placed_at}")
        return default
    return parsed


def number(out: Translation, run: str, rank: int, name: str, kind: str, temporality: str | None,
           attributes: Mapping[str, Any] | None, time_ns: int, value: float) -> None:
    split = _split(out, name, attributes)
    if split is None:
        return
    step, rest = split
    wall = time_ns / 1e9
    if name == HPARAMS_METRIC:
        out.batch.params.append(RunParams(run, {k: v for k, v in (attributes or {}).items()
                                                if k not in _RESERVED}, wall))
        return
    marker = (attributes or {}).get(NONFINITE_ATTRIBUTE)
    value = float(marker) if marker in _NONFINITE else float(value)
    mode = ""
    if kind != "gauge":
        mode = _sum_mode(temporality, attributes)
    out.batch.points.append(Point(run, name, step, value, wall, kind, rest, rank, mode))


def _sum_mode(temporality: str | None, attributes: Mapping[str, Any] | None) -> str:
    if temporality != CUMULATIVE:
        return "delta"
    return "cumulative_step" if STEP_ATTRIBUTE in (attributes or {}) else "cumulative"


def histogram(out: Translation, run: str, rank: int, name: str, temporality: str | None,
              attributes: Mapping[str, Any] | None, time_ns: int, count: int, total: float,
              minimum: float | None, maximum: float | None, buckets: tuple) -> None:
    split = _split(out, name, attributes)
    if split is None:
        return
    step, rest = split
    mode = "cumulative_step" if temporality == CUMULATIVE and STEP_ATTRIBUTE in (attributes or {}) else ""
    value = HistogramValue(
        int(count), float(total or 0.0),
        math.nan if minimum is None else float(minimum),
        math.nan if maximum is None else float(maximum), buckets)
    out.batch.points.append(Point(run, name, step, value, time_ns / 1e9, "histogram", rest, rank, mode))


# -- the in-process tape (otel_rl.recording) ------------------------------------------------
#: The name a value logged under an empty key gets (``Logger.log_metrics({"": 1.0})``).
EMPTY_NAME = "unnamed"
_COUNTERS = {"c": ("counter", "delta"), "u": ("sum", "delta"),
             "oc": ("counter", "cumulative"), "ou": ("sum", "cumulative")}


def record_step(record: tuple) -> int:
    """The step a tape record belongs to: its ``step`` attribute, else the step current when it
    was recorded, else :data:`NO_STEP`."""
    attrs = record[5] if len(record) > 5 else None
    if attrs and STEP_ATTRIBUTE in attrs:
        step = _as_step(attrs[STEP_ATTRIBUTE])
        if step is not None:
            return step
    return NO_STEP if record[3] is None else record[3]


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened with ``/``; ``prefix`` prepended as ``prefix/key``."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        full = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def as_number(value: Any) -> float | None:
    """bool/int/float, or a one-element numpy/torch value, as a float; None otherwise."""
    if isinstance(value, (int, float)):
        return float(value)
    item = getattr(value, "item", None)
    numel = getattr(value, "numel", None)  # torch; numpy has .size
    size = numel() if callable(numel) else getattr(value, "size", 1)
    if callable(item) and size == 1:
        try:
            return float(item())
        except (TypeError, ValueError):
            return None
    return None


def _param_value(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _flush_log_rows(log_rows: list[list], points: list, run: str, rank: int) -> None:
    if not log_rows:
        return
    from otel_rl.samples import table_from_rows

    for (name, step), rows, t_ns in log_rows:
        points.append(Point(run, name, step, table_from_rows(rows), t_ns / 1e9, "table", (), rank))
    log_rows.clear()


def translate_records(records: Iterable[tuple], run: str, rank: int = -1) -> Translation:
    """Tape records (see :mod:`otel_rl.recording`) as points: every gauge value its own point
    at its recorded time; counter increments of one series and step added up; histogram
    samples of one series and step as one distribution fitted to them."""
    from otel_rl.recording import fit_histogram

    out = Translation()
    points = out.batch.points
    sums: dict[tuple, list] = {}
    samples: dict[tuple, list] = {}
    log_rows: list[list] = []  # consecutive Logs-API rows of one table and step: one Table
    for record in records:
        kind = record[0]
        if kind == "m":  # a Logger call: (m, prefix, metrics, step, time_ns)
            _, prefix, metrics, step, t_ns = record[:5]
            wall = t_ns / 1e9
            nested = None
            for key, value in metrics.items():
                vtype = type(value)
                if (vtype is float or vtype is int) and type(key) is str:  # the common case, inline
                    name = f"{prefix}/{key}" if prefix else key
                    points.append(Point(run, name or EMPTY_NAME, step, float(value), wall, "gauge", (), rank))
                else:
                    (nested := nested or {})[key] = value
            if nested:
                for key, value in flatten(nested, prefix).items():
                    number = as_number(value)
                    if number is None:
                        out.reject(1, f"value:{key}", f"metric {key!r}: value {value!r} is not a number")
                        continue
                    points.append(Point(run, key or EMPTY_NAME, step, number, wall, "gauge", (), rank))
            continue
        if kind == "p":  # hyperparameters: (p, None, params, step, time_ns)
            out.batch.params.append(RunParams(run, {k or EMPTY_NAME: _param_value(v)
                                                    for k, v in flatten(record[2]).items()},
                                              record[4] / 1e9))
            continue
        _, name, value, step, t_ns, attrs = record[:6]
        if kind == "r":  # samples (otel_rl.log_samples): (r, name, Table, step, time_ns, None)
            points.append(Point(run, name or EMPTY_NAME, NO_STEP if step is None else step, value, t_ns / 1e9,
                                "table", (), rank))
            continue
        if kind == "l":  # one Logs-API row: (l, event name, row, step, time_ns, attributes)
            if attrs:
                step = _attribute_step(out, name, attrs, step, "the step current when recorded")
            key = (name or EMPTY_NAME, NO_STEP if step is None else step)
            if log_rows and log_rows[-1][0] == key:
                log_rows[-1][1].append(value)
                log_rows[-1][2] = t_ns
            else:
                _flush_log_rows(log_rows, points, run, rank)
                log_rows.append([key, [value], t_ns])
            continue
        _flush_log_rows(log_rows, points, run, rank)
        if kind == "t":  # text (SummaryWriter.add_text): (t, tag, text, step, time_ns, None)
            points.append(Point(run, name, NO_STEP if step is None else step, str(value), t_ns / 1e9, "text",
                                (), rank))
            continue
        if kind == "hs":  # a whole array of samples at once (SummaryWriter.add_histogram)
            finite = [float(v) for v in value if math.isfinite(v)]
            if len(finite) != len(value):
                out.reject(len(value) - len(finite), f"value:{name}",
                           f"histogram {name!r}: {len(value) - len(finite)} samples are not finite")
            if finite:
                points.append(Point(run, name, NO_STEP if step is None else step, fit_histogram(finite),
                                    t_ns / 1e9, "histogram", (), rank))
            continue
        rest: tuple = ()
        if attrs:
            step = _attribute_step(out, name, attrs, step, "the step current when recorded")
            rest = tuple(sorted((k, str(v)) for k, v in attrs.items() if k != STEP_ATTRIBUTE))
        if step is None:
            step = NO_STEP
        number = as_number(value)
        if number is None or (kind != "g" and not math.isfinite(number)):
            what = "not a number" if number is None else "not finite (only gauges keep NaN/inf)"
            out.reject(1, f"value:{name}", f"metric {name!r}: value {value!r} is {what}")
            continue
        if kind == "g":
            points.append(Point(run, name, step, number, t_ns / 1e9, "gauge", rest, rank))
        elif kind == "h":
            entry = samples.get((name, rest, step))
            if entry is None:
                samples[(name, rest, step)] = [t_ns, [number], record[6] if len(record) > 6 else None]
            else:
                entry[0] = t_ns
                entry[1].append(number)
        else:
            point_kind, mode = _COUNTERS[kind]
            if kind == "c" and number < 0:
                out.reject(1, f"negative:{name}", f"counter {name!r}: negative increment {number!r} "
                           "(use an up-down counter)")
                continue
            key = (name, rest, step, point_kind, mode)
            entry = sums.get(key)
            if entry is None or mode == "cumulative":
                sums[key] = [t_ns, number]
            else:
                entry[0] = t_ns
                entry[1] += number
    _flush_log_rows(log_rows, points, run, rank)
    for (name, rest, step, point_kind, mode), (t_ns, total) in sums.items():
        points.append(Point(run, name, step, total, t_ns / 1e9, point_kind, rest, rank, mode))
    for (name, rest, step), (t_ns, values, bounds) in samples.items():
        points.append(Point(run, name, step, fit_histogram(values, bounds), t_ns / 1e9, "histogram", rest, rank))
    return _finish(out)
