"""OTLP requests built from points: metrics (:func:`encode_request`) and log records for texts,
samples and media (:func:`encode_logs_request`), for otel-rl's OTLP sink and the tests."""

from __future__ import annotations

import math
import struct
from typing import Any

from otel_rl.model.protowire import varint
from otel_rl.model.records import HistogramValue, Point
from otel_rl.model.semconv import (
    BATCH_ID,
    HPARAMS_METRIC,
    INDEX_ATTRIBUTE,
    KIND_ATTRIBUTE,
    MEDIA_FIELDS,
    MEDIA_FORMAT,
    MEDIA_KIND,
    ROWS_ATTRIBUTE,
    SENDER_ID,
    STEP_ATTRIBUTE,
)

_U64, _F64 = struct.Struct("<Q"), struct.Struct("<d")
#: ``KeyValue.key = "step"`` and the tag of its ``value``, serialized.
_STEP_KEY = b"\x0a" + varint(len(STEP_ATTRIBUTE)) + STEP_ATTRIBUTE.encode() + b"\x12"


def _any(value: Any, out) -> None:
    if value is None:
        return  # an empty AnyValue
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    else:
        out.string_value = str(value)


def _attrs(target, items) -> None:
    for key, value in items:
        kv = target.add()
        kv.key = key
        _any(value, kv.value)


def explicit_from(value: HistogramValue) -> tuple[list[float], list[int]]:
    """``(explicit_bounds, bucket_counts)`` covering ``value.buckets`` (gaps count 0)."""
    edges = sorted({e for left, right, _ in value.buckets for e in (left, right) if math.isfinite(e)})
    index = {e: i for i, e in enumerate(edges)}
    counts = [0] * (len(edges) + 1)
    for _, right, count in value.buckets:
        counts[index[right] if math.isfinite(right) else len(edges)] += count
    return edges, counts


