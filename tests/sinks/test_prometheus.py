"""The Prometheus sink, scraped by a real Prometheus server (Debian package) and queried over
its HTTP API: training metrics arrive without a step label, latest value per series."""

from __future__ import annotations

import urllib.request

import pytest
from backends import PrometheusServer

import otel_rl
from otel_rl import Pipeline
from otel_rl.sinks.prometheus import PrometheusConfig, PrometheusExporter, label_name, metric_name


def test_real_prometheus_scrapes_latest_values_without_step_label(tmp_path):
    pipeline = Pipeline({"run_name": "prom", "export_interval_s": 0.2, "tensorboard": {"enabled": False},
                         "prometheus": {"enabled": True, "port": 0}})
    sink = pipeline.sinks[0]
    meter = pipeline.get_meter("p")
    loss, tokens = meter.create_gauge("train/loss"), meter.create_counter("tokens")
    lat = meter.create_histogram("rollout.latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0])
    adv = meter.create_histogram("advantages")  # bins fitted to each step's samples
    for step in range(50):
        otel_rl.set_step(step)
        loss.set(100 - step, {"env": "cartpole"})
        tokens.add(10)
        lat.record(0.5)
        for v in (-step - 1.0, 0.0, step + 2.0):  # a different range every step
            adv.record(v)
    pipeline.force_flush()

    server = PrometheusServer(tmp_path, [f"127.0.0.1:{sink.port}"]).start()
    try:
        result = server.wait_for('train_loss{run="prom"}', lambda r: len(r) == 1)
        assert result[0]["metric"] == {"__name__": "train_loss", "run": "prom", "env": "cartpole",
                                       "instance": f"127.0.0.1:{sink.port}", "job": "otel-rl"}
        assert float(result[0]["value"][1]) == 51.0  # the latest step's value, no step label
        assert float(server.query("tokens_total")[0]["value"][1]) == 500.0  # cumulative
        buckets = {r["metric"]["le"]: float(r["value"][1]) for r in server.query("rollout_latency_bucket")}
        assert buckets == {"0.1": 0.0, "1.0": 50.0, "+Inf": 50.0}
        # fitted bins change every step: _count and _sum only, never a new `le` series per step
        assert float(server.query("advantages_count")[0]["value"][1]) == 150.0
        assert float(server.query("advantages_sum")[0]["value"][1]) == 50.0  # each step adds -s-1 + 0 + s+2
        assert not server.query("advantages_bucket")
        assert not server.query('{__name__=~".+", step!=""}')  # no series anywhere has a step label
    finally:
        server.stop()
        pipeline.shutdown()


def test_latest_step_wins_over_a_late_lower_step():
    sink = PrometheusExporter(PrometheusConfig(port=0))
    from otel_rl.model.records import Batch, Point

    sink.write(Batch([Point("r", "kl", 10, 1.0, 100.0), Point("r", "kl", 3, 9.0, 200.0)]))
    text = urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/metrics").read().decode()
    sink.shutdown()
    assert 'kl{run="r"} 1.0' in text and "step" not in text


@pytest.mark.parametrize("order", ["steps forward", "a late step first", "same step, earlier time last",
                                   "two runs"])
def test_a_big_batch_keeps_the_same_latest_values_as_point_by_point(order):
    """Batches of over 64 gauges whose (step, time) never goes down apply only each series' last
    point; any other batch goes point by point. Both give the rule's result: the latest step wins,
    within a step the latest time."""
    from otel_rl.model.records import Batch, Point

    points = [Point("r", f"m{i}", s, float(100 * s + i), 1000.0 + s) for s in range(20) for i in range(5)]
    expected = {f"m{i}": 1900.0 + i for i in range(5)}
    if order == "a late step first":
        points.insert(0, Point("r", "m0", 50, -1.0, 900.0))
        expected["m0"] = -1.0
    elif order == "same step, earlier time last":
        points.append(Point("r", "m1", 19, -2.0, 999.0))  # time goes down: not applied
    elif order == "two runs":
        points += [Point("q", "m0", 0, 7.0, 1.0)]
    sink = PrometheusExporter(PrometheusConfig(port=0))
    try:
        sink.write(Batch(points))
        text = urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/metrics").read().decode()
    finally:
        sink.shutdown()
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("m") and 'run="r"' in line}
    assert values == expected
    assert ('m0{run="q"} 7.0' in text) == (order == "two runs")


def test_series_are_bounded():
    sink = PrometheusExporter(PrometheusConfig(port=0, max_series=10))
    from otel_rl.model.records import Batch, Point

    sink.write(Batch([Point("r", "m", 0, 1.0, 0.0, "gauge", (("k", str(i)),)) for i in range(25)]))
    text = sink.render()
    sink.shutdown()
    assert text.count("\nm{") + text.startswith("m{") == 10 and sink.evicted == 15


@pytest.mark.parametrize("raw, name", [("train/loss", "train_loss"), ("hw.gpu.utilization", "hw_gpu_utilization"),
                                       ("a-b c", "a_b_c"), ("9x", "_9x")])
def test_metric_names(raw, name):
    assert metric_name(raw) == name


def test_label_names():
    assert label_name("hw.id") == "hw_id" and label_name("__x") == "attr__x" and label_name("1a") == "_1a"
