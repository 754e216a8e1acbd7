"""The OTLP sink: the upstream exporters send every step (DELTA) and the spans, with the run id,
to an OTLP/HTTP endpoint (a receiver started by the test on 127.0.0.1 that decodes the protobuf)."""

from __future__ import annotations

import otel_rl
from otel_rl import Pipeline


def test_every_step_goes_out_over_otlp_http_with_delta_temporality(otlp_receiver):
    pipeline = Pipeline({"run_name": "otlp-run", "export_interval_s": 60,
                         "tensorboard": {"enabled": False},
                         "otlp": {"enabled": True, "protocol": "http/protobuf", "endpoint": otlp_receiver.url}})
    loss = pipeline.get_meter("t").create_gauge("loss")
    tokens = pipeline.get_meter("t").create_counter("tokens")
    for step in range(300):
        otel_rl.set_step(step)
        loss.set(step / 2)
        tokens.add(1)
    pipeline.shutdown()

    seen, temporalities, runs = {}, set(), set()
    for path, req in otlp_receiver.requests:
        assert path == "/v1/metrics"
        for rm in req.resource_metrics:
            runs |= {a.value.string_value for a in rm.resource.attributes if a.key == "otel_rl.run.id"}
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == "tokens":
                        temporalities.add(m.sum.aggregation_temporality)
                    if m.name != "loss":
                        continue
                    for dp in m.gauge.data_points:
                        step = next(a.value.int_value for a in dp.attributes if a.key == "step")
                        seen[step] = dp.as_double
    assert seen == {s: s / 2 for s in range(300)}
    assert runs == {"otlp-run"}
    assert temporalities == {1}  # AGGREGATION_TEMPORALITY_DELTA


def _reference_request(points, resource, batch_id, sender):
    """The request as the protobuf runtime builds it, a data point at a time (what the encoder did
    before it wrote plain number points as bytes)."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    from otel_rl.sinks.otlp_encode import _attrs

    request = mpb.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    _attrs(rm.resource.attributes, [*resource.items(), ("otel_rl.sender.id", sender), ("otel_rl.batch.id", batch_id)])
    sm = rm.scope_metrics.add()
    sm.scope.name = "otel_rl"
    metrics = {}
    for p in points:
        metric = metrics.get((p.name, p.kind))
        if metric is None:
            metric = metrics[(p.name, p.kind)] = sm.metrics.add(name=p.name)
            if p.kind in ("counter", "sum"):
                metric.sum.aggregation_temporality = 1
                metric.sum.is_monotonic = p.kind == "counter"
        dp = (metric.sum if p.kind in ("counter", "sum") else metric.gauge).data_points.add()
        dp.as_double = p.increment if p.increment is not None else p.value
        dp.start_time_unix_nano = dp.time_unix_nano = int(p.time * 1e9)
        _attrs(dp.attributes, [("step", p.step), *p.attributes])
    return request


def test_number_points_written_as_bytes_are_the_messages_the_runtime_builds():
    """The encoder writes plain number points (a float, a step, no other attribute) as bytes: the
    request equals the one built a data point at a time, for generated points of every shape,
    and the collector's decoder reads the same points back."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from otel_rl.model.decode import translate_proto
    from otel_rl.model.records import Point
    from otel_rl.model.semconv import BATCH_ID, SENDER_ID
    from otel_rl.sinks.otlp_encode import encode_request

    assert (SENDER_ID, BATCH_ID) == ("otel_rl.sender.id", "otel_rl.batch.id")
    kinds = st.sampled_from(["gauge", "gauge", "counter", "sum"])
    values = st.one_of(st.floats(allow_nan=False), st.integers(-2**53, 2**53))
    points = st.lists(st.builds(
        lambda name, kind, step, value, time, attributes: Point(
            "r", name, step, value if kind == "gauge" else 0.0, time, kind, attributes,
            increment=None if kind == "gauge" else (float(value) if isinstance(value, int) else value)),
        st.sampled_from(["loss", "kl", "tokens"]), kinds, st.integers(-1, 2**62), values,
        st.floats(0, 4e9), st.sampled_from([(), (), (("phase", "eval"),)])), max_size=30)

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(points)
    def check(generated):
        resource = {"otel_rl.run.id": "r", "otel_rl.rank": 1}
        built = encode_request(generated, [], resource, "b1", "s1")
        assert built == _reference_request(generated, resource, "b1", "s1")
        assert built.SerializeToString() == _reference_request(generated, resource, "b1", "s1").SerializeToString()
        if generated and all(p.kind == "gauge" for p in generated):
            back = translate_proto(built).batch.points
            assert sorted((p.name, p.step, p.value, p.attributes) for p in back) == sorted(
                (p.name, p.step, float(p.value), p.attributes) for p in generated)

    check()
