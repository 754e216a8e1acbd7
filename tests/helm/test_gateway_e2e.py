"""The cluster deployment end to end, on 127.0.0.1: 2 runs x 2 ranks of real trainer processes ->
the real upstream OpenTelemetry Collector as the gateway (its config rendered by the chart:
load-balancing by ``otel_rl.run.id``, bearer token and TLS towards the replicas, with a CA and a
server certificate made here) -> 2 otel-rl collector replicas (their config rendered by the chart)
-> TensorBoard, a real MLflow server and a real Prometheus.

What the test changes in the rendered configs is only what the cluster provides: the mounted
Secret paths (token, certificates), the volume (log dir, spool), ports on 127.0.0.1, and the
gateway's DNS resolver, which becomes a static list of the two replicas (there is no cluster DNS
here, and a DNS resolver gives every replica the same port)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from backends import PrometheusServer, free_port, make_certificates, read_mlflow, stop_process
from conftest import ROOT, exactly_once, read_tensorboard_events, read_tensorboard_tables

sys.path.insert(0, str(ROOT / "helm"))
sys.path.insert(0, str(ROOT / "tests" / "collector"))
import render_examples  # noqa: E402
from test_grafana import _queries as dashboard_queries  # noqa: E402
from trainers import start_collector  # noqa: E402

OTELCOL = ROOT.parent / "shared" / "tools" / "otelcol" / "otelcol"
TOKEN = "e2e-s3cret-token"
RUNS, WORLD, STEPS = ("job-a", "job-b"), 2, 30

TRAINER = """
import os, sys, time, otel_rl
endpoint, steps, offset = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
otel_rl.init({"run_name": os.environ["RUN"], "export_interval_s": 0.2, "tensorboard": {"enabled": False},
              "otlp": {"enabled": True, "endpoint": endpoint}})
from opentelemetry import metrics
rank = int(os.environ["RANK"])
meter = metrics.get_meter("e2e")
loss, tokens = meter.create_gauge("loss"), meter.create_counter("tokens")
reward = meter.create_gauge("reward/mean")
for step in range(steps):
    otel_rl.set_step(step)
    with otel_rl.span("rollout"):
        time.sleep(0.002 * (rank + 1))
    loss.set(offset + step + rank)
    tokens.add(10 * (rank + 1))
    reward.set(0.5 * rank)
    if step % 10 == 0:
        otel_rl.log_samples([{"prompt": f"q{step}", "response": f"rank {rank}", "reward": 0.5 * rank}],
                            name="val/samples")
    time.sleep(0.01)
