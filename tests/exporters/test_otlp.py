"""The OTLP sink: the upstream exporter sends every step, DELTA, with the run id, to an OTLP/HTTP
endpoint (a minimal receiver started by the test on 127.0.0.1 that decodes the real protobuf)."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import otel_rl
from otel_rl import Pipeline

pb = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")


@pytest.fixture
def receiver():
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            requests.append((self.path, pb.ExportMetricsServiceRequest.FromString(body)))
            out = pb.ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_every_step_goes_out_over_otlp_http_with_delta_temporality(receiver, tmp_path):
    url, requests = receiver
    pipeline = Pipeline({"run_name": "otlp-run", "export_interval_s": 60,
                         "tensorboard": {"enabled": False},
                         "otlp": {"enabled": True, "protocol": "http/protobuf",
                                  "endpoint": url + "/v1/metrics"}})
    loss = pipeline.get_meter("t").create_gauge("loss")
    tokens = pipeline.get_meter("t").create_counter("tokens")
    for step in range(300):
        otel_rl.set_step(step)
        loss.set(step / 2)
        tokens.add(1)
    pipeline.shutdown()

    seen, temporalities, runs = {}, set(), set()
    for path, req in requests:
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
