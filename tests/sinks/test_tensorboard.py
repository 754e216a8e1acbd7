"""TensorBoard exporter: the SDK exporter contract, read back with TensorBoard's reader."""

from __future__ import annotations

import random

import pytest
from conftest import f32_close, read_hparams, read_tensorboard
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource

from otel_rl.route.sdk import DELTA_TEMPORALITY, SinkExporter
from otel_rl.sinks.tensorboard import TensorBoardConfig, TensorBoardExporter


def _meter(run="r"):
    reader = InMemoryMetricReader(preferred_temporality=DELTA_TEMPORALITY)
    provider = MeterProvider(resource=Resource.create({"otel_rl.run.id": run}), metric_readers=[reader])
    return provider.get_meter("t"), reader


def test_contract_success_then_failure_after_shutdown_and_double_shutdown(tmp_path):
    exporter = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path))))
    meter, reader = _meter()
    meter.create_gauge("x").set(1.0, {"step": 0})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    assert exporter.force_flush() is True
    exporter.shutdown()
    exporter.shutdown()  # harmless
    meter.create_gauge("x").set(2.0, {"step": 1})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.FAILURE
    assert exporter.force_flush() is False
    assert read_tensorboard(tmp_path / "r")["scalars"]["x"] == {0: 1.0}


def test_float64_round_trips_within_float32_tolerance(tmp_path):
    rng = random.Random(7)
    values = [rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30) for _ in range(500)]
    values += [1e-45, 3.0e38, -0.0, 1 / 3, 123456789.123456789]
    exporter = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path))))
    meter, reader = _meter()
    g = meter.create_gauge("v")
    for step, v in enumerate(values):
        g.set(v, {"step": step})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.SUCCESS
    exporter.shutdown()
    got = read_tensorboard(tmp_path / "r")["scalars"]["v"]
    assert len(got) == len(values)
    for step, v in enumerate(values):
        if abs(v) >= 1.2e-38:  # float32 normal range; subnormals lose relative precision
            assert f32_close(got[step], v), (v, got[step])


def test_histograms_become_tensorboard_histograms(tmp_path):
    exporter = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path))))
    meter, reader = _meter()
    h = meter.create_histogram("lat", explicit_bucket_boundaries_advisory=[1.0, 2.0, 5.0])
    for v in (0.5, 1.5, 1.7, 4.0, 9.0):
        h.record(v, {"step": 2})
    exporter.export(reader.get_metrics_data())
    exporter.shutdown()
    tb = read_tensorboard(tmp_path / "r")
    assert tb["summary_metadata"]["lat"].plugin_data.plugin_name == "histograms"
    hist = tb["histograms"]["lat"][2]
    assert hist.tolist() == [[0.5, 1.0, 1.0], [1.0, 2.0, 2.0], [2.0, 5.0, 1.0], [5.0, 9.0, 1.0]]


def test_hparams_through_the_hparams_plugin(tmp_path):
    exporter = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path))))
    meter, reader = _meter()
    meter.create_gauge("otel_rl.hparams").set(1, {"lr": 0.001, "algo": "ppo", "kl": False})
    exporter.export(reader.get_metrics_data())
    exporter.shutdown()
    assert read_hparams(tmp_path / "r") == {"lr": 0.001, "algo": "ppo", "kl": False}


def test_one_writer_per_run_directory(tmp_path):
    a = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path))))
    b = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path))))
    meter, reader = _meter()
    g = meter.create_gauge("x")
    g.set(1.0, {"step": 0})
    a.export(reader.get_metrics_data())
    g.set(2.0, {"step": 1})
    b.export(reader.get_metrics_data())
    a.shutdown()
    g.set(3.0, {"step": 2})
    b.export(reader.get_metrics_data())
    b.shutdown()
    files = list((tmp_path / "r").glob("events.out.tfevents.*"))
    assert len(files) == 1
    assert read_tensorboard(tmp_path / "r")["scalars"]["x"] == {0: 1.0, 1: 2.0, 2: 3.0}


def test_runs_get_their_own_directories(tmp_path):
    exporter = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path))))
    for run in ("a", "b"):
        meter, reader = _meter(run)
        meter.create_gauge("x").set(1.0 if run == "a" else 2.0, {"step": 5})
        exporter.export(reader.get_metrics_data())
    exporter.shutdown()
    assert read_tensorboard(tmp_path / "a")["scalars"]["x"] == {5: 1.0}
    assert read_tensorboard(tmp_path / "b")["scalars"]["x"] == {5: 2.0}


def test_unwritable_log_dir_returns_failure_not_an_exception(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    exporter = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(blocker))))
    meter, reader = _meter()
    meter.create_gauge("x").set(1.0, {"step": 0})
    assert exporter.export(reader.get_metrics_data()) is MetricExportResult.FAILURE
    exporter.shutdown()


def test_default_log_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OTEL_RL_TENSORBOARD_LOG_DIR", str(tmp_path / "envdir"))
    assert TensorBoardConfig().log_dir == str(tmp_path / "envdir")
    assert TensorBoardConfig(log_dir="explicit").log_dir == "explicit"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_values_are_kept(tmp_path, value):
    exporter = SinkExporter(TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path))))
    meter, reader = _meter()
    meter.create_gauge("x").set(0.0, {"step": 0, "otel_rl.nonfinite": str(value)})
    exporter.export(reader.get_metrics_data())
    exporter.shutdown()
    assert f32_close(read_tensorboard(tmp_path / "r")["scalars"]["x"][0], value)


def test_steps_logged_in_shuffled_order_all_show_in_the_default_viewer(tmp_path):
    """300 steps logged in shuffled order (a replay, workers reporting out of order): a real
    tensorboard server with default flags (its loader drops values whose step went back) shows
    every one of them, across the run and its late-<n> sub-runs, however many those take."""
    import random

    from backends import TensorBoardServer

    from otel_rl import Logger

    steps = list(range(300))
    random.Random(7).shuffle(steps)
    logger = Logger({"run_name": "shuffled", "tensorboard": {"log_dir": str(tmp_path / "tb")},
                     "system_metrics": {"enabled": False}})
    for step in steps:
        logger.log_metrics({"x": step * 0.5}, step=step)
        logger.pipeline.force_flush()  # each step written on its own, as a slow loop's would be
    logger.finish()
    runs = ["shuffled", *sorted(p.relative_to(tmp_path / "tb").as_posix()
                                for p in (tmp_path / "tb" / "shuffled").glob("late-*"))]
    server = TensorBoardServer(tmp_path / "tb").start()
    try:
        server.wait_loaded(runs, ["x"])
        shown = {}
        for run in runs:
            for _, step, value in server.scalars(run, "x"):
                shown.setdefault(step, []).append(value)
    finally:
        server.stop()
    assert {s: v for s, v in shown.items()} == {s: [s * 0.5] for s in range(300)}, \
        f"{len(shown)} of 300 steps shown"
