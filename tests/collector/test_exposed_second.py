"""The collector exposed to a cluster, second pass: the findings of the second probe, each the way
it was found, on 127.0.0.1 with bounded loops. A legitimate client is served throughout."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import grpc
import pytest
from conftest import read_tensorboard_events
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb
from test_exposed import AUTH, TOKEN, _post, _request, _url

from otel_rl_collector import create


@pytest.fixture
def exposed(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    started = []

    def start(**sections):
        cfg = {"receivers": {"http": {"port": 0}, "grpc": {"port": 0}, "health": {"enabled": True, "port": 0}},
               "auth": {"token_file": str(token)}, "reduce": {"timeout_s": 1},
               "tensorboard": {"log_dir": str(tmp_path / "tb")}}
        for key, value in sections.items():
            cfg[key] = {**cfg.get(key, {}), **value}
        collector = create(cfg).start()
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.shutdown(timeout_s=5)  # a sink that never answers (MLflow at port 9) would hold it 30 s


def _silent(port: int, n: int, source: str = "127.0.0.2") -> list[socket.socket]:
    """``n`` TCP connections that send nothing (from another loopback address: another client)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:  # still open after the socket's timeout
        return False


def test_silent_connections_are_closed_and_never_take_the_port_or_the_probes(exposed):
    """256 silent connections used to take OTLP/HTTP and /health down for as long as they stayed
    open. Now one client gets at most max_connections_per_client of them, each is closed at
    header_timeout_s, and a legitimate client and the probes are served throughout."""
    c = exposed(limits={"header_timeout_s": 1.0, "max_connections_per_client": 64})
    socks = _silent(c.http_port, 256)
    try:
        started = time.monotonic()
        status, _ = _post(_url(c), _request("ok", 1, 1.5).SerializeToString(), AUTH)
        assert status == 200
        probe_port = next(r.port for r in c._receivers if r.kind == "health")
        with urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/health", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}
        assert all(_closed(s) for s in socks)  # past the cap at once, the rest at the deadline
        assert time.monotonic() - started < 8
        assert c.stats.by_reason.get("too_many_connections", 0) >= 256 - 64
        assert c.stats.by_reason.get("idle_connection", 0) >= 1
    finally:
        for s in socks:
            s.close()


def test_a_head_sent_byte_by_byte_is_closed_at_the_deadline(exposed):
    c = exposed(limits={"header_timeout_s": 1.0})
    (s,) = _silent(c.http_port, 1)
    try:
        started = time.monotonic()
        for byte in b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\n":
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        assert _closed(s) and time.monotonic() - started < 6
    finally:
        s.close()


def test_token_less_grpc_calls_that_never_send_their_message_stop_nothing(exposed):
    """Four (here 20) calls without a token that never send their message used to hold every
    gRPC worker; the token is now checked on the metadata, before the message is read."""
    c = exposed()
    channel = grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}")
    export = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
    stall = threading.Event()

    def never():
        stall.wait(30)
        yield b""

    try:
        hostile = [channel.stream_unary(export).future(never(), timeout=20) for _ in range(20)]
        codes = []
        for call in hostile:
            with pytest.raises(grpc.RpcError) as err:
                call.result(timeout=10)
            codes.append(err.value.code())
        # refused on the metadata; on a loaded machine grpc-core may refuse a stream before that
        # (RST_STREAM REFUSED_STREAM, UNAVAILABLE): refused either way, none of them waits
        assert set(codes) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE}, codes
        assert codes.count(grpc.StatusCode.UNAUTHENTICATED) >= 10, codes
        legit = channel.unary_unary(export)
        body = _request("grpc-ok", 1, 2.5).SerializeToString()
        legit(body, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=5)
    finally:
        stall.set()
        channel.close()


def test_two_authorization_headers_are_refused(exposed):
    c = exposed()
    with socket.create_connection(("127.0.0.1", c.http_port), timeout=10) as s:
        body = _request("two", 1, 1.0).SerializeToString()
        s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Authorization: Bearer wrong\r\nAuthorization: Bearer " + TOKEN.encode() +
                  b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert s.recv(4096).startswith(b"HTTP/1.1 401")


def test_health_details_only_for_an_authenticated_caller(exposed, tmp_path):
    c = exposed(mlflow={"enabled": True, "tracking_uri": "http://bob:hunter2@127.0.0.1:9/"})
    _post(_url(c), _request("cred", 1, 1.0).SerializeToString(), AUTH)
    deadline = time.monotonic() + 30
    while True:  # MLflow is unreachable: the sink retries and /health names it, to the operator
        request = urllib.request.Request(_url(c, "/health"), headers=AUTH)
        with urllib.request.urlopen(request, timeout=5) as r:
            details = json.loads(r.read())
        if details.get("failing_sinks"):
            break
        assert time.monotonic() < deadline, details
        time.sleep(0.2)
    assert "hunter2" not in json.dumps(details) and "***@127.0.0.1" in json.dumps(details)
    with urllib.request.urlopen(_url(c, "/health"), timeout=5) as r:  # anyone: the status only
        assert set(json.loads(r.read())) == {"status"}


