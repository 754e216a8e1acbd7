"""One contract suite, run against every exporter, read back from each backend's own storage:
TensorBoard's EventAccumulator, W&B's offline run file (`wandb leet inspect`), SwanLab's
DataStoreReader, and a real `mlflow server` (get_metric_history)."""

from __future__ import annotations

import math

import pytest
from backends import BACKENDS, backend_config, read_params, read_scalars, read_wandb
from conftest import f32_close
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource

from otel_rl.config import load_config
from otel_rl.route.sdk import DELTA_TEMPORALITY, SinkExporter
from otel_rl.sinks import registry


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    name = request.param
    url = request.getfixturevalue("mlflow_server").url if name == "mlflow" else None
    cfg = load_config({name: backend_config(name, tmp_path, url)}).backends[name]

    class Backend:
        def __init__(self):
            self.name = name
            self.tmp = tmp_path
            self.exporter = SinkExporter(registry.create(name, cfg))  # the SDK face of the sink

        def scalars(self, run="r"):
            return read_scalars(name, tmp_path, run, url)

        def params(self, run="r"):
            return read_params(name, tmp_path, run, url)

    b = Backend()
    yield b
    b.exporter.shutdown()


def _meter(run="r"):
    reader = InMemoryMetricReader(preferred_temporality=DELTA_TEMPORALITY,
                                  cardinality_limits={c: 100_000 for c in DELTA_TEMPORALITY})
    provider = MeterProvider(resource=Resource.create({"otel_rl.run.id": run}), metric_readers=[reader])
    return provider.get_meter("contract"), reader


def _close(backend, got, want):
    return f32_close(got, want) if backend.name == "tensorboard" else got == want or (
        math.isnan(got) and math.isnan(want))


def test_same_metrics_steps_and_values_read_back(backend):
    meter, reader = _meter()
    loss, reward = meter.create_gauge("train/loss"), meter.create_gauge("reward")
    tokens = meter.create_counter("tokens")
    for step in range(60):
        loss.set(1.0 / (step + 1), {"step": step})
        reward.set(step * 0.5, {"step": step, "env": "cartpole"})
        tokens.add(4, {"step": step})
        if step % 20 == 19:  # three exports, like three export intervals
            assert backend.exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    backend.exporter.shutdown()

    scalars = backend.scalars()
    assert sorted(scalars["train/loss"]) == list(range(60))
    for step in range(60):
        assert _close(backend, scalars["train/loss"][step], 1.0 / (step + 1))
        assert scalars["tokens"][step] == 4.0 * (step + 1)
        assert scalars["reward/env:cartpole"][step] == step * 0.5


def test_histograms_read_back(backend):
    meter, reader = _meter()
    h = meter.create_histogram("lat", explicit_bucket_boundaries_advisory=[1.0, 10.0])
    for v in (0.5, 2.0, 4.0, 20.0):
        h.record(v, {"step": 3})
    assert backend.exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    backend.exporter.shutdown()
    if backend.name == "tensorboard":
        return  # histogram-plugin layout checked in test_tensorboard.py
    scalars = backend.scalars()
    if backend.name == "wandb":  # a real wandb.Histogram: bins are the (clamped) bucket edges
        (row,) = [r for r in read_wandb(backend.tmp / "wb", "r")["rows"] if "lat._type" in r]
        assert row["lat._type"] == "histogram" and row["otel_rl/step"] == 3
        assert row["lat.bins"] == [0.5, 1, 10, 20] and row["lat.values"] == [1, 2, 1]
        return
    assert scalars["lat/count"] == {3: 4.0}
    assert scalars["lat/sum"] == {3: 26.5}
    assert scalars["lat/mean"] == {3: 26.5 / 4}
    assert scalars["lat/min"] == {3: 0.5} and scalars["lat/max"] == {3: 20.0}


def test_out_of_order_steps_are_all_kept(backend):
    """Later exports carrying lower steps (e.g. a late rank): W&B would drop them (wandb#9449)."""
    meter, reader = _meter()
    g = meter.create_gauge("kl")
    for block in ((10, 20), (0, 10), (20, 25)):
        for step in range(*block):
            g.set(step * 2.0, {"step": step})
        assert backend.exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    backend.exporter.shutdown()
    assert backend.scalars()["kl"] == {s: s * 2.0 for s in range(25)}


def test_hyperparameters_read_back(backend):
    meter, reader = _meter()
    meter.create_gauge("otel_rl.hparams").set(1, {"lr": 0.001, "algo": "grpo", "batch": 64})
    meter.create_gauge("x").set(1.0, {"step": 0})
    assert backend.exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    backend.exporter.shutdown()
    params = backend.params()
    if backend.name == "mlflow":  # MLflow params are strings
        assert params == {"lr": "0.001", "algo": "grpo", "batch": "64"}
    else:
        assert params == {"lr": 0.001, "algo": "grpo", "batch": 64}


def test_success_failure_after_shutdown_and_double_shutdown(backend):
    meter, reader = _meter()
    g = meter.create_gauge("x")
    g.set(1.0, {"step": 0})
    assert backend.exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    assert backend.exporter.force_flush() is True
    backend.exporter.shutdown()
    backend.exporter.shutdown()
    g.set(2.0, {"step": 1})
    assert backend.exporter.export(reader.get_metrics_data()) is MetricExportResult.FAILURE
    assert backend.scalars()["x"] == {0: 1.0}


def test_nan_is_kept(backend):
    meter, reader = _meter()
    meter.create_gauge("loss").set(0.0, {"step": 2, "otel_rl.nonfinite": "nan"})
    assert backend.exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    backend.exporter.shutdown()
    (value,) = backend.scalars()["loss"].values()
    assert math.isnan(value)
