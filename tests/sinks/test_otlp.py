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