def _logs(records: list[tuple[str, dict | str, dict]]) -> bytes:
    request = lpb.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "otel_rl.run.id", "bomb"
    scope = rl.scope_logs.add()
    for name, body, attributes in records:
        record = scope.log_records.add()
        record.event_name, record.time_unix_nano = name, 1_700_000_000_000_000_000
        if isinstance(body, str):
            record.body.string_value = body
        else:
            for key, value in body.items():
                item = record.body.kvlist_value.values.add()
                item.key, item.value.string_value = key, value
        for key, value in {"step": 1, **attributes}.items():
            attr = record.attributes.add()
            attr.key = key
            if isinstance(value, int):
                attr.value.int_value = value
            else:
                attr.value.string_value = value
    return request.SerializeToString()


def test_a_log_table_bomb_is_cut_to_the_limits(exposed, tmp_path):
    """4,000 records with one distinct key each used to become a 4,000 x 4,000 table (619 MB
    RSS, a 48 MB TensorBoard event). Past max_table_columns the records are refused in the
    partial success, the table written is bounded, and a text is cut to max_chars."""
    c = exposed(limits={"max_table_columns": 64})
    records = [("val/samples", {f"k{i}": "v"}, {}) for i in range(4000)]
    records.append(("notes", "x" * 50_000, {"otel_rl.kind": "text"}))
    status, body = _post(_url(c, "/v1/logs"), _logs(records), AUTH)
    assert status == 200
    response = lpb.ExportLogsServiceResponse.FromString(body)
    assert response.partial_success.rejected_log_records == 4000 - 64
    assert "max_table_columns" in response.partial_success.error_message
    c.shutdown()
    tb = tmp_path / "tb" / "bomb"
    size = sum(f.stat().st_size for f in tb.rglob("events.out.tfevents.*"))
    assert size < 1_000_000, size
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"tensors": 0})
    acc.Reload()
    (text,) = [e.tensor_proto.string_val[0] for e in acc.Tensors("notes/text_summary")]
    assert 10_000 <= len(text) < 10_100 and text.endswith(b"more characters]")
    (table,) = [e.tensor_proto.string_val[0].decode() for e in acc.Tensors("val/samples/text_summary")]
    assert table.splitlines()[0].count("|") == 64 + 1  # 64 columns


