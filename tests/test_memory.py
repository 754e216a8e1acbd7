"""Memory stays flat while steps accumulate (bench/memory.py runs the full 1,000,000 steps)."""

from __future__ import annotations

import psutil
from conftest import read_tensorboard

import otel_rl
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


def test_logger_tape_is_drained_early_in_a_burst_and_nothing_is_dropped(tmp_path):
    logger = Logger({"run_name": "q", "tensorboard": {"log_dir": str(tmp_path)}, "export_interval_s": 60})
    tape = logger.pipeline.recorder.tape
    longest = 0
    for step in range(20_000):
        logger.log_metrics({"a": step, "b": -step}, step=step)
        longest = max(longest, len(tape))
    logger.finish()
    # the drain thread runs every flush_every_steps steps, not only every 60 s
    assert longest < 20_000 and logger.pipeline.stats()["dropped_records"] == 0
    scalars = read_tensorboard(tmp_path / "q")["scalars"]
    assert scalars["a"] == {s: float(s) for s in range(20_000)}
    assert scalars["b"] == {s: float(-s) for s in range(20_000)}


def _slow_pipeline(tmp_path, **extra):
    pipeline = Pipeline({"run_name": "slow", "tensorboard": {"log_dir": str(tmp_path / "tb")},
                         "export_interval_s": 0.2, "helper": False, **extra})  # the sink is patched
    sink = pipeline.sinks[0]
    real_write = sink.write

    def slow_write(batch):  # the real TensorBoard sink, made slow: 0.3 s per export
        import time

        time.sleep(0.3)
        real_write(batch)

    sink.write = slow_write
    return pipeline


def _run(pipeline, steps):
    loss = pipeline.get_meter("slow").create_gauge("loss")
    proc = psutil.Process()
    rss, durations = [], []
    import time

    for step in range(steps):
        t0 = time.perf_counter()
        otel_rl.set_step(step)
        loss.set(float(step))
        durations.append(time.perf_counter() - t0)
        if step % 50_000 == 0:
            rss.append(proc.memory_info().rss)
    durations.sort()
    return rss, durations[int(len(durations) * 0.999)]


def test_slow_sink_memory_stays_bounded_and_drops_are_counted(tmp_path):
    pipeline = _slow_pipeline(tmp_path, max_queue_points=20_000)
    rss, p999 = _run(pipeline, 200_000)
    stats = pipeline.stats()["tensorboard"]
    pipeline.shutdown(timeout_s=5)
    assert (rss[-1] - rss[1]) / 2**20 < 30, [r / 2**20 for r in rss]
    assert p999 < 0.02, p999  # the training thread does not wait for the slow sink
    final = pipeline.stats()["tensorboard"]
    assert stats["dropped_points"] > 0  # the queue bound was hit: counted, not silent
    assert final["exported_points"] + final["dropped_points"] + final["queued_points"] == 200_000


def test_slow_sink_with_a_spool_drops_nothing_and_memory_stays_flat(tmp_path):
    pipeline = _slow_pipeline(tmp_path, spool_dir=str(tmp_path / "spool"))
    rss, p999 = _run(pipeline, 200_000)
    pipeline.shutdown(timeout_s=120)
    stats = pipeline.stats()["tensorboard"]
    assert (rss[-1] - rss[1]) / 2**20 < 30, [r / 2**20 for r in rss]
    assert stats["dropped_points"] == 0 and stats["exported_points"] == 200_000
    assert read_tensorboard(tmp_path / "tb" / "slow")["scalars"]["loss"] == {s: float(s) for s in range(200_000)}
