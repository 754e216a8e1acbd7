"""The collector exposed to a cluster: hostile and broken clients on 127.0.0.1 (bounded loops).
Each test asserts that a legitimate client is still served and that nothing acknowledged is lost."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from backends import free_port, make_certificates
from conftest import read_tensorboard, read_tensorboard_events
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

from otel_rl_collector import create

TOKEN = "s3cret"


def _request(run: str, step, value: float, name: str = "loss") -> mpb.ExportMetricsServiceRequest:
    request = mpb.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    kv = rm.resource.attributes.add()
    kv.key, kv.value.string_value = "otel_rl.run.id", run
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = name
    dp = metric.gauge.data_points.add()
    dp.as_double, dp.time_unix_nano = value, int(time.time() * 1e9)
    attr = dp.attributes.add()
    attr.key = "step"
    if isinstance(step, str):
        attr.value.string_value = step
    else:
        attr.value.int_value = step
    return request


def _post(url: str, body: bytes, headers: dict | None = None, context=None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-protobuf", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def collector(tmp_path, request):
    extra = getattr(request, "param", {})
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    cfg = {"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}}, "auth": {"token_file": str(token)},
           "reduce": {"timeout_s": 1}, "tensorboard": {"log_dir": str(tmp_path / "tb")}}
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    c = create(cfg).start()
    yield c
    c.shutdown()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _url(c, path="/v1/metrics", scheme="http"):
    return f"{scheme}://127.0.0.1:{c.http_port}{path}"


def test_auth_is_checked_before_the_body_is_read(collector):
    """A client with a wrong token that declares 8 MB gets 401 before sending any of it, and a
    hundred of them hold no memory; the legitimate client is served meanwhile."""
    socks = []
    try:
        for i in range(100):  # 50 clients (loopback addresses), 2 connections each
            s = socket.create_connection(("127.0.0.1", collector.http_port), timeout=10,
                                         source_address=(f"127.0.0.{2 + i % 50}", 0))
            s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                      b"Authorization: Bearer wrong\r\nContent-Length: 8000000\r\n\r\n")
            socks.append(s)
        for s in socks:
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 401"), head[:100]
        status, _ = _post(_url(collector), _request("ok", 1, 1.5).SerializeToString(), AUTH)
        assert status == 200
    finally:
        for s in socks:
            s.close()
    assert collector.self_metrics()["rejected_by_reason"]["unauthenticated"] == 100


def test_lowercase_bearer_and_optional_auth_on_metrics(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    c = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                "auth": {"token_file": str(token), "metrics": True},
                "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    try:
        assert _post(_url(c), _request("r", 1, 1.0).SerializeToString(), {"Authorization": f"bearer {TOKEN}"})[0] == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(_url(c, "/metrics"), timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(_url(c, "/metrics"), headers=AUTH)
        with urllib.request.urlopen(request, timeout=5) as r:
            assert b"otel_rl_collector_received_points_total" in r.read()
    finally:
        c.shutdown()


def test_an_empty_token_file_is_a_startup_error(tmp_path):
    (tmp_path / "token").write_text("\n")
    (tmp_path / "c.yaml").write_text(f"auth: {{token_file: {tmp_path / 'token'}}}\n")
    proc = subprocess.run([sys.executable, "-m", "otel_rl.cli", "collector", "--config", str(tmp_path / "c.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is empty; auth would be off" in proc.stderr


def test_chunked_bodies_are_accepted_under_the_same_limit(tmp_path):
    c = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                "limits": {"max_request_bytes": 64 * 1024},
                "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    try:
        body = _request("chunked", 3, 0.25).SerializeToString()

        def chunks(data, n=7):
            for i in range(0, len(data), n):
                yield data[i:i + n]

        conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=10)
        conn.request("POST", "/v1/metrics", body=chunks(body), encode_chunked=True,
                     headers={"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        conn.close()
        # over the limit without a Content-Length: 413 once the chunks pass it
        with socket.create_connection(("127.0.0.1", c.http_port), timeout=10) as s:
            big = b"\0" * 70_000
            s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(big):x}\r\n".encode() + big + b"\r\n0\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 413")
    finally:
        c.shutdown()
    assert read_tensorboard(tmp_path / "tb" / "chunked")["scalars"]["loss"] == {3: 0.25}


@pytest.mark.parametrize("collector", [{"limits": {"read_timeout_s": 1}}], indirect=True)
def test_a_stalled_body_times_out_and_others_are_served(collector):
    s = socket.create_connection(("127.0.0.1", collector.http_port), timeout=10)
    try:
        s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n".encode() + b"\0" * 10)
        assert _post(_url(collector), _request("ok", 1, 1.0).SerializeToString(), AUTH)[0] == 200
        started = time.monotonic()
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5, head[:100]
    finally:
        s.close()


@pytest.mark.parametrize("collector", [{"limits": {"max_connections": 5, "idle_timeout_s": 2}}], indirect=True)
def test_connection_limit_and_idle_timeout(collector):
    idle = []
    try:
        for _ in range(6):  # keep-alive connections left open after one request each
            conn = http.client.HTTPConnection("127.0.0.1", collector.http_port, timeout=10)
            conn.request("GET", "/health")
            conn.getresponse().read()
            idle.append(conn)
        status, _ = _post(_url(collector), _request("ok", 1, 1.0).SerializeToString(), AUTH)
        assert status == 503
        time.sleep(3.5)  # idle connections are closed after idle_timeout_s
        status, _ = _post(_url(collector), _request("ok", 2, 1.0).SerializeToString(), AUTH)
        assert status == 200
    finally:
        for conn in idle:
            conn.close()


def test_tls_handshakes_do_not_block_the_receiver(tmp_path):
    """Twenty connections that never send a ClientHello: /health and OTLP still answer at once."""
    ca, cert, key = make_certificates(tmp_path)
    c = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                "tls": {"cert_file": str(cert), "key_file": str(key)},
                "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    silent = [socket.create_connection(("127.0.0.1", c.http_port), timeout=10) for _ in range(20)]
    try:
        context = ssl.create_default_context(cafile=str(ca))
        started = time.monotonic()
        with urllib.request.urlopen(_url(c, "/health", "https"), timeout=5, context=context) as r:
            assert r.status == 200
        status, _ = _post(_url(c, scheme="https"), _request("tls", 1, 2.0).SerializeToString(), context=context)
        assert status == 200 and time.monotonic() - started < 3
    finally:
        for s in silent:
            s.close()
        c.shutdown()


def test_bad_steps_and_histogram_bombs_are_partial_successes(collector, tmp_path):
    request = _request("bad", "²", 1.0)  # a Unicode digit: not a step
    good = _request("bad", 4, 4.0).resource_metrics[0].scope_metrics[0].metrics[0]
    request.resource_metrics[0].scope_metrics[0].metrics.append(good)
    sm = request.resource_metrics[0].scope_metrics[0]
    bomb = sm.metrics.add()
    bomb.name = "bomb"
    bomb.exponential_histogram.aggregation_temporality = 1
    dp = bomb.exponential_histogram.data_points.add()
    dp.scale, dp.count = 0, 1
    dp.positive.bucket_counts.extend([0] * 1_000_000)
    wild = sm.metrics.add()
    wild.name = "wild"
    wild.exponential_histogram.aggregation_temporality = 1
    dp = wild.exponential_histogram.data_points.add()
    dp.scale, dp.count = 20, 1
    dp.positive.offset = 2**31 - 1000
    dp.positive.bucket_counts.extend([1])
    for i in range(60):  # 60 x 4,000 buckets: each point within its limit, the request over its budget
        many = sm.metrics.add()
        many.name = f"many{i}"
        many.histogram.aggregation_temporality = 1
        dp = many.histogram.data_points.add()
        dp.count = 1
        dp.explicit_bounds.extend(float(b) for b in range(3999))
        dp.bucket_counts.extend([0] * 3999 + [1])
    body = gzip.compress(request.SerializeToString())
    assert len(body) < 1_000_000
    status, payload = _post(_url(collector), body, {**AUTH, "Content-Encoding": "gzip"})
    assert status == 200
    response = mpb.ExportMetricsServiceResponse.FromString(payload)
    assert response.partial_success.rejected_data_points == 3 + 10  # the bad step; 50 x 4,000 fit in 200,000
    assert "1000000 buckets" in response.partial_success.error_message
    assert "more than 200000 histogram buckets in one request" in response.partial_success.error_message
    assert "out of range" in response.partial_success.error_message
    collector.shutdown()
    scalars = read_tensorboard(tmp_path / "tb" / "bad")["scalars"]
    assert scalars["loss"][4] == 4.0 and "bomb/count" not in scalars


def test_a_point_with_too_many_attributes_is_refused(collector, tmp_path):
    request = _request("wide", 1, 1.0)
    request.resource_metrics[0].scope_metrics[0].metrics.append(_request("wide", 2, 2.0).resource_metrics[0]
                                                                .scope_metrics[0].metrics[0])
    dp = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0]
    for i in range(200):
        kv = dp.attributes.add()
        kv.key, kv.value.string_value = f"a{i}", "v"
    status, payload = _post(_url(collector), request.SerializeToString(), AUTH)
    response = mpb.ExportMetricsServiceResponse.FromString(payload)
    assert status == 200 and response.partial_success.rejected_data_points == 1
    assert "more than 128 attributes" in response.partial_success.error_message
    collector.shutdown()
    assert read_tensorboard(tmp_path / "tb" / "wide")["scalars"]["loss"] == {2: 2.0}


def test_every_gzip_member_is_read(collector, tmp_path):
    """Concatenated protobuf messages merge; so do two gzip members of one body."""
    body = gzip.compress(_request("multi", 1, 1.0).SerializeToString()) + \
        gzip.compress(_request("multi", 2, 2.0).SerializeToString())
    assert _post(_url(collector), body, {**AUTH, "Content-Encoding": "gzip"})[0] == 200
    collector.shutdown()
    assert read_tensorboard(tmp_path / "tb" / "multi")["scalars"]["loss"] == {1: 1.0, 2: 2.0}


def test_prometheus_output_is_valid_whatever_clients_send(tmp_path):
    """Hostile names and attributes (an empty name, an attribute named `run` or `le`, two keys
    that map to one label, one family with two types): `promtool check metrics` passes."""
    from otel_rl.model.records import Batch, HistogramValue, Point
    from otel_rl.sinks.prometheus import PrometheusConfig, PrometheusExporter

    hist = HistogramValue(2, 3.0, 1.0, 2.0, ((0.0, 1.0, 1), (1.0, 2.0, 1)))
    exporter = PrometheusExporter(PrometheusConfig(enabled=True), serve=False)
    exporter.write(Batch([
        Point("r", "", 1, 1.0, 1.0),
        Point("r", "x", 1, 1.0, 1.0, attributes=(("run", "other"),)),
        Point("r", "h", 1, hist, 1.0, "histogram", (("le", "5"),)),
        Point("r", "y", 1, 1.0, 1.0, attributes=(("a.b", "1"), ("a_b", "2"))),
        Point("r", "z", 1, 1.0, 1.0),
        Point("r", "z", 1, hist, 1.0, "histogram"),
        Point("r", "c_total", 1, 1.0, 1.0),
        Point("r", "c", 1, 5.0, 1.0, "counter", increment=5.0),
        Point("r", "1bad name\n", 1, 1.0, 1.0, attributes=(("", "v"), ("__x", "y"))),
    ]))
    text = exporter.render()
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    # exit 3: lint findings only (e.g. a user's gauge named "c_total"); a parse error is exit 1
    assert proc.returncode in (0, 3) and "error" not in proc.stderr, proc.stdout + proc.stderr + text
    assert "_distribution" not in proc.stderr and "should not include type" not in proc.stderr
    assert 'x{run="r",attr_run="other"} 1.0' in text
    assert exporter.renamed >= 3


def test_the_upstream_collector_as_a_non_python_client(tmp_path):
    """The upstream OpenTelemetry Collector's otlp_http exporter (Go), protobuf and JSON, into
    our receiver: every point arrives."""
    otelcol = Path(__file__).resolve().parents[3] / "shared" / "tools" / "otelcol" / "otelcol"
    if not otelcol.exists():
        pytest.skip(f"the upstream collector is not at {otelcol}")
    import otel_rl

    c = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    procs = []
    try:
        for encoding in ("proto", "json"):
            port = free_port()
            cfg = tmp_path / f"relay-{encoding}.yaml"
            cfg.write_text(json.dumps({
                "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
                "exporters": {"otlp_http": {"endpoint": f"http://127.0.0.1:{c.http_port}", "encoding": encoding}},
                "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["otlp_http"]},
                                          "logs": {"receivers": ["otlp"], "exporters": ["otlp_http"]}},
                            "telemetry": {"metrics": {"level": "none"}}}}))
            procs.append(subprocess.Popen([str(otelcol), "--config", str(cfg)], stdout=subprocess.DEVNULL,
                                          stderr=open(tmp_path / f"otelcol-{encoding}.log", "ab")))
            pipeline = otel_rl.Pipeline({"run_name": f"via-go-{encoding}", "tensorboard": {"enabled": False},
                                         "otlp": {"enabled": True, "protocol": "grpc",
                                                  "endpoint": f"http://127.0.0.1:{port}"}})
            gauge = pipeline.get_meter("t").create_gauge("loss")
            for step in range(5):
                pipeline.set_step(step)
                gauge.set(step / 2)
            pipeline.log_samples([{"prompt": "p", "reward": 1.0}], step=4, name="samples")
            assert pipeline.shutdown(timeout_s=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and c.self_metrics()["received_log_records"] < 2:
            time.sleep(0.2)
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        c.shutdown()
    for encoding in ("proto", "json"):
        tb = read_tensorboard(tmp_path / "tb" / f"via-go-{encoding}")
        assert tb["scalars"]["loss"] == {s: s / 2 for s in range(5)}, encoding
        assert "samples/text_summary" in tb["tensors"]


def test_memory_stays_bounded_under_unauthenticated_bodies(tmp_path):
    """A collector in a memory-limited child process (2 GiB of address space): 100 clients
    with a wrong token each sending 1 MB of an 8 MB body leave its RSS within 100 MB of where it
    started, and it keeps serving."""
    import psutil

    token = tmp_path / "token"
    token.write_text(TOKEN)
    port = free_port()
    (tmp_path / "c.yaml").write_text(f"receivers: {{http: {{port: {port}}}, grpc: {{enabled: false}}}}\n"
                                     f"auth: {{token_file: {token}}}\ntensorboard: {{log_dir: {tmp_path / 'tb'}}}\n")
    import resource

    limit = 2 << 30  # address space: a collector that tried to buffer the bodies would die here
    proc = subprocess.Popen([sys.executable, "-m", "otel_rl.cli", "collector", "--config", str(tmp_path / "c.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert "ready" in proc.stdout.readline()
    try:
        rss0 = psutil.Process(proc.pid).memory_info().rss
        socks = []
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer no\r\n"
                      b"Content-Length: 8000000\r\n\r\n")
            try:
                s.sendall(os.urandom(1 << 20))
            except OSError:
                pass  # refused and closed: what should happen
            socks.append(s)
        time.sleep(1)
        grown = psutil.Process(proc.pid).memory_info().rss - rss0
        for s in socks:
            s.close()
        assert grown < 100e6, f"RSS grew {grown / 1e6:.0f} MB"
        assert _post(f"http://127.0.0.1:{port}/v1/metrics", _request("ok", 1, 1.0).SerializeToString(),
                     AUTH)[0] == 200
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)


def test_swanlab_interleaved_runs_keep_their_own_experiments(tmp_path):
    """Batches of two runs interleaving (a collector serving two jobs): each run resumes its own
    SwanLab experiment (2 experiment ids, not one per switch), every step once."""
    from backends import _swanlab_experiments, read_counts

    from otel_rl.model.records import Batch, Point
    from otel_rl.sinks.swanlab import SwanlabConfig, SwanlabExporter

    sink = SwanlabExporter(SwanlabConfig(enabled=True, mode="offline", logdir=str(tmp_path / "sl"), project="p"))
    try:
        for step in range(10):
            for run in ("job-a", "job-b"):
                sink.write(Batch([Point(run, "loss", step, float(step), time.time())]))
    finally:
        sink.close()
    ids: dict[str, set] = {}
    for run_dir, name, _ in _swanlab_experiments(tmp_path / "sl"):
        ids.setdefault(name, set()).add(Path(run_dir).name.rsplit("-", 1)[-1])
    assert {name: len(found) for name, found in ids.items()} == {"job-a": 1, "job-b": 1}
    for run in ("job-a", "job-b"):
        assert read_counts("swanlab", tmp_path, run)["loss"] == {s: 1 for s in range(10)}
    assert sink.resumed_experiments == 18  # 20 switches, the first of each run starts it


@pytest.mark.parametrize("spooled", [False, True])
def test_tensorboard_keeps_at_most_max_open_files_and_loses_nothing(tmp_path, spooled):
    """300 runs written round-robin with room for 5 open event files: files are closed and
    reopened (appended to), the descriptors stay bounded, and every step of every run is there
    exactly once, with the run's end status."""
    import psutil
    from conftest import exactly_once

    from otel_rl.model.records import Batch, Point
    from otel_rl.sinks.tensorboard import TensorBoardConfig, TensorBoardExporter

    sink = TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path / "tb"), max_open_files=5))
    if spooled:
        sink.bind_spool("spool-1", None)
    fds = psutil.Process().num_fds()
    most = 0
    for step in range(3):
        for r in range(300):
            sink.write(Batch([Point(f"run-{r}", "loss", step, r + step / 10, time.time())]))
            most = max(most, psutil.Process().num_fds() - fds)
    state = sink.checkpoint_state()
    sink.close()
    assert most <= 6 and sink.closed_files > 800
    assert len(state["files"]) == 300
    for r in (0, 150, 299):
        events = read_tensorboard_events(tmp_path / "tb" / f"run-{r}")
        assert exactly_once(events["loss"]) == pytest.approx({s: r + s / 10 for s in range(3)})
        assert "_hparams_/session_end_info" in read_tensorboard(tmp_path / "tb" / f"run-{r}")["tensors"]


