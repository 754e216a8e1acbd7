"""Collector service behaviour: overload answers with retry hints, TLS, spans to MLflow traces,
self-metrics, and the `otel-rl collector` command end to end."""

from __future__ import annotations

import datetime
import signal
import ssl
import subprocess
import sys
import urllib.request

import grpc
import pytest
from backends import free_port
from conftest import read_tensorboard
from test_receive import _post, _request

from otel_rl_collector import create


def test_overload_answers_503_with_retry_after_and_grpc_unavailable(tmp_path):
    dead = free_port()  # nothing listens: the MLflow sink queues and retries
    c = create({"receivers": {"http": {"port": 0}, "grpc": {"port": 0}},
                "limits": {"max_queue_points": 20, "overload_fraction": 0.5},
                "tensorboard": {"enabled": False},
                "mlflow": {"enabled": True, "tracking_uri": f"http://127.0.0.1:{dead}", "timeout_s": 1}}).start()
    try:
        url = f"http://127.0.0.1:{c.http_port}/v1/metrics"
        statuses = []
        for step in range(30):
            status, _, headers = _post(url, _request("busy", step, 1.0))
            statuses.append(status)
            if status == 503:
                assert headers["Retry-After"] == "2"
                break
        assert statuses[0] == 200 and statuses[-1] == 503
        channel = grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}")
        export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        with pytest.raises(grpc.RpcError) as busy:
            export(_request("busy", 99, 1.0), timeout=5)
        assert busy.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
        assert c.self_metrics()["rejected_by_reason"]["overloaded"] == 2
    finally:
        c.shutdown(timeout_s=1)


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "tls.crt", tmp_path / "tls.key"


def test_tls_on_both_receivers(tmp_path):
    cert, key = _self_signed(tmp_path)
    c = create({"receivers": {"http": {"port": 0}, "grpc": {"port": 0}},
                "tls": {"cert_file": str(cert), "key_file": str(key)},
                "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        req = urllib.request.Request(f"https://127.0.0.1:{c.http_port}/v1/metrics", data=_request("tls", 1, 3.0),
                                     headers={"Content-Type": "application/x-protobuf"}, method="POST")
        with urllib.request.urlopen(req, context=context, timeout=10) as r:
            assert r.status == 200
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        channel = grpc.secure_channel(f"127.0.0.1:{c.grpc_port}", creds)
        channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")(
            _request("tls", 2, 4.0), timeout=10)
        channel.close()
    finally:
        c.shutdown()
    assert read_tensorboard(tmp_path / "tb" / "tls")["scalars"]["loss"] == {1: 3.0, 2: 4.0}


def test_config_errors_name_the_field():
    from otel_rl import ConfigError

    with pytest.raises(ConfigError, match=r"reduce.rules\['loss'\]: 'median' is not allowed; allowed: mean"):
        create({"reduce": {"rules": {"loss": "median"}}})
    with pytest.raises(ConfigError, match="tls: cert_file and key_file go together"):
        create({"tls": {"cert_file": __file__}})
    with pytest.raises(ConfigError, match=r"collector config.otlp: unknown key; allowed: auth, limits, mlflow"):
        create({"otlp": {}})
    with pytest.raises(ConfigError, match="receivers.kafka: unknown receiver; allowed: grpc, health, http"):
        create({"receivers": {"kafka": {}}})


def test_spans_are_forwarded_to_mlflow_traces(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    import otel_rl

    c = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}}, "tensorboard": {"enabled": False},
                "mlflow_traces": {"enabled": True, "tracking_uri": mlflow_server.url,
                                  "experiment": "collector-traces"}}).start()
    try:
        otel_rl.init({"run_name": "spans", "tensorboard": {"enabled": False},
                      "otlp": {"enabled": True, "endpoint": f"http://127.0.0.1:{c.http_port}"}})
        with otel_rl.span("step"):
            with otel_rl.span("weight_sync"):
                pass
        otel_rl.shutdown()
    finally:
        c.shutdown()
    assert c.self_metrics()["forwarded_spans"] == 2
    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("collector-traces")
    (trace,) = client.search_traces(locations=[exp.experiment_id])
    assert {s.name for s in trace.data.spans} == {"step", "weight_sync"}


def test_cli_collector_end_to_end(tmp_path):
    port = free_port()
    (tmp_path / "collector.yaml").write_text(
        f"receivers:\n  http: {{port: {port}}}\n  grpc: {{enabled: false}}\n"
        f"tensorboard:\n  log_dir: {tmp_path / 'tb'}\n")
    proc = subprocess.Popen([sys.executable, "-m", "otel_rl.cli", "collector", "--config",
                             str(tmp_path / "collector.yaml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert "ready" in proc.stdout.readline()
        assert _post(f"http://127.0.0.1:{port}/v1/metrics", _request("cli", 5, 0.5))[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'otel_rl_collector_received_points_total{run="otel-rl-collector"} 1.0' in text
        assert 'otel_rl_collector_sink_exported_points_total{run="otel-rl-collector",sink="tensorboard"}' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert read_tensorboard(tmp_path / "tb" / "cli")["scalars"]["loss"] == {5: 0.5}


def test_cli_collector_bad_config_is_a_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("reduce: {gauge: median}\n")
    proc = subprocess.run([sys.executable, "-m", "otel_rl.cli", "collector", "--config", str(tmp_path / "bad.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "reduce.gauge: 'median' is not allowed" in proc.stderr


def test_example_configs_are_valid():
    import yaml
    from conftest import ROOT

    from otel_rl_collector import load_collector_config

    cfg = load_collector_config(ROOT / "collector" / "collector.example.yaml")
    assert cfg.receivers.grpc.port == 4317 and cfg.reduce.rules == {"reward/*": "mean", "grad_norm": "max"}
    gateway = yaml.safe_load((ROOT / "collector" / "otelcol-gateway.yaml").read_text())
    lb = gateway["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "attributes" and lb["routing_attributes"] == ["otel_rl.run.id"]
    assert {"key": "step", "action": "delete"} in gateway["processors"]["attributes/drop_step"]["actions"]
    prom = gateway["service"]["pipelines"]["metrics/prometheus"]
    assert "attributes/drop_step" in prom["processors"] and prom["exporters"] == ["prometheus"]
