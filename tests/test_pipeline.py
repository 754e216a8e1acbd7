"""The embedded pipeline: every value of every step arrives, off the training thread."""

from __future__ import annotations

import math

import pytest
from conftest import f32_close, read_hparams, read_tensorboard

import otel_rl
from otel_rl import Logger, Pipeline


def _config(tmp_path, **extra):
    return {"run_name": "r", "tensorboard": {"log_dir": str(tmp_path)}, **extra}


def test_burst_of_5000_steps_inside_one_export_interval_all_arrive(tmp_path):
    # One 60 s interval: without early collection the SDK would merge past 20,000 sets per
    # interval; with DELTA + the step attribute every step is its own point.
    pipeline = Pipeline(_config(tmp_path, export_interval_s=60.0))
    meter = pipeline.get_meter("burst")
    loss, tokens = meter.create_gauge("loss"), meter.create_counter("tokens")
    lat = meter.create_histogram("latency", unit="s")
    for step in range(5000):
        otel_rl.set_step(step)
        loss.set(step * 0.25)
        tokens.add(3)
        lat.record(step % 10)
        lat.record(100 + step % 10)
    pipeline.shutdown()

    tb = read_tensorboard(tmp_path / "r")
    assert tb["scalars"]["loss"] == {s: s * 0.25 for s in range(5000)}
    # a counter shows its running total at each step
    assert tb["scalars"]["tokens"] == {s: 3.0 * (s + 1) for s in range(5000)}
    hist = tb["histograms"]["latency"]
    assert len(hist) == 5000 and all(h[:, 2].sum() == 2 for h in hist.values())
    assert pipeline.stats()["tensorboard"]["dropped_points"] == 0


def test_logger_burst_of_5000_steps(tmp_path):
    logger = Logger(_config(tmp_path, export_interval_s=60.0))
    for step in range(5000):
        logger.log_metrics({"loss": 1.0 / (step + 1), "reward": {"mean": step, "max": 2 * step}},
                           step=step, prefix="train")
    logger.finish()
    scalars = read_tensorboard(tmp_path / "r")["scalars"]
    assert set(scalars) == {"train/loss", "train/reward/mean", "train/reward/max"}
    assert all(f32_close(scalars["train/loss"][s], 1.0 / (s + 1)) for s in range(5000))
    assert scalars["train/reward/max"] == {s: 2.0 * s for s in range(5000)}


def test_names_arrive_as_written_and_bad_values_are_reported(tmp_path, caplog):
    import numpy as np

    logger = Logger(_config(tmp_path))
    for step in range(3):
        logger.log_metrics({
            "ok": step, "": 1.0, "nested": {"": 2.0}, "text": "high", "none": None,
            "vec": np.ones(3), "np_scalar": np.float32(0.5), "flag": True,
            "nan": math.nan, "inf": math.inf, "reward mean[0]": 7.0, "9lives": 9,
        }, step=step)
    logger.finish()

    scalars = read_tensorboard(tmp_path / "r")["scalars"]
    assert set(scalars) == {"ok", "unnamed", "nested/", "np_scalar", "flag", "nan", "inf", "reward mean[0]", "9lives"}
    assert scalars["ok"] == {0: 0.0, 1: 1.0, 2: 2.0}
    assert all(math.isnan(v) for v in scalars["nan"].values()) and len(scalars["nan"]) == 3
    assert scalars["inf"] == {0: math.inf, 1: math.inf, 2: math.inf}
    assert scalars["flag"] == {0: 1.0, 1: 1.0, 2: 1.0}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # one warning per bad key, not one per call
    assert sum("'text'" in w for w in warnings) == 1
    assert sum("'vec'" in w for w in warnings) == 1 and sum("'none'" in w for w in warnings) == 1
    assert logger.pipeline.stats()["rejected_points"] == 9  # text, none, vec at 3 steps


@pytest.mark.parametrize("step", [-1, 1.5, "3", None, True])
def test_bad_step_raises_a_clear_error(tmp_path, step):
    logger = Logger(_config(tmp_path))
    try:
        with pytest.raises((TypeError, ValueError), match="step must be a non-negative int"):
            logger.log_metrics({"x": 1.0}, step=step)
        logger.log_metrics({"x": 1.0}, step=4)
    finally:
        logger.finish()
    assert read_tensorboard(tmp_path / "r")["scalars"]["x"] == {4: 1.0}