def test_ranks_outside_the_world_are_refused_and_late_steps_reduce_once(collector, tmp_path):
    """One request claiming ranks 0..4999 of a world of 2 is answered at once (5000 refused, a
    partial success); 2 x 3000 late values of real ranks cost one correction per step."""
    def ranked(rank: int, world: int, step: int, value: float, request=None):
        request = request or mpb.ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        for key, v in (("otel_rl.run.id", "w"), ("otel_rl.rank", rank), ("otel_rl.world_size", world)):
            kv = rm.resource.attributes.add()
            kv.key = key
            if isinstance(v, str):
                kv.value.string_value = v
            else:
                kv.value.int_value = v
        metric = rm.scope_metrics.add().metrics.add()
        metric.name = "loss"
        dp = metric.gauge.data_points.add()
        dp.as_double, dp.time_unix_nano = value, int(time.time() * 1e9)
        attr = dp.attributes.add()
        attr.key, attr.value.int_value = "step", step
        return request

    for rank in (0, 1):  # step 1 complete and emitted
        assert _post(_url(collector), ranked(rank, 2, 1, 1.0).SerializeToString(), AUTH)[0] == 200
    hostile = mpb.ExportMetricsServiceRequest()
    for rank in range(2, 5002):
        ranked(rank, 2, 1, 100.0, hostile)
    started = time.monotonic()
    status, payload = _post(_url(collector), hostile.SerializeToString(), AUTH)
    assert status == 200 and time.monotonic() - started < 10
    assert mpb.ExportMetricsServiceResponse.FromString(payload).partial_success.rejected_data_points == 5000
    late = mpb.ExportMetricsServiceRequest()
    for i in range(3000):
        ranked(i % 2, 2, 1, 3.0, late)
    started = time.monotonic()
    assert _post(_url(collector), late.SerializeToString(), AUTH)[0] == 200
    assert time.monotonic() - started < 10
    assert collector.self_metrics()["late_points"] == 3000
    collector.shutdown()
    events = read_tensorboard_events(tmp_path / "tb" / "w")["loss"]
    assert events[0] == (1, 1.0) and len(events) == 2  # the step, then one correction
    assert events[1][0] == 1 and events[1][1] == pytest.approx((2 * 1.0 + 3000 * 3.0) / 3002)



