"""The collector receives what the upstream OTel SDK exporters send (gRPC and HTTP) and the
opentelemetry-proto JSON examples, and refuses bad input with the OTLP status codes."""

from __future__ import annotations

import gzip
import json
import os
import random
import urllib.error
import urllib.request

import grpc
import pytest
from conftest import ROOT, read_tensorboard
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

import otel_rl
from otel_rl_collector import create

EXAMPLES = ROOT.parent / "shared" / "otlp-examples"


@pytest.fixture
def collector(tmp_path):
    c = create({"receivers": {"http": {"port": 0}, "grpc": {"port": 0}},
                "tensorboard": {"log_dir": str(tmp_path / "tb")},
                "limits": {"max_request_bytes": 256 * 1024, "max_decompressed_bytes": 1024 * 1024}}).start()
    yield c
    c.shutdown()


def _post(url, body: bytes, content_type="application/x-protobuf", headers=None):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _request(run="r", step=0, value=1.0, name="loss") -> bytes:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = mpb.ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="otel_rl.run.id", value=AnyValue(string_value=run)))
    m = rm.scope_metrics.add().metrics.add()
    m.name = name
    dp = m.gauge.data_points.add()
    dp.as_double = value
    dp.time_unix_nano = 1_700_000_000_000_000_000
    dp.attributes.append(KeyValue(key="step", value=AnyValue(int_value=step)))
    return req.SerializeToString()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_upstream_sdk_exporters_reach_tensorboard(tmp_path, collector, protocol):
    port = collector.http_port if protocol != "grpc" else collector.grpc_port
    endpoint = f"http://127.0.0.1:{port}"
    pipeline = otel_rl.Pipeline({"run_name": f"sdk-{protocol.split('/')[0]}", "export_interval_s": 0.2,
                                 "tensorboard": {"enabled": False},
                                 "otlp": {"enabled": True, "protocol": protocol, "endpoint": endpoint}})
    meter = pipeline.get_meter("t")
    loss, tokens, lat = meter.create_gauge("loss"), meter.create_counter("tokens"), meter.create_histogram("lat")
    for step in range(300):
        otel_rl.set_step(step)
        loss.set(step * 0.5)
        tokens.add(2)
        lat.record(step % 5)
    pipeline.shutdown()
    collector.shutdown()
    tb = read_tensorboard(tmp_path / "tb" / f"sdk-{protocol.split('/')[0]}")
    assert tb["scalars"]["loss"] == {s: s * 0.5 for s in range(300)}
    assert tb["scalars"]["tokens"] == {s: 2.0 * (s + 1) for s in range(300)}
    assert len(tb["histograms"]["lat"]) == 300
    assert collector.self_metrics()["received_points"] == 900


def test_opentelemetry_proto_json_examples(collector, tmp_path):
    if not EXAMPLES.is_dir():
        pytest.skip("../shared/otlp-examples is not beside the checkout")
    status, body, _ = _post(f"http://127.0.0.1:{collector.http_port}/v1/metrics",
                            (EXAMPLES / "metrics.json").read_bytes(), "application/json")
    assert status == 200, body
    response = json.loads(body)
    status, body, _ = _post(f"http://127.0.0.1:{collector.http_port}/v1/traces",
                            (EXAMPLES / "trace.json").read_bytes(), "application/json")
    assert status == 200, body
    collector.shutdown()
    scalars = read_tensorboard(tmp_path / "tb" / "my.service")["scalars"]
    assert scalars["my.counter/my.counter.attr:some value"] == {0: 5.0}
    assert "my.gauge/my.gauge.attr:some value" in scalars
    metrics = collector.self_metrics()
    # the example's summary metric is reported back as a partial success, not dropped silently
    rejected = response.get("partialSuccess", {}).get("rejectedDataPoints", 0)
    assert int(rejected) == metrics["rejected_points"]
    assert metrics["received_spans"] >= 1


def test_gzip_is_accepted(collector, tmp_path):
    status, _, _ = _post(f"http://127.0.0.1:{collector.http_port}/v1/metrics", gzip.compress(_request("gz", 3, 7.0)),
                         headers={"Content-Encoding": "gzip"})
    assert status == 200
    collector.shutdown()
    assert read_tensorboard(tmp_path / "tb" / "gz")["scalars"]["loss"] == {3: 7.0}


