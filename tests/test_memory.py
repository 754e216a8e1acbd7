"""Memory stays flat while steps accumulate (bench/memory.py runs the full 1,000,000 steps)."""

from __future__ import annotations

import psutil

import otel_rl
from conftest import read_tensorboard
from otel_rl import Logger, Pipeline


def test_rss_is_flat_over_300k_steps(tmp_path):
    pipeline = Pipeline({"run_name": "m", "tensorboard": {"log_dir": str(tmp_path)},
                         "export_interval_s": 0.5})
    loss = pipeline.get_meter("mem").create_gauge("loss")
    proc = psutil.Process()
    samples = {}
    for step in range(300_000):
        otel_rl.set_step(step)
        loss.set(step * 0.5)
        if step in (50_000, 299_999):
            pipeline.force_flush()
            samples[step] = proc.memory_info().rss
    pipeline.shutdown()
    growth_mb = (samples[299_999] - samples[50_000]) / 2**20
    assert growth_mb < 10, f"RSS grew {growth_mb:.1f} MB over 250k steps"
    stats = pipeline.stats()["tensorboard"]
    assert stats["exported_points"] == 300_000 and stats["dropped_points"] == 0


def test_logger_queue_is_bounded_and_nothing_is_dropped(tmp_path):
    logger = Logger({"run_name": "q", "tensorboard": {"log_dir": str(tmp_path)}}, max_pending_calls=50)
    for step in range(20_000):
        logger.log_metrics({"a": step, "b": -step}, step=step)
        assert len(logger._queue) <= 50
    logger.finish()
    assert logger.inline_calls > 0  # the loop outran the recorder, and recorded inline
    scalars = read_tensorboard(tmp_path / "q")["scalars"]
    assert scalars["a"] == {s: float(s) for s in range(20_000)}
    assert scalars["b"] == {s: float(-s) for s in range(20_000)}
