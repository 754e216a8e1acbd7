"""Backend-specific behaviour, each against the real backend."""

from __future__ import annotations

import time

import pytest
from backends import (
    BACKENDS,
    MlflowServer,
    backend_config,
    free_port,
    read_mlflow,
    read_scalars,
    read_swanlab,
    read_wandb,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource

from otel_rl import Logger
from otel_rl.config import load_config
from otel_rl.errors import ConfigError
from otel_rl.route.sdk import DELTA_TEMPORALITY, SinkExporter
from otel_rl.sinks import registry
from otel_rl.sinks.mlflow import MlflowConfig, MlflowExporter
from otel_rl.sinks.swanlab import SwanlabConfig, SwanlabExporter


def _meter(run="r"):
    reader = InMemoryMetricReader(preferred_temporality=DELTA_TEMPORALITY,
                                  cardinality_limits={c: 100_000 for c in DELTA_TEMPORALITY})
    provider = MeterProvider(resource=Resource.create({"otel_rl.run.id": run}), metric_readers=[reader])
    return provider.get_meter("b"), reader


# -- fan-out ----------------------------------------------------------------------------------

def test_all_four_backends_at_once_from_one_stream(tmp_path, mlflow_server):
    cfg = {name: backend_config(name, tmp_path, mlflow_server.url) for name in BACKENDS}
    logger = Logger({"run_name": "fan", "export_interval_s": 0.2, **cfg})
    logger.log_hyperparams({"lr": 0.01})
    for step in range(200):
        logger.log_metrics({"loss": step / 7, "reward": float(step)}, step=step, prefix="train")
    logger.finish()
    stats = logger.pipeline.stats()
    for name in BACKENDS:
        scalars = read_scalars(name, tmp_path, "fan", mlflow_server.url)
        assert sorted(scalars["train/reward"]) == list(range(200)), name
        assert all(scalars["train/reward"][s] == float(s) for s in range(200)), name
        assert stats[name]["exported_points"] == 401 and stats[name]["dropped_points"] == 0, name


# -- MLflow -----------------------------------------------------------------------------------

def test_mlflow_batches_at_most_1000_metrics_per_request(tmp_path, mlflow_server):
    exporter = SinkExporter(MlflowExporter(MlflowConfig(tracking_uri=mlflow_server.url, experiment="batching")))
    calls = []
    real_log_batch = exporter.sink._client.log_batch

    def counting_log_batch(run_id, metrics=(), params=(), **kwargs):  # observe, then call the real one
        calls.append((len(metrics), len(params)))
        return real_log_batch(run_id, metrics=metrics, params=params, **kwargs)

    exporter.sink._client.log_batch = counting_log_batch
    meter, reader = _meter("batching")
    gauges = [meter.create_gauge(f"m{i}") for i in range(250)]
    for step in range(10):
        for i, g in enumerate(gauges):
            g.set(i + step, {"step": step})
    meter.create_gauge("otel_rl.hparams").set(1, {f"p{i}": i for i in range(120)})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    assert sorted(calls) == [(0, 20), (0, 100), (500, 0), (1000, 0), (1000, 0)]
    data = read_mlflow(mlflow_server.url, "batching", "batching")
    assert len(data["scalars"]) == 250 and len(data["params"]) == 120
    assert data["scalars"]["m7"] == {s: 7.0 + s for s in range(10)}
    assert data["status"] == "FINISHED"


def test_mlflow_names_are_sanitized_with_collisions_reported_once(tmp_path, mlflow_server, caplog):
    exporter = SinkExporter(MlflowExporter(MlflowConfig(tracking_uri=mlflow_server.url, experiment="names")))
    meter, reader = _meter("names")
    loss = meter.create_gauge("loss")  # attribute values can hold any character
    loss.set(1.0, {"step": 0, "part": "a(b)"})
    loss.set(2.0, {"step": 0, "part": "a[b]"})
    meter.create_gauge("x" * 255).set(3.0, {"step": 0})  # legal in OTel, too long for MLflow
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    keys = read_mlflow(mlflow_server.url, "names", "names")["scalars"]
    assert len(keys) == 3 and keys["loss/part:a_b_"] == {0: 1.0}
    assert all(len(k) <= 250 for k in keys)
    assert sum("both map to" in r.getMessage() for r in caplog.records) == 1


def test_mlflow_writers_racing_to_create_the_experiment_both_deliver(tmp_path, mlflow_server):
    """Two collector replicas (or ranks) starting together both find no experiment and both
    create it; the loser's RESOURCE_ALREADY_EXISTS used to drop its first batch as a refusal."""
    from mlflow.tracking import MlflowClient

    exporter = SinkExporter(MlflowExporter(MlflowConfig(tracking_uri=mlflow_server.url, experiment="race")))
    real_get = exporter.sink._client.get_experiment_by_name

    def the_other_writer_wins(name):  # the other writer creates it between our read and our create
        found = real_get(name)
        if found is None:
            MlflowClient(tracking_uri=mlflow_server.url).create_experiment(name)
        return found

    exporter.sink._client.get_experiment_by_name = the_other_writer_wins
    meter, reader = _meter("race")
    loss = meter.create_gauge("loss")
    for step in range(3):
        loss.set(step / 2, {"step": step})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    assert read_mlflow(mlflow_server.url, "race", "race")["scalars"]["loss"] == {0: 0.0, 1: 0.5, 2: 1.0}


def test_mlflow_embedded_sqlite_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config({"mlflow": {"enabled": True}}).backends["mlflow"]
    assert cfg.tracking_uri == "sqlite:///mlflow.db"
    exporter = SinkExporter(MlflowExporter(cfg))
    meter, reader = _meter("embedded")
    meter.create_gauge("loss").set(0.25, {"step": 4})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    assert (tmp_path / "mlflow.db").is_file()
    assert read_mlflow("sqlite:///mlflow.db", "otel-rl", "embedded")["scalars"] == {"loss": {4: 0.25}}


def test_mlflow_server_down_at_start_buffers_and_never_blocks_training(tmp_path):
    port = free_port()
    server = MlflowServer(tmp_path, port)
    logger = Logger({"run_name": "late-server", "export_interval_s": 0.1,
                     "tensorboard": {"enabled": False},
                     "mlflow": {"enabled": True, "tracking_uri": server.url, "experiment": "down"}})
    durations = []
    for step in range(100):
        t0 = time.perf_counter()
        logger.log_metrics({"loss": step * 0.1}, step=step)
        durations.append(time.perf_counter() - t0)
        time.sleep(0.01)
    durations.sort()
    # MLflow's connection attempts (1 s timeout) never reach the training thread
    assert durations[50] < 0.001 and durations[-1] < 0.5, f"log_metrics took up to {durations[-1]:.3f}s"
    deadline = time.monotonic() + 60  # the helper imports MLflow on the sink's thread first (seconds)
    while (stats := logger.pipeline.stats()["mlflow"])["failed_attempts"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stats["failed_attempts"] > 0 and stats["queued_points"] > 0 and stats["exported_points"] == 0
    server.start()
    try:
        logger.finish()
        data = read_mlflow(server.url, "down", "late-server")
    finally:
        server.stop()
    assert data["scalars"]["loss"] == {s: pytest.approx(s * 0.1) for s in range(100)}
    assert "duplicates" not in data["scalars"]["loss"]
    assert logger.pipeline.stats()["mlflow"]["dropped_points"] == 0


# -- W&B --------------------------------------------------------------------------------------

def test_wandb_histograms_and_config(tmp_path):
    cfg = load_config({"wandb": backend_config("wandb", tmp_path)}).backends["wandb"]
    exporter = SinkExporter(registry.create("wandb", cfg))
    meter, reader = _meter("wb")
    meter.create_gauge("otel_rl.hparams").set(1, {"lr": 0.5})
    h = meter.create_histogram("adv", explicit_bucket_boundaries_advisory=[0.0, 1.0])
    for step in (2, 1):  # out of order inside one export: sorted before logging
        h.record(0.5, {"step": step})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    run = read_wandb(tmp_path / "wb", "wb")
    assert run["config"] == {"lr": 0.5}
    assert [r["otel_rl/step"] for r in run["rows"]] == [1, 2]


def test_wandb_replayed_batches_are_written_once_across_restarts(tmp_path, monkeypatch):
    """A batch replayed from a spool after a crash (written to W&B, spool checkpoint not moved)
    is skipped by the next process, also once the journal has been cut back; the rows are in the
    offline run exactly once."""
    from otel_rl.model.records import Batch, Point
    from otel_rl.sinks import wandb as wandb_sink

    monkeypatch.setattr(wandb_sink._Journal, "LIMIT", 3)  # cut back every 6 lines
    cfg = load_config({"wandb": backend_config("wandb", tmp_path)}).backends["wandb"]

    def batch(step):
        return Batch(points=[Point("rp", "loss", step, step * 0.5, 1000.0 + step)])

    first = registry.create("wandb", cfg)
    first.bind_spool("spool-1", None)
    for step in range(8):
        first.write(batch(step))
    first.close()  # as far as W&B is concerned, the process ends here; its spool keeps steps 5-7
    journal = next((tmp_path / "wb" / "wandb").glob("otel-rl-written-*.json")).read_text().split()
    assert 3 <= len(journal) <= 6, journal  # appended per batch, cut back to the last LIMIT
    second = registry.create("wandb", cfg)
    second.bind_spool("spool-1", None)  # the restarted process: same spool, same W&B run
    for step in (5, 6, 7, 8, 9):  # the replay, then new batches
        second.write(batch(step))
    second.close()
    rows = read_wandb(tmp_path / "wb", "rp")["rows"]
    assert sorted(r["otel_rl/step"] for r in rows) == list(range(10))


def test_wandb_config_errors():
    with pytest.raises(ConfigError, match=r"wandb.mode: 'cloud' is not allowed; allowed: 'online', 'offline'"):
        load_config({"wandb": {"mode": "cloud"}})
    with pytest.raises(ConfigError, match=r"wandb.api_key_file: '/nonexistent' is not a readable file"):
        load_config({"wandb": {"api_key_file": "/nonexistent"}})


# -- SwanLab ----------------------------------------------------------------------------------

def test_swanlab_duplicate_steps_last_in_batch_wins_later_ones_are_counted(tmp_path, caplog):
    exporter = SinkExporter(SwanlabExporter(SwanlabConfig(mode="offline", logdir=str(tmp_path / "sl"))))
    meter, reader = _meter("dup")
    g = meter.create_gauge("loss")
    g.set(1.0, {"step": 0, "src": "a"})
    g.set(5.0, {"step": 1})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    g.set(9.0, {"step": 1})  # the same (key, step) again in a later export
    g.set(6.0, {"step": 2})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    scalars = read_swanlab(tmp_path / "sl", "dup")["scalars"]
    assert scalars["loss"] == {1: 5.0, 2: 6.0}
    assert scalars["loss/src:a"] == {0: 1.0}
    assert exporter.sink.duplicates == 1
    assert sum("already has a value at step 1" in r.getMessage() for r in caplog.records) == 1


def test_swanlab_local_mode(tmp_path):
    exporter = SinkExporter(SwanlabExporter(SwanlabConfig(mode="local", logdir=str(tmp_path / "sl"))))
    meter, reader = _meter("local")
    meter.create_gauge("reward").set(3.0, {"step": 7})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    assert read_swanlab(tmp_path / "sl", "local")["scalars"] == {"reward": {7: 3.0}}


def test_swanlab_histograms_become_scalars_and_names_are_trimmed(tmp_path):
    exporter = SinkExporter(SwanlabExporter(SwanlabConfig(mode="offline", logdir=str(tmp_path / "sl"))))
    meter, reader = _meter("h")
    h = meter.create_histogram("lat")
    h.record(2.0, {"step": 0})
    h.record(4.0, {"step": 0})
    meter.create_gauge("odd").set(1.0, {"step": 0, "k": "v. "})  # SwanLab trims trailing ". "
    exporter.export(reader.get_metrics_data())
    exporter.shutdown()
    scalars = read_swanlab(tmp_path / "sl", "h")["scalars"]
    assert scalars["lat/mean"] == {0: 3.0} and scalars["lat/count"] == {0: 2.0}
    assert scalars["odd/k:v"] == {0: 1.0}


def test_secrets_are_never_logged_or_put_in_run_configs(tmp_path, caplog, monkeypatch):
    import logging

    caplog.set_level(logging.DEBUG)
    secret = "sk-otelrl-test-" + "9" * 24
    key_file = tmp_path / "wandb.key"
    key_file.write_text(secret + "\n")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = Logger({"run_name": "sec", "tensorboard": {"enabled": False},
                     "wandb": {**backend_config("wandb", tmp_path), "api_key_file": str(key_file)}})
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finish()
    run = read_wandb(tmp_path / "wb", "sec")
    assert secret not in str(run["config"]) and secret not in str(run["rows"])
    assert all(secret not in r.getMessage() for r in caplog.records)
    from otel_rl.config import load_config

    assert secret not in repr(load_config({"wandb": {"api_key_file": str(key_file)}}))