assert otel_rl.shutdown(timeout_s=60), "not everything was delivered to the gateway"
"""

pytestmark = pytest.mark.skipif(not OTELCOL.exists(), reason=f"the upstream collector is not at {OTELCOL}")


def _rendered(mlflow_url: str) -> tuple[dict, dict]:
    """The collector config and the gateway config as the chart renders them, with auth and TLS
    from Secrets, MLflow and Prometheus on, persistence (spool) on."""
    pytest.importorskip("helm_python")
    values = {"auth": {"existingSecret": "otel-rl-token"}, "tls": {"existingSecret": "otel-rl-tls"},
              "backends": {"mlflow": {"enabled": True, "trackingUri": mlflow_url, "experiment": "e2e"}},
              "gateway": {"enabled": True}}
    docs = [d for d in yaml.safe_load_all(render_examples.render(values)) if d]
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    return yaml.safe_load(maps["rl-otel-rl"]["collector.yaml"]), yaml.safe_load(maps["rl-otel-rl-otelcol-gateway"]["relay"])


def _replica_config(rendered: dict, root: Path, secrets: dict[str, Path], ports: dict[str, int]) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(rendered))
    # what the chart's mounts put at these paths in the pod
    assert cfg["auth"] == {"token_file": "/var/run/secrets/otel-rl/auth/token", "metrics": False}
    cfg["auth"]["token_file"] = str(secrets["token"])
    assert set(cfg["tls"]) == {"cert_file", "key_file"}
    cfg["tls"] = {"cert_file": str(secrets["cert"]), "key_file": str(secrets["key"])}
    assert cfg["tensorboard"]["log_dir"].startswith("/data") and cfg["spool"]["dir"].startswith("/data")
    cfg["tensorboard"]["log_dir"] = str(root / "runs")
    cfg["spool"]["dir"] = str(root / "spool")
    # the pod's ports, here on 127.0.0.1
    cfg["receivers"]["grpc"].update(host="127.0.0.1", port=ports["grpc"])
    cfg["receivers"]["http"].update(host="127.0.0.1", port=ports["http"])
    cfg["receivers"]["health"].update(host="127.0.0.1", port=0)
    cfg["prometheus"].update(host="127.0.0.1", port=ports["prometheus"])
    return cfg


def _gateway_config(rendered: dict, replicas: list[str], ca: Path, ports: dict[str, int]) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(rendered))
    protocols = cfg["receivers"]["otlp"]["protocols"]
    protocols["grpc"]["endpoint"] = f"127.0.0.1:{ports['grpc']}"
    protocols["http"]["endpoint"] = f"127.0.0.1:{ports['http']}"
    cfg["extensions"]["health_check"]["endpoint"] = f"127.0.0.1:{free_port()}"  # the probes' port
    lb = cfg["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "attributes" and lb["routing_attributes"] == ["otel_rl.run.id"]
    assert lb["resolver"]["dns"]["hostname"] == "rl-otel-rl-headless.observability.svc.cluster.local"
    lb["resolver"] = {"static": {"hostnames": replicas}}
    otlp = lb["protocol"]["otlp"]
    # auth and TLS on, as rendered: the token from the env, the server certificate checked with the CA
    assert otlp["headers"] == {"authorization": "Bearer ${env:OTEL_RL_TOKEN}"}
    assert otlp["tls"] == {"ca_file": "/etc/otel-rl/tls/ca.crt"}
    otlp["tls"]["ca_file"] = str(ca)
    cfg["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{ports['prometheus']}"
    return cfg


def _wait_for_gateway(proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 60) -> None:
    """Up once its OTLP/HTTP receiver answers at all (a GET gets 405)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the gateway exited: {log.read_text()[-3000:]}"
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the gateway did not come up: {log.read_text()[-3000:]}")