def test_a_flood_of_ids_from_one_sender_keeps_another_senders_resend_from_counting_twice(exposed, tmp_path):
    """A flood of 60,000 resource blocks with fresh ids from another sender used to push real ids
    out of the one 50,000-id window, so a resent counter batch counted twice (5/10/20 instead of
    5/10/15). Each sender now has its own window."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    c = exposed(reduce={"timeout_s": 0.2})

    def counter(step: int, increment: float, batch: str) -> bytes:  # as otel-rl's OTLP sink sends them
        request = mpb.ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        for key, value in (("otel_rl.run.id", "flood"), ("otel_rl.sender.id", "rank0"), ("otel_rl.batch.id", batch)):
            kv = rm.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        metric = rm.scope_metrics.add().metrics.add()
        metric.name = "tokens"
        metric.sum.is_monotonic, metric.sum.aggregation_temporality = True, 1  # delta
        dp = metric.sum.data_points.add()
        dp.as_double, dp.time_unix_nano, dp.start_time_unix_nano = increment, int(time.time() * 1e9), 1
        attr = dp.attributes.add()
        attr.key, attr.value.int_value = "step", step
        return request.SerializeToString()

    for step in (1, 2):
        assert _post(_url(c), counter(step, 5.0, f"b{step}"), AUTH)[0] == 200
    started = time.monotonic()
    for part in range(6):  # limits.max_resource_blocks per request: the flood comes in 6 requests
        flood = mpb.ExportMetricsServiceRequest()
        for i in range(10_000):
            rm = flood.resource_metrics.add()
            for key, value in (("otel_rl.run.id", "other"), ("otel_rl.sender.id", "attacker"),
                               ("otel_rl.batch.id", f"f{part}-{i}")):
                kv = rm.resource.attributes.add()
                kv.key, kv.value.string_value = key, value
            gauge = rm.scope_metrics.add().metrics.add()  # with data, so its id is remembered
            gauge.name = "x"
            dp = gauge.gauge.data_points.add()
            dp.as_double, dp.time_unix_nano = 1.0, 1
        assert _post(_url(c), flood.SerializeToString(), AUTH)[0] == 200
    assert time.monotonic() - started < 60  # duplicate checks are constant time
    assert _post(_url(c), counter(2, 5.0, "b2"), AUTH)[0] == 200  # rank0 resends batch b2
    assert _post(_url(c), counter(3, 5.0, "b3"), AUTH)[0] == 200
    c.shutdown()
    latest = dict(read_tensorboard_events(tmp_path / "tb" / "flood")["tokens"])  # a step's last value
    assert latest == {1: 5.0, 2: 10.0, 3: 15.0}


def test_silent_connections_to_the_prometheus_port_are_closed(tmp_path):
    from otel_rl.sinks.prometheus import PrometheusConfig, PrometheusExporter

    sink = PrometheusExporter(PrometheusConfig(port=0))
    try:
        before = threading.active_count()
        socks = _silent(sink.port, 300)  # one client: past its cap, closed at accept
        with urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/metrics", timeout=15) as r:
            assert r.status == 200  # the scraper, another client, is served
        assert threading.active_count() - before <= 8 + 1
        started = time.monotonic()
        assert all(_closed(s) for s in socks)  # the rest at the handler's timeout
        assert time.monotonic() - started < 15
    finally:
        for s in socks:
            s.close()
        sink.shutdown()


def test_a_request_that_decodes_into_too_much_is_refused_before_it_is_built(exposed):
    """8 MB of empty resource blocks grew to 2.5 GB; 63 KB of gzipped JSON to 2 GB."""
    import gzip

    import psutil

    c = exposed()
    rss = psutil.Process().memory_info().rss
    status, body = _post(_url(c), b"\x0a\x00" * 4_000_000, AUTH)  # 4M empty resource blocks
    assert status == 413 and b"max_resource_blocks" in body
    nested = gzip.compress(b'{"resourceMetrics": [' + b",".join([b'{"scopeMetrics": [{}]}'] * 400_000) + b"]}")
    assert len(nested) < 100_000
    status, body = _post(_url(c), nested, {**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 413 and (b"max_json_bytes" in body or b"max_request_objects" in body)
    assert psutil.Process().memory_info().rss - rss < 600 * 2**20
    assert _post(_url(c), _request("after", 1, 1.0).SerializeToString(), AUTH)[0] == 200


def test_content_length_with_chunked_is_refused(exposed):
    c = exposed()
    body = _request("smuggle", 1, 1.0).SerializeToString()
    with socket.create_connection(("127.0.0.1", c.http_port), timeout=10) as s:
        s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + hex(len(body))[2:].encode() + b"\r\n" + body + b"\r\n0\r\n\r\n")
        assert s.recv(4096).startswith((b"HTTP/1.1 400", b"HTTP/1.1 411"))


def test_sample_text_cannot_make_tensorboard_fetch_urls(tmp_path):
    """An <img> or a markdown image in a generation became a live tag in TensorBoard's Text tab."""
    from backends import TensorBoardServer

    import otel_rl

    otel_rl.init({"run_name": "xss", "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    otel_rl.log_samples([{"response": 'look <img src="http://127.0.0.1:9/x.png"> ![i](http://127.0.0.1:9/i.png) '
                                      "[click](http://127.0.0.1:9/)"}], step=0)
    assert otel_rl.shutdown()
    server = TensorBoardServer(tmp_path / "tb").start()
    try:
        deadline = time.monotonic() + 60
        while "samples/text_summary" not in server.get("/data/plugin/text/tags").get("xss", []):
            assert time.monotonic() < deadline
            time.sleep(1)
        (shown,) = server.get("/data/plugin/text/text", run="xss", tag="samples/text_summary")
        html = shown["text"]
        assert "<img" not in html and "<a " not in html and "127.0.0.1:9" in html, html
    finally:
        server.stop()


def test_a_dot_segment_in_a_name_does_not_cost_mlflow_the_batch(tmp_path, mlflow_server):
    from backends import read_mlflow

    import otel_rl

    otel_rl.init({"run_name": "dots", "tensorboard": {"enabled": False},
                  "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": f"dots-{tmp_path.name}"}})
    otel_rl.Logger  # noqa: B018 - the meter API next to it
    from opentelemetry import metrics

    meter = metrics.get_meter("t")
    odd, fine = meter.create_gauge("a/./b"), meter.create_gauge("loss")
    for step in range(3):
        otel_rl.set_step(step)
        odd.set(1.0)
        fine.set(float(step))
    assert otel_rl.shutdown(timeout_s=60)
    scalars = read_mlflow(mlflow_server.url, f"dots-{tmp_path.name}", "dots")["scalars"]
    assert scalars["loss"] == {0: 0.0, 1: 1.0, 2: 2.0} and sorted(scalars["a/_/b"]) == [0, 1, 2]


