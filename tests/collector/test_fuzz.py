"""Property-based fuzzing (hypothesis, fixed budget) of the OTLP decoders and the translation:
arbitrary bytes, arbitrary JSON, and mutated valid requests either decode and translate or raise
the documented decode errors; nothing else escapes, and nothing hangs."""

from __future__ import annotations

import json

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

from otel_rl.exporters.accumulate import Stream
from otel_rl.exporters.translate import translate_proto
from otel_rl_collector import wire
from test_receive import _request

BUDGET = settings(max_examples=400, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow])
EXPECTED = (DecodeError, ValueError, UnicodeDecodeError, RecursionError)


def _decode_and_translate(payload: bytes, content_type: str) -> None:
    try:
        request = wire.parse(payload, content_type, mpb.ExportMetricsServiceRequest)
    except EXPECTED:
        return
    translation = translate_proto(request)
    batch = Stream().admit(translation.batch)
    assert translation.rejected >= 0 and all(p.step >= 0 for p in batch.points)


@BUDGET
@given(st.binary(max_size=4096))
def test_random_bytes_as_protobuf(payload):
    _decode_and_translate(payload, wire.PROTOBUF)


@BUDGET
@given(st.binary(max_size=2048), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12))
def test_mutated_valid_requests(tail, flips):
    body = bytearray(_request("fuzz", 3, 1.0) + tail)
    for index, value in flips:
        body[index % len(body)] = value
    _decode_and_translate(bytes(body), wire.PROTOBUF)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(["resourceMetrics", "scopeMetrics", "metrics", "gauge", "sum", "dataPoints", "asDouble",
                         "asInt", "attributes", "key", "value", "stringValue", "intValue", "name", "histogram",
                         "bucketCounts", "explicitBounds", "aggregationTemporality", "isMonotonic",
                         "timeUnixNano", "exponentialHistogram", "positive", "scale", "traceId"]) | st.text(max_size=8),
        children, max_size=6),
    max_leaves=40)


@BUDGET
@given(json_values)
def test_arbitrary_json(document):
    _decode_and_translate(json.dumps(document).encode(), wire.JSON)