BAD_HTTP = [
    ("random bytes", lambda: os.urandom(512), {}, "application/x-protobuf", 400),
    ("truncated protobuf", lambda: _request()[:-7], {}, "application/x-protobuf", 400),
    ("wrong content type", lambda: _request(), {}, "text/plain", 415),
    ("bad json", lambda: b'{"resourceMetrics": [', {}, "application/json", 400),
    ("json array", lambda: b"[1, 2]", {}, "application/json", 400),
    ("huge body", lambda: b"x" * (300 * 1024), {}, "application/x-protobuf", 413),
    ("gzip bomb", lambda: gzip.compress(b"\0" * (8 * 1024 * 1024)), {"Content-Encoding": "gzip"},
     "application/x-protobuf", 413),
    ("bad gzip", lambda: b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"}, "application/x-protobuf", 400),
    ("unknown encoding", lambda: _request(), {"Content-Encoding": "br"}, "application/x-protobuf", 415),
]


@pytest.mark.parametrize("case", BAD_HTTP, ids=[c[0] for c in BAD_HTTP])
def test_bad_http_input_is_refused_and_the_next_good_request_lands(collector, tmp_path, case):
    _, make, headers, content_type, expected = case
    url = f"http://127.0.0.1:{collector.http_port}/v1/metrics"
    status, body, _ = _post(url, make(), content_type, headers)
    assert status == expected, body
    assert _post(url, _request("after", 1, 2.0))[0] == 200
    collector.shutdown()
    assert read_tensorboard(tmp_path / "tb" / "after")["scalars"]["loss"] == {1: 2.0}
    assert collector.self_metrics()["rejected_requests"] == 1


def test_fuzzed_payloads_never_crash_the_server(collector):
    rng = random.Random(1)
    url = f"http://127.0.0.1:{collector.http_port}/v1/metrics"
    good = _request("fuzz", 0, 1.0)
    statuses = set()
    for _ in range(200):
        body = bytearray(good)
        for _ in range(rng.randint(1, 8)):  # flip random bytes of a valid request
            body[rng.randrange(len(body))] = rng.randrange(256)
        statuses.add(_post(url, bytes(body))[0])
    assert statuses <= {200, 400}
    assert _post(url, good)[0] == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{collector.http_port}/health", timeout=5) as r:
        assert r.status == 200


def test_grpc_malformed_and_auth(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    c = create({"receivers": {"http": {"port": 0}, "grpc": {"port": 0}}, "auth": {"token_file": str(token)},
                "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}")
        export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        with pytest.raises(grpc.RpcError) as bad_token:
            export(_request(), metadata=[("authorization", "Bearer wrong")], timeout=5)
        assert bad_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as malformed:
            export(b"\xff\xff\xff", metadata=[("authorization", "Bearer s3cret")], timeout=5)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        response = mpb.ExportMetricsServiceResponse.FromString(
            export(_request("grpc-auth", 4, 1.5), metadata=[("authorization", "Bearer s3cret")], timeout=5))
        assert response.partial_success.rejected_data_points == 0
        http = f"http://127.0.0.1:{c.http_port}/v1/metrics"
        assert _post(http, _request())[0] == 401
        assert _post(http, _request(), headers={"Authorization": "Bearer s3cret"})[0] == 200
        channel.close()
    finally:
        c.shutdown()
    assert read_tensorboard(tmp_path / "tb" / "grpc-auth")["scalars"]["loss"] == {4: 1.5}
    assert c.self_metrics()["rejected_by_reason"]["unauthenticated"] == 2


def test_partial_success_reports_rejected_points(collector):
    req = mpb.ExportMetricsServiceRequest.FromString(_request("ps", 0, 1.0))
    m = req.resource_metrics[0].scope_metrics[0].metrics.add()
    m.name = "bad_sum"
    m.sum.data_points.add().as_double = 1.0  # temporality unspecified: invalid per the spec
    status, body, _ = _post(f"http://127.0.0.1:{collector.http_port}/v1/metrics", req.SerializeToString())
    assert status == 200
    response = mpb.ExportMetricsServiceResponse.FromString(body)
    assert response.partial_success.rejected_data_points == 1
    assert "temporality" in response.partial_success.error_message
