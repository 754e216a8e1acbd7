"""Property-based fuzzing (hypothesis, fixed budget) of the OTLP decoders and the translation:
arbitrary bytes, arbitrary JSON, and mutated valid requests either decode and translate or raise
the documented decode errors; nothing else escapes, and nothing hangs."""

from __future__ import annotations

import json

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from test_receive import _request

from otel_rl.model.decode import translate_proto
from otel_rl.route.admit import Stream
from otel_rl_collector import wire

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


# -- the columnar reading of gauges (otel_rl.model.bulk) against the general path ----------

def _both_paths(payload: bytes):
    """(points, rejected, reasons) of ``payload`` through the columnar path (when it applies)
    and through the general one only."""
    import otel_rl.model.decode as translate

    results = []
    for minimum in (translate.BULK_MIN_POINTS, 10**9):
        request = mpb.ExportMetricsServiceRequest()
        request.ParseFromString(payload)
        saved, translate.BULK_MIN_POINTS = translate.BULK_MIN_POINTS, minimum
        try:
            t = translate_proto(request)
        finally:
            translate.BULK_MIN_POINTS = saved
        results.append((t.batch.points, t.rejected, t.reasons))
    return results


def _same(a, b) -> bool:
    import math

    def norm(points):
        return [(p.run, p.name, p.step, "nan" if isinstance(p.value, float) and math.isnan(p.value) else p.value,
                 p.time, p.kind, p.attributes, p.rank) for p in points]
    return norm(a[0]) == norm(b[0]) and a[1:] == b[1:]


step_values = st.one_of(st.integers(0, 127), st.integers(0, 2**20), st.integers(0, 2**63 - 1),
                        st.integers(-5, -1))
gauge_points = st.lists(st.tuples(
    step_values,
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**63, 2**63 - 1)),
    st.integers(0, 2**64 - 1),  # time (0: not sent)
    st.integers(0, 2**64 - 1) | st.just(0),  # start time
    st.sampled_from(["step-only", "step-only", "step-only", "extra", "string-step", "none", "flags"])),
    min_size=0, max_size=40)


def _gauge_request(resources) -> bytes:
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    request = mpb.ExportMetricsServiceRequest()
    for run, rank, metrics in resources:
        rm = request.resource_metrics.add()
        rm.resource.attributes.add(key="otel_rl.run.id").value.string_value = run
        rm.resource.attributes.add(key="otel_rl.rank").value.int_value = rank
        sm = rm.scope_metrics.add()
        for name, points in metrics:
            metric = sm.metrics.add(name=name)
            metric.gauge.SetInParent()
            for step, value, t, start, shape in points:
                dp = metric.gauge.data_points.add(time_unix_nano=t, start_time_unix_nano=start)
                if isinstance(value, float):
                    dp.as_double = value
                else:
                    dp.as_int = value
                if shape == "string-step":
                    dp.attributes.add(key="step").value.string_value = str(step)
                elif shape != "none":
                    dp.attributes.add(key="step").value.int_value = step
                if shape == "extra":
                    dp.attributes.add(key="phase").value.string_value = "eval"
                if shape == "flags":
                    dp.flags = 1
                assert isinstance(dp, metrics_pb2.NumberDataPoint)
    return request.SerializeToString()


simple_points = st.lists(st.tuples(
    step_values.filter(lambda s: s >= 0),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**63, 2**63 - 1)),
    st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1) | st.just(0), st.just("step-only")),
    min_size=0, max_size=40)
resources = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-1, 3),
                               st.lists(st.tuples(st.sampled_from(["m0", "m1", "loss/x"]),
                                                  simple_points | simple_points | gauge_points),
                                        min_size=1, max_size=4)), min_size=1, max_size=3)


simple_resources = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-1, 3),
                                      st.lists(st.tuples(st.sampled_from(["m0", "m1", "loss/x"]), simple_points),
                                               min_size=1, max_size=4)), min_size=1, max_size=3)


@BUDGET
@given(resources | simple_resources)
def test_gauges_read_as_columns_equal_the_general_path(generated):
    payload = _gauge_request(generated)
    bulk, general = _both_paths(payload)
    assert _same(bulk, general), (generated, bulk[0][:5], general[0][:5])


@BUDGET
@given(resources, st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_gauge_requests_read_as_columns_equal_the_general_path(generated, flips):
    body = bytearray(_gauge_request(generated))
    for index, value in flips:
        body[index % len(body)] = value
    try:
        wire.parse(bytes(body), wire.PROTOBUF, mpb.ExportMetricsServiceRequest)
    except EXPECTED:
        return
    bulk, general = _both_paths(bytes(body))
    assert _same(bulk, general)


def test_the_columnar_path_is_taken_for_the_common_shape():
    """The equality tests above would pass with the fast path never taken: it is taken for what
    the SDK sends (one gauge per name, a step attribute per point)."""
    import otel_rl.model.decode as translate

    payload = _gauge_request([("run", 0, [(f"m{i}", [(s, float(s), 10**18 + s, 0, "step-only")
                                                       for s in range(200)]) for i in range(3)])])
    request = mpb.ExportMetricsServiceRequest()
    request.ParseFromString(payload)
    metrics = [m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    block = translate._bulk_gauges("run", 0, metrics)
    assert block is not None and len(block) == 600
    points = block.points()
    assert [(p.step, p.name) for p in points[:4]] == [(0, "m0"), (0, "m1"), (0, "m2"), (1, "m0")]
    # one sender's request: the batch carries the columns, and its points are theirs
    batch = translate_proto(request).batch
    assert batch.gauge_columns() is not None and batch.point_count() == 600
    assert batch.points == points and batch.gauge_columns() is None
