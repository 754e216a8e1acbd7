"""OTLP (protobuf) and OTel SDK metric data and OTLP logs -> points, without state."""

from __future__ import annotations

import math
from typing import Any

from otel_rl.model.bulk import gauge_block
from otel_rl.model.media import FORMATS, Media
from otel_rl.model.records import Batch, Point
from otel_rl.model.semconv import HPARAMS_METRIC, MEDIA_FIELDS, MEDIA_FORMAT, MEDIA_KIND, STEP_ATTRIBUTE
from otel_rl.model.steps import NO_STEP
from otel_rl.model.translate import (
    CUMULATIVE,
    DELTA,
    Translation,
    attribute_step,
    empty_run,
    explicit_buckets,
    exponential_buckets,
    finish,
    histogram,
    number,
    rank_of,
    run_of,
)

#: A resource with at least this many points is first tried as columns (:mod:`.bulk`).
BULK_MIN_POINTS = 16


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
    return finish(out)


def translate_proto(request) -> Translation:
    """Translate an OTLP ``ExportMetricsServiceRequest``."""
    out = Translation()
    # True while the points are already in (run, step) order: resources whose metrics were all
    # read as columns (ordered by step), runs increasing
    ordered, last_run = True, None
    pending = None  # the columns of the first sender, while nothing else came
    for rm in request.resource_metrics:
        resource = proto_attributes(rm.resource.attributes)
        metrics = [m for sm in rm.scope_metrics for m in sm.metrics]
        for sm in rm.scope_metrics:  # what the instruments said of their metrics
            for m in sm.metrics:
                if m.unit or m.description:
                    out.batch.info[m.name] = (m.unit[:64], m.description[:1024], sm.scope.name[:256])
        count = sum(map(_points, metrics))
        if empty_run(out, resource, count):
            continue
        rank = rank_of(resource)
        run = run_of(resource)
        block = _bulk_gauges(run, rank, metrics) if count >= BULK_MIN_POINTS else None
        if pending is not None:  # more than one sender's points: the columns become points
            out.batch.points.extend(pending.points())
            pending = None
        if block is not None:
            if out.batch.points:
                out.batch.points.extend(block.points())
            else:
                pending = block
            ordered = ordered and (last_run is None or run > last_run)
            last_run = run
            continue
        ordered = False
        for metric in metrics:
            _proto_metric(out, run, rank, metric)
    if pending is not None:  # one sender's gauges, the request's only points: kept as columns
        out.batch = Batch(params=out.batch.params, meta=out.batch.meta, info=out.batch.info, columns=pending)
        return out
    return out if ordered else finish(out)


def _bulk_gauges(run: str, rank: int, metrics: list):
    """A resource's points read as columns (:mod:`.bulk`) when all its metrics are plain gauges
    of the simple shape (the collector's common case), in (step, metric) order; else None."""
    if not all(m.WhichOneof("data") == "gauge" and m.name != HPARAMS_METRIC for m in metrics):
        return None
    return gauge_block(run, rank, [(m.name, m.gauge.SerializeToString()) for m in metrics])


