"""Every query of the shipped Grafana dashboard (docs/grafana-dashboard.json) returns data from a
real Prometheus that scrapes a real collector (its training-metrics endpoint and its own
/metrics), fed over OTLP by a trainer with timing spans and GPU gauges (the fake NVML of
test_gpu.py: the one fake allowed)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from backends import PrometheusServer, free_port
from conftest import ROOT

sys.path.insert(0, str(Path(__file__).with_name("collector")))
from trainers import start_collector  # noqa: E402


def _queries() -> list[tuple[str, str]]:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"].replace("$run", ".+")))
    return out


def test_every_dashboard_query_returns_data(tmp_path):
    from test_gpu import FakeNvml

    import otel_rl
    from otel_rl import Pipeline
    from otel_rl.sources.gpu import GpuConfig, GpuSampler, register_role

    queries = _queries()
    assert len(queries) >= 10
    http, metrics_port = free_port(), free_port()
    config = tmp_path / "collector.yaml"
    config.write_text(f"receivers:\n  http: {{port: {http}}}\n  grpc: {{enabled: false}}\n"
                      "reduce: {timeout_s: 1}\n"
                      f"tensorboard: {{log_dir: {tmp_path / 'tb'}}}\n"
                      f"prometheus: {{enabled: true, host: 127.0.0.1, port: {metrics_port}}}\n")
    collector = start_collector(config)
    server = None
    try:
        pipeline = Pipeline({"run_name": "dash", "export_interval_s": 0.2, "tensorboard": {"enabled": False},
                             "otlp": {"enabled": True, "endpoint": f"http://127.0.0.1:{http}"}})
        register_role("policy", pid=4242, directory=tmp_path / "gpu")
        sampler = GpuSampler(pipeline.get_meter("gpu"), GpuConfig(interval_s=0.2),
                             nvml=FakeNvml(processes=[(4242, 0, 2**30)]), directory=tmp_path / "gpu")
        assert sampler.start()
        meter = pipeline.get_meter("train")
        reward, loss, tokens = meter.create_gauge("reward/mean"), meter.create_gauge("loss"), meter.create_counter("tokens")
        server = PrometheusServer(tmp_path, [f"127.0.0.1:{http}", f"127.0.0.1:{metrics_port}"]).start()
        step = 0
        deadline = time.monotonic() + 20  # long enough for rate(...[1m]) to have two samples
        while time.monotonic() < deadline:
            step += 1
            pipeline.set_step(step)
            with otel_rl.span("rollout"):
                time.sleep(0.01)
            reward.set(step * 0.1)
            loss.set(1.0 / step)
            tokens.add(512)
            time.sleep(0.05)
        assert pipeline.force_flush(30)
        empty = []
        for title, promql in queries:
            try:
                server.wait_for(promql, lambda r: len(r) > 0, timeout_s=30)
            except AssertionError:
                empty.append((title, promql))
        assert not empty, f"panels without data: {empty}"
        sampler.close()
        pipeline.shutdown()
    finally:
        if server is not None:
            server.stop()
        collector.terminate()
        collector.wait(60)