def test_the_span_queue_is_bounded_in_bytes_while_mlflow_hangs(exposed, monkeypatch):
    """With MLflow slow, 60 span requests took RSS from 182 to 607 MB: the queue admitted 1,000
    requests whatever their size. Now 1 MB requests get 503 once 32 MB wait."""
    import psutil
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
    from test_faults import HungServer

    hung = HungServer()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        c = exposed(mlflow_traces={"enabled": True, "tracking_uri": f"http://127.0.0.1:{hung.port}", "timeout_s": 30})
        spans = tpb.ExportTraceServiceRequest()
        scope = spans.resource_spans.add().scope_spans.add()
        for i in range(100):
            span = scope.spans.add()
            span.name, span.trace_id, span.span_id = "rollout", b"\1" * 16, i.to_bytes(8, "big")
            attr = span.attributes.add()
            attr.key, attr.value.string_value = "prompt", "x" * 10_000
        body = spans.SerializeToString()
        assert len(body) > 1_000_000
        rss = psutil.Process().memory_info().rss
        statuses = [_post(_url(c, "/v1/traces"), body, AUTH)[0] for _ in range(60)]
        assert statuses.count(200) <= 36 and statuses.count(503) >= 24, statuses  # 32 MiB, a few in flight
        assert psutil.Process().memory_info().rss - rss < 400 * 2**20
        assert _post(_url(c), _request("spans", 1, 1.0).SerializeToString(), AUTH)[0] == 200
    finally:
        hung.close()


def test_silent_tls_connects_are_closed_at_the_header_deadline(tmp_path, exposed):
    """Silent TLS connects cost about 300 KB each until asyncio's 60 s handshake timeout: 7,000
    of them OOM-killed the collector. The handshake now has limits.header_timeout_s."""
    from backends import make_certificates

    _, cert, key = make_certificates(tmp_path)
    c = exposed(tls={"cert_file": str(cert), "key_file": str(key)}, limits={"header_timeout_s": 1.0})
    socks = _silent(c.http_port, 50)
    try:
        started = time.monotonic()
        assert all(_closed(s) for s in socks)
        assert time.monotonic() - started < 8
    finally:
        for s in socks:
            s.close()


def test_a_step_in_other_digits_is_refused_not_placed_at_the_latest_step(exposed, tmp_path):
    """Found by a probe: step "１２" (full-width digits) landed at the run's latest step, a value
    where nobody logged one. A step attribute that is present but not a step is refused, with
    its reason, for metrics and for samples; a good step in the same request is kept."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    c = exposed()
    assert _post(_url(c), _request("digits", 4, 4.0).SerializeToString(), AUTH)[0] == 200
    for step in ("１２", "٣", "²", "-1"):
        status, body = _post(_url(c), _request("digits", step, 99.0).SerializeToString(), AUTH)
        response = mpb.ExportMetricsServiceResponse.FromString(body)
        assert status == 200 and response.partial_success.rejected_data_points == 1
        assert f"bad 'step' attribute {step!r}" in response.partial_success.error_message
    status, body = _post(_url(c, "/v1/logs"), _logs([("val/samples", {"q": "a"}, {"step": "１２"})]), AUTH)
    assert lpb.ExportLogsServiceResponse.FromString(body).partial_success.rejected_log_records == 1
    c.shutdown()
    assert read_tensorboard_events(tmp_path / "tb" / "digits")["loss"] == [(4, 4.0)]


def test_silent_tls_connects_are_capped_oldest_first_and_a_real_client_gets_through(tmp_path, exposed):
    """Found by a probe: 7,000 silent TLS connects, about 300 KB each before any handshake,
    OOM-killed the collector in 7.5 s; the header deadline alone lets thousands pile up in it.
    Past max_pending_handshakes the oldest is aborted at once, and a client that handshakes
    now is served although the silent ones keep coming."""
    import ssl

    from backends import make_certificates

    ca, cert, key = make_certificates(tmp_path)
    c = exposed(tls={"cert_file": str(cert), "key_file": str(key)},
                limits={"header_timeout_s": 60.0, "max_pending_handshakes": 40})
    socks = []
    try:
        for i in range(4):
            socks += _silent(c.http_port, 30, source=f"127.0.0.{2 + i}")
        time.sleep(0.5)
        context = ssl.create_default_context(cafile=str(ca))
        status, _ = _post(_url(c, scheme="https"), _request("tls", 1, 1.0).SerializeToString(), AUTH, context=context)
        assert status == 200
        for s in socks:
            s.settimeout(0.5)
        closed = sum(_closed(s) for s in socks)
        assert 120 - 40 <= closed < 120  # the newest 40 wait for their handshake (60 s), the rest are gone
        assert c.self_metrics()["rejected_by_reason"]["too_many_handshakes"] >= 80
    finally:
        for s in socks:
            s.close()