def test_wandb_keeps_at_most_max_open_runs_and_loses_nothing(tmp_path):
    """Five runs written in turn with room for two open W&B runs: the least recently used is
    finished and resumed (same id) when it writes again; every step of every run is in the
    offline files once."""
    from backends import read_counts, read_wandb

    from otel_rl.model.records import Batch, Point
    from otel_rl.sinks.wandb import WandbConfig, WandbExporter

    sink = WandbExporter(WandbConfig(enabled=True, mode="offline", dir=str(tmp_path / "wb"), project="t",
                                     max_open_runs=2))
    try:
        for step in range(2):
            for r in range(5):
                sink.write(Batch([Point(f"run-{r}", "loss", step, r + step / 10, time.time())]))
                assert len(sink._runs) <= 2
    finally:
        sink.close()
    assert sink.closed_runs >= 7
    for r in (0, 4):
        assert read_wandb(tmp_path / "wb", f"run-{r}")["scalars"]["loss"] == {0: r, 1: r + 0.1}
        assert read_counts("wandb", tmp_path, f"run-{r}")["loss"] == {0: 1, 1: 1}


def test_a_hung_trace_backend_does_not_hold_metrics(tmp_path, monkeypatch):
    """MLflow that accepts connections and never answers: span requests are acknowledged at once
    (forwarded off the request path), metrics keep flowing over HTTP and gRPC."""
    import threading

    import grpc

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    held, stop = [], threading.Event()

    def accept():
        hung.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(hung.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    # what the trace sink sets for MLflow's client, restored after this test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    c = create({"receivers": {"http": {"port": 0}, "grpc": {"port": 0}},
                "mlflow_traces": {"enabled": True, "tracking_uri": f"http://127.0.0.1:{hung.getsockname()[1]}",
                                  "timeout_s": 3},
                "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb

        spans = tpb.ExportTraceServiceRequest()
        span = spans.resource_spans.add().scope_spans.add().spans.add()
        span.name, span.trace_id, span.span_id = "rollout", b"\1" * 16, b"\2" * 8
        started = time.monotonic()
        for _ in range(5):
            assert _post(_url(c, "/v1/traces"), spans.SerializeToString())[0] == 200
        channel = grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}")
        export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        for step in range(20):
            export(_request("hung", step, 1.0).SerializeToString(), timeout=5)
            assert _post(_url(c), _request("hung", 100 + step, 1.0).SerializeToString())[0] == 200
        assert time.monotonic() - started < 10
        channel.close()
    finally:
        stop.set()
        c.shutdown(timeout_s=5)
        for s in held:
            s.close()
        hung.close()
    assert len(read_tensorboard(tmp_path / "tb" / "hung")["scalars"]["loss"]) == 40


def test_an_empty_run_id_is_refused_not_merged(collector):
    status, payload = _post(_url(collector), _request("", 1, 1.0).SerializeToString(), AUTH)
    assert status == 200
    response = mpb.ExportMetricsServiceResponse.FromString(payload)
    assert response.partial_success.rejected_data_points == 1
    assert "empty otel_rl.run.id" in response.partial_success.error_message


def test_name_memory_is_bounded():
    from otel_rl.model.naming import MAX_NAMES, NameMapper

    mapper = NameMapper("mlflow")
    for i in range(MAX_NAMES + 50_000):
        mapper.key(f"name {i}?")  # renamed by MLflow's rules: every table is used
    assert max(len(mapper._cache), len(mapper._neutral), len(mapper._owner)) <= MAX_NAMES
    assert mapper._warnings == MAX_NAMES + 50_000  # counted; only the first 1,000 are logged