def encode_request(points: list[Point], params, resource: dict[str, Any], batch_id: str, sender: str,
                   info: dict | None = None):
    """One ``ExportMetricsServiceRequest`` for points and params of one (run, rank); ``info``:
    each metric's (unit, description, instrumentation scope), as its instrument said."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    request = mpb.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    _attrs(rm.resource.attributes, [*resource.items(), (SENDER_ID, sender), (BATCH_ID, batch_id)])
    info = info or {}
    scopes: dict[str, Any] = {}

    def scope(name: str):
        sm = scopes.get(name)
        if sm is None:
            sm = scopes[name] = rm.scope_metrics.add()
            sm.scope.name = name
        return sm

    sm = scope("otel_rl")
    metrics: dict[tuple[str, str], Any] = {}
    numbers: dict[tuple[str, str], list[bytes]] = {}  # a number metric's data points, serialized
    step_fields: dict[int, bytes] = {}  # step -> its serialized ``step`` attribute field
    for p in points:
        metric = metrics.get((p.name, p.kind))
        if metric is None:
            unit, description, scope_name = info.get(p.name, ("", "", ""))
            metric = metrics[(p.name, p.kind)] = scope(scope_name or "otel_rl").metrics.add()
            metric.name, metric.unit, metric.description = p.name, unit, description
            if p.kind in ("counter", "sum"):
                metric.sum.aggregation_temporality = 1  # DELTA
                metric.sum.is_monotonic = p.kind == "counter"
            elif p.kind == "histogram":
                metric.histogram.aggregation_temporality = 1
        t = int(p.time * 1e9)
        if p.kind == "histogram":
            dp = metric.histogram.data_points.add()
            bounds, counts = explicit_from(p.value)
            dp.explicit_bounds.extend(bounds)
            dp.bucket_counts.extend(counts)
            dp.count, dp.sum = p.value.count, p.value.sum
            if not math.isnan(p.value.min):
                dp.min = p.value.min
            if not math.isnan(p.value.max):
                dp.max = p.value.max
            dp.start_time_unix_nano = dp.time_unix_nano = t
            _attrs(dp.attributes, [(STEP_ATTRIBUTE, p.step), *p.attributes])
            continue
        value = p.increment if p.increment is not None else p.value
        if value.__class__ is float and p.step.__class__ is int and not p.attributes and 0 <= t < 1 << 64:
            # the common case without a protobuf object: the bytes the runtime writes for it
            attribute = step_fields.get(p.step)
            if attribute is None:
                any_value = b"\x18" + varint(p.step)
                key_value = _STEP_KEY + varint(len(any_value)) + any_value
                attribute = step_fields[p.step] = b"\x3a" + varint(len(key_value)) + key_value
            stamp = _U64.pack(t)
            data = attribute + b"\x11" + stamp + b"\x19" + stamp + b"\x21" + _F64.pack(value)
        else:
            from opentelemetry.proto.metrics.v1.metrics_pb2 import NumberDataPoint

            dp = NumberDataPoint(as_double=value)
            dp.start_time_unix_nano = dp.time_unix_nano = t
            _attrs(dp.attributes, [(STEP_ATTRIBUTE, p.step), *p.attributes])
            data = dp.SerializeToString()
        numbers.setdefault((p.name, p.kind), []).append(b"\x0a" + varint(len(data)) + data)
    for key, parts in numbers.items():  # Gauge and Sum: data_points is field 1 of both
        metric = metrics[key]
        (metric.sum if key[1] in ("counter", "sum") else metric.gauge).MergeFromString(b"".join(parts))
    for rp in params:
        metric = sm.metrics.add()
        metric.name = HPARAMS_METRIC
        dp = metric.gauge.data_points.add()
        dp.as_double = 1.0
        dp.time_unix_nano = int(rp.time * 1e9)
        _attrs(dp.attributes, rp.params.items())
    return request


def encode_logs_request(points: list[Point], resource: dict[str, Any], batch_id: str, sender: str):
    """One ``ExportLogsServiceRequest`` for texts and tables of one (run, rank): a text is one
    log record (body: the text); a table one record per row (body: a map of its columns), each
    with the table's name as ``event_name``, the ``step``, and its index among the table's rows."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb

    request = lpb.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    _attrs(rl.resource.attributes, [*resource.items(), (SENDER_ID, sender), (BATCH_ID, batch_id)])
    sl = rl.scope_logs.add()
    sl.scope.name = "otel_rl"
    for p in points:
        t = int(p.time * 1e9)
        if p.kind == "text":
            record = sl.log_records.add()
            record.time_unix_nano = record.observed_time_unix_nano = t
            record.event_name = p.name
            record.body.string_value = p.value
            _attrs(record.attributes, [(STEP_ATTRIBUTE, p.step), (KIND_ATTRIBUTE, "text"), *p.attributes])
            continue
        if p.kind == "media":  # the encoded bytes as the body; kind, format and sizes as attributes
            media = p.value
            record = sl.log_records.add()
            record.time_unix_nano = record.observed_time_unix_nano = t
            record.event_name = p.name
            record.body.bytes_value = media.data
            _attrs(record.attributes, [(STEP_ATTRIBUTE, p.step), (KIND_ATTRIBUTE, "media"),
                                       (MEDIA_KIND, media.kind), (MEDIA_FORMAT, media.format),
                                       *((f"otel_rl.media.{f}", getattr(media, f)) for f in MEDIA_FIELDS
                                         if getattr(media, f)), *p.attributes])
            continue
        table = p.value
        for index, row in enumerate(table.rows):
            record = sl.log_records.add()
            record.time_unix_nano = record.observed_time_unix_nano = t
            record.event_name = p.name
            body = record.body.kvlist_value.values
            for column, value in zip(table.columns, row):
                kv = body.add()
                kv.key = column
                _any(value, kv.value)
            _attrs(record.attributes, [(STEP_ATTRIBUTE, p.step), (KIND_ATTRIBUTE, "table"),
                                       (INDEX_ATTRIBUTE, index), (ROWS_ATTRIBUTE, len(table.rows)), *p.attributes])
    return request


#: Point kinds sent as OTLP log records (texts, samples, media), not metrics.
LOGGED_KINDS = ("text", "table", "media")
#: Media bytes per logs request: under the collector's default ``max_request_bytes`` (8 MiB).
MAX_MEDIA_REQUEST_BYTES = 4 << 20