def test_hyperparams_reach_the_hparams_plugin(tmp_path):
    logger = Logger(_config(tmp_path))
    logger.log_hyperparams({"lr": 3e-4, "algo": "grpo", "use_kl": True,
                            "policy": {"layers": 12, "dims": [1, 2]}})
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.finish()
    hparams = read_hparams(tmp_path / "r")
    assert hparams == {"lr": pytest.approx(3e-4), "algo": "grpo", "use_kl": True,
                       "policy/layers": 12.0, "policy/dims": "[1, 2]"}


def test_observable_gauge_gets_the_step_current_at_collection(tmp_path):
    pipeline = Pipeline(_config(tmp_path))
    meter = pipeline.get_meter("obs")
    from opentelemetry.metrics import Observation

    meter.create_observable_gauge("queue_depth", callbacks=[lambda options: [Observation(5)]])
    otel_rl.set_step(42)
    pipeline.force_flush()
    otel_rl.set_step(43)
    pipeline.shutdown()
    assert read_tensorboard(tmp_path / "r")["scalars"]["queue_depth"] == {42: 5.0, 43: 5.0}


def test_training_thread_only_enqueues(tmp_path):
    """log_metrics returns in microseconds even while the sink is blocked."""
    import threading
    import time

    # the sink is patched, so the engine runs in this process (helper: false); tests/test_helper.py
    # covers a blocked helper
    logger = Logger(_config(tmp_path, export_interval_s=0.05, helper=False))
    sink = logger.pipeline.sinks[0]
    gate = threading.Event()
    original = sink.write

    def slow_write(batch):
        gate.wait(10)
        original(batch)

    sink.write = slow_write  # a real TensorBoard sink made slow, not a fake backend
    try:
        durations = []
        for step in range(2000):
            t0 = time.perf_counter()
            logger.log_metrics({"a": step, "b": step, "c": step}, step=step)
            durations.append(time.perf_counter() - t0)
            if step % 200 == 0:
                time.sleep(0.06)  # let collections happen while the sink is stuck
        durations.sort()
        # a stuck sink (10 s) never shows up here; only GIL/GC noise of a busy machine can
        assert durations[len(durations) // 2] < 0.001 and durations[-1] < 0.5, (durations[1000], durations[-1])
    finally:
        gate.set()
        logger.finish()
    assert len(read_tensorboard(tmp_path / "r")["scalars"]["a"]) == 2000


def test_a_step_split_by_a_collect_arrives_whole_once(tmp_path):
    """A collect runs while the loop is still recording its step (the reader thread, or an
    early collect): that step is held back and sent whole, once, with the next collect."""
    from conftest import exactly_once, read_tensorboard_events

    pipeline = Pipeline(_config(tmp_path, export_interval_s=60.0))
    meter = pipeline.get_meter("split")
    lat, tokens = meter.create_histogram("lat", explicit_bucket_boundaries_advisory=[1.5]), meter.create_counter("tok")
    otel_rl.set_step(5)
    lat.record(1.0)
    tokens.add(2)
    pipeline.collect_now()  # mid-step
    lat.record(2.0)
    tokens.add(3)
    otel_rl.set_step(6)
    tokens.add(1)
    pipeline.shutdown()
    assert exactly_once(read_tensorboard_events(tmp_path / "r")["tok"]) == {5: 5.0, 6: 6.0}
    (hist,) = read_tensorboard(tmp_path / "r")["histograms"]["lat"].values()
    assert hist[:, 2].sum() == 2


def test_instruments_of_a_run_that_ended_record_nothing_into_the_next_run(tmp_path):
    # the hot path appends straight to the tape; a meter bound to a closed run must not fall
    # back to the run current now (its values would land in someone else's run)
    first = Pipeline({"run_name": "first", "helper": False, "tensorboard": {"log_dir": str(tmp_path)}})
    bound = first.get_meter("m")
    gauge, counter = bound.create_gauge("old"), bound.create_counter("old_total")
    first.set_step(1)
    gauge.set(1.0)
    counter.add(2)
    assert first.shutdown(30)
    second = Pipeline({"run_name": "second", "helper": False, "tensorboard": {"log_dir": str(tmp_path)}})
    second.set_step(5)
    gauge.set(9.0)
    counter.add(9)
    second.get_meter("m").create_gauge("new").set(3.0)
    assert second.shutdown(30)
    assert read_tensorboard(tmp_path / "first")["scalars"] == {"old": {1: 1.0}, "old_total": {1: 2.0}}
    assert read_tensorboard(tmp_path / "second")["scalars"] == {"new": {5: 3.0}}
