"""Outages with real processes: the collector SIGKILLed and restarted while trainers keep
sending; a real MLflow server killed for 30 s in the middle of a 4-rank run. Every point
arrives, once, and the trainers' step time does not move."""

from __future__ import annotations

import os
import signal
import statistics
import time
import urllib.request

from backends import MlflowServer, free_port, read_mlflow
from conftest import read_tensorboard
from trainers import finish, start_collector, start_trainers

from otel_rl_collector import create


def _self_metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines() if not line.startswith("#"))


def test_collector_sigkill_and_restart_loses_nothing_acknowledged(tmp_path):
    port = free_port()
    config = tmp_path / "collector.yaml"
    config.write_text(f"receivers:\n  http: {{port: {port}}}\n  grpc: {{enabled: false}}\n"
                      f"spool: {{dir: {tmp_path / 'spool'}}}\nreduce: {{timeout_s: 60}}\n"
                      f"tensorboard: {{log_dir: {tmp_path / 'tb'}}}\n")
    collector = start_collector(config)
    steps = 120
    ranks = start_trainers(f"http://127.0.0.1:{port}", 2, steps, 0.04, "killed")
    time.sleep(2.5)
    os.kill(collector.pid, signal.SIGKILL)  # no shutdown, no flush
    collector.wait()
    collector = start_collector(config)  # same spool: replays what it had acknowledged
    try:
        finish(ranks)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = _self_metrics(port)
            if float(m['otel_rl_collector_pending_groups{run="otel-rl-collector"}']) == 0 and \
                    float(m['otel_rl_collector_sink_queued_points{run="otel-rl-collector",sink="tensorboard"}']) == 0:
                break
            time.sleep(0.5)
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(60)
    loss = read_tensorboard(tmp_path / "tb" / "killed")["scalars"]["loss"]
    assert loss == {s: s + 0.5 for s in range(steps)}  # every step, reduced over both ranks


def test_mlflow_down_30s_mid_run_every_point_once_and_training_unaffected(tmp_path):
    mlflow_dir = tmp_path / "mlflow"
    mlflow_dir.mkdir()
    server = MlflowServer(mlflow_dir).start()
    collector = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                        "spool": {"dir": str(tmp_path / "spool")}, "reduce": {"timeout_s": 30},
                        "tensorboard": {"enabled": False},
                        "mlflow": {"enabled": True, "tracking_uri": server.url, "experiment": "outage",
                                   "timeout_s": 2}}).start()
    steps, gap = 700, 0.05  # about 40 s of training
    ranks = start_trainers(f"http://127.0.0.1:{collector.http_port}", 4, steps, gap, "outage")
    try:
        time.sleep(6)
        outage_start = time.time()
        server.stop()
        time.sleep(30)
        outage_end = time.time()
        server.start()  # same sqlite store, same port
        results = finish(ranks)
    finally:
        collector.shutdown(timeout_s=180)
        data = read_mlflow(server.url, "outage", "outage")
        server.stop()
    loss = data["scalars"]["loss"]
    assert "duplicates" not in loss, loss.get("duplicates")  # each (metric, step) exactly once
    assert loss == {s: s + 1.5 for s in range(steps)}
    stats = collector.self_metrics()["sinks"]["mlflow"]
    assert stats["failed_attempts"] > 0 and stats["dropped_points"] == 0
    before, during = [], []
    for result in results:
        for wall, duration in result["durations"]:
            (during if outage_start <= wall <= outage_end else before if wall < outage_start else []).append(duration)
    assert len(during) > 100
    assert statistics.median(during) <= 1.10 * statistics.median(before), (statistics.median(before),
                                                                           statistics.median(during))