def test_two_runs_two_ranks_through_the_upstream_gateway_to_two_replicas(tmp_path, mlflow_server):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    ca, cert, key = make_certificates(secrets)
    (secrets / "token").write_text(TOKEN + "\n")
    collector_yaml, gateway_yaml = _rendered(mlflow_server.url)

    replicas, procs = [], []
    gateway = prometheus = None
    try:
        for i in range(2):
            ports = {"grpc": free_port(), "http": free_port(), "prometheus": free_port()}
            root = tmp_path / f"replica-{i}"
            root.mkdir()
            cfg = _replica_config(collector_yaml, root, {"token": secrets / "token", "cert": cert, "key": key}, ports)
            (root / "collector.yaml").write_text(yaml.safe_dump(cfg))
            procs.append(start_collector(root / "collector.yaml"))
            replicas.append({"root": root, **ports})

        gw_ports = {"grpc": free_port(), "http": free_port(), "prometheus": free_port()}
        gw_cfg = _gateway_config(gateway_yaml, [f"127.0.0.1:{r['grpc']}" for r in replicas], ca, gw_ports)
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(gw_cfg))
        log = tmp_path / "gateway.log"
        gateway = subprocess.Popen([str(OTELCOL), "--config", str(tmp_path / "gateway.yaml")],
                                   stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                   env={**os.environ, "OTEL_RL_TOKEN": TOKEN})
        _wait_for_gateway(gateway, f"http://127.0.0.1:{gw_ports['http']}/v1/metrics", log)

        prometheus = PrometheusServer(tmp_path, [f"127.0.0.1:{gw_ports['prometheus']}"]
                                      + [f"127.0.0.1:{r['prometheus']}" for r in replicas]).start()

        # trainers: plain OTLP/HTTP to the gateway's Service, as docs/deploy.md sets them up
        trainers = [subprocess.Popen([sys.executable, "-c", TRAINER, f"http://127.0.0.1:{gw_ports['http']}",
                                      str(STEPS), str(100.0 * k)],
                                     env={**os.environ, "RUN": run, "RANK": str(r), "WORLD_SIZE": str(WORLD)},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for k, run in enumerate(RUNS) for r in range(WORLD)]
        for t in trainers:
            _, err = t.communicate(timeout=180)
            assert t.returncode == 0, err[-3000:]

        # Prometheus: the gateway's exporter (raw, per rank) and the replicas' (reduced), no step label
        for k, run in enumerate(RUNS):
            last = STEPS - 1 + 100.0 * k
            reduced = prometheus.wait_for(f'loss{{run="{run}", rank=""}}', lambda r, last=last: len(r) == 1 and
                                          float(r[0]["value"][1]) == last + 0.5, timeout_s=90)
            assert "step" not in reduced[0]["metric"]
            tokens = prometheus.wait_for(f'tokens_total{{run="{run}", rank=""}}', lambda r, last=last: len(r) == 1 and
                                         float(r[0]["value"][1]) == STEPS * 30, timeout_s=60)
            assert "step" not in tokens[0]["metric"]
        # the gateway's own exporter: one series per run and rank, labelled so; no per-batch or
        # per-process ids as labels (they would grow without bound)
        raw = prometheus.wait_for(f'loss{{instance="127.0.0.1:{gw_ports["prometheus"]}"}}',
                                  lambda r: len(r) == len(RUNS) * WORLD, timeout_s=60)
        assert sorted((s["metric"]["run"], s["metric"]["rank"], float(s["value"][1])) for s in raw) == sorted(
            (run, str(r), STEPS - 1 + 100.0 * k + r) for k, run in enumerate(RUNS) for r in range(WORLD))
        assert not any(name.startswith(("otel_rl_", "exported_instance", "telemetry_"))
                       for s in raw for name in s["metric"]), raw
        # the dashboard's training panels work on the gateway's series too
        gateway_instance = f'instance="127.0.0.1:{gw_ports["prometheus"]}"'
        training = [(title, expr) for title, expr in dashboard_queries() if 'run=~".+"' in expr]
        assert len(training) >= 4
        for title, expr in training:
            scoped = expr.replace('run=~".+"', f'run=~".+", {gateway_instance}')
            if "timing_" in expr:
                continue  # below
            assert prometheus.wait_for(scoped, lambda r: len(r) == len(RUNS) * WORLD, timeout_s=30), title
        timing = prometheus.query(f'{{__name__=~"timing_.+", run=~".+", {gateway_instance}}}')
        assert {s["metric"]["__name__"] for s in timing} == {"timing_rollout"} and len(timing) == 4, timing
        info = prometheus.query(f'target_info{{instance="127.0.0.1:{gw_ports["prometheus"]}"}}')
        assert len(info) <= len(RUNS) * WORLD, info
        assert not prometheus.query('{step!=""}'), "a step label reached Prometheus"
    finally:
        if prometheus is not None:
            prometheus.stop()
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(gateway)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    stop_process(p)
    assert gateway.returncode == 0 and all(p.returncode == 0 for p in procs)

    # every step of every run in exactly one replica, reduced over its ranks, exactly once
    for k, run in enumerate(RUNS):
        holders = [r for r in replicas if (r["root"] / "runs" / run).is_dir()]
        assert len(holders) == 1, f"{run} is split over replicas: {[str(h['root']) for h in holders]}"
        events = read_tensorboard_events(holders[0]["root"] / "runs" / run)
        assert exactly_once(events["loss"]) == {s: 100.0 * k + s + 0.5 for s in range(STEPS)}
        assert exactly_once(events["tokens"]) == {s: 30.0 * (s + 1) for s in range(STEPS)}
        rollout = exactly_once(events["timing/rollout"])
        assert sorted(rollout) == list(range(STEPS)) and min(rollout.values()) >= 0.004  # max over ranks
        # samples (OTLP logs, routed by run id like the metrics): every rank's table, in that replica
        tables = read_tensorboard_tables(holders[0]["root"] / "runs" / run, "val/samples")
        assert sorted(tables) == [0, 10, 20]
        for step, texts in tables.items():
            assert sorted(texts) == sorted(f"| prompt | response | reward |\n|---|---|---|\n| q{step} | rank {r} | "
                                           f"{0.5 * r} |" for r in range(WORLD)), texts
        mlflow = read_mlflow(mlflow_server.url, "e2e", run)["scalars"]
        assert mlflow["loss"] == {s: 100.0 * k + s + 0.5 for s in range(STEPS)}
        assert mlflow["tokens"] == {s: 30.0 * (s + 1) for s in range(STEPS)}