def translate_logs(request, max_chars: int = 10_000, max_records: int | None = None,
                   max_columns: int | None = None, max_cells: int | None = None,
                   max_media_bytes: int | None = None) -> Translation:
    """Translate an OTLP ``ExportLogsServiceRequest``: a record with an ``event_name`` is a text
    (``otel_rl.kind = text``) or one row of the samples table of that name, at its ``step``
    attribute; consecutive rows of one table, step and time are one table (otel-rl's OTLP sink
    numbers them with ``otel_rl.sample.index``). A record without an event name is not a sample:
    rejected, with the reason in the partial success.

    Bounds (the collector's ``limits``; None: none): ``max_records`` per request; per table,
    ``max_columns`` distinct columns and ``max_cells`` rows x columns (N records with one key
    each would make an N x N table); a text and every cell at most ``max_chars`` characters.
    A record past a bound is rejected with its reason; the rest of the request is kept."""
    from otel_rl.model.semconv import INDEX_ATTRIBUTE, KIND_ATTRIBUTE
    from otel_rl.model.tables import cut_text, row_of, table_from_rows

    out = Translation()
    points = out.batch.points
    seen = 0
    for rl in request.resource_logs:
        resource = proto_attributes(rl.resource.attributes)
        if empty_run(out, resource, sum(len(sl.log_records) for sl in rl.scope_logs)):
            continue
        rank, run = rank_of(resource), run_of(resource)
        for sl in rl.scope_logs:
            table: list | None = None  # [name, step, time, rows, columns]

            def flush() -> None:  # noqa: B023 - called within the iteration that defines it
                if table is not None:  # noqa: B023
                    points.append(Point(run, table[0], table[1], table_from_rows(table[3]), table[2],  # noqa: B023
                                        "table", (), rank))  # noqa: B023

            for record in sl.log_records:
                seen += 1
                if max_records is not None and seen > max_records:
                    out.reject(1, "too_many_records", f"more than limits.max_log_records={max_records} log "
                               "records in one request; send the rest in another")
                    continue
                name = record.event_name
                if not name:
                    out.reject(1, "no_event_name", "log records without an event_name are not samples or "
                               "texts; otel-rl keeps only those (the event name is the table's name)")
                    continue
                attrs = proto_attributes(record.attributes)
                step = attribute_step(out, name, attrs, NO_STEP)
                if step is None:
                    continue
                t = (record.time_unix_nano or record.observed_time_unix_nano) / 1e9
                if attrs.get(KIND_ATTRIBUTE) == "media":
                    flush()
                    table = None
                    raw = record.body.bytes_value if record.body.WhichOneof("value") == "bytes_value" else None
                    if raw is not None and max_media_bytes is not None and len(raw) > max_media_bytes:
                        out.reject(1, "media_too_large", f"media {name!r}: {len(raw)} bytes, over "
                                   f"limits.max_media_bytes={max_media_bytes}")
                        continue
                    media = media_of(out, name, attrs, raw)
                    if media is not None:
                        points.append(Point(run, name, step, media, t, "media", (), rank))
                    continue
                body = any_value(record.body) if record.body.WhichOneof("value") != "kvlist_value" else {
                    kv.key: any_value(kv.value) for kv in record.body.kvlist_value.values}
                if attrs.get(KIND_ATTRIBUTE) == "text" and isinstance(body, str):
                    flush()
                    table = None
                    points.append(Point(run, name, step, cut_text(body, max_chars), t, "text", (), rank))
                    continue
                row = row_of(body, max_chars)
                same = table is not None and (table[0], table[1], table[2]) == (name, step, t) and \
                    attrs.get(INDEX_ATTRIBUTE) != 0
                columns = (table[4] if same else set()) | row.keys()
                rows = (len(table[3]) if same else 0) + 1
                if (max_columns is not None and len(columns) > max_columns) or \
                        (max_cells is not None and rows * len(columns) > max_cells):
                    out.reject(1, "table_too_large", f"table {name!r}: past limits.max_table_columns="
                               f"{max_columns} columns or limits.max_table_cells={max_cells} cells")
                    continue
                if same:
                    table[3].append(row)
                    table[4] = columns
                else:
                    flush()
                    table = [name, step, t, [row], columns]
            flush()
    return finish(out)


def media_of(out: Translation, name: str, attrs: dict, body) -> Media | None:
    """The :class:`Media` of a media log record (bytes body; kind, format, sizes as attributes)."""
    kind, fmt = attrs.get(MEDIA_KIND), attrs.get(MEDIA_FORMAT)
    if not isinstance(body, bytes) or kind not in FORMATS or fmt not in FORMATS[kind]:
        out.reject(1, "bad_media", f"media {name!r}: needs a bytes body, {MEDIA_KIND} in "
                   f"{sorted(FORMATS)} and {MEDIA_FORMAT} one of its formats")
        return None
    fields = {}
    for field, cast in zip(MEDIA_FIELDS, (int, int, int, float, int, str)):
        try:
            fields[field] = cast(attrs.get(f"otel_rl.media.{field}", cast()))
        except (TypeError, ValueError):
            fields[field] = cast()
    fields["caption"] = fields["caption"][:1000]
    return Media(kind, fmt, body, **fields)


def _points(metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


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
