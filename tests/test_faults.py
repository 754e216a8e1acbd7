"""Fault injection against the delivery path, read back from each backend's own storage.

Transient and permanent errors, slow sinks, a full spool, a full disk, a trainer SIGKILLed at
random points, a backend that hangs at shutdown. After each: every value of every step exactly
once (or, where the guarantee says so, counted as dropped), nothing acknowledged lost.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from backends import BACKENDS, backend_config, read_counts, read_scalars
from conftest import exactly_once, read_tensorboard_events, sigkill_at_random

from otel_rl.config import load_config
from otel_rl.model.records import Batch, Point
from otel_rl.route.deadline import Deadline
from otel_rl.route.delivery import SinkSet
from otel_rl.route.retry import RetryPolicy
from otel_rl.route.spool import Spool
from otel_rl.sinks import registry
from otel_rl.sinks.base import Sink

FAST_RETRY = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05)


class Faults(Sink):
    """A real backend sink behind injected faults (the backend itself is never mocked)."""

    def __init__(self, inner: Sink, transient: int = 0, poison_run: str | None = None, delay_s: float = 0.0):
        self.name = inner.name
        super().__init__()
        self.inner = inner
        self.transient, self.poison_run, self.delay_s = transient, poison_run, delay_s

    def write(self, batch: Batch) -> None:
        time.sleep(self.delay_s)
        if self.transient > 0:
            self.transient -= 1
            raise ConnectionResetError("injected: connection reset by peer")
        if self.poison_run in batch.runs():
            raise TypeError("injected: a value this backend cannot take")
        self.inner.write(batch)

    def bind_spool(self, spool_id, state):
        self.inner.bind_spool(spool_id, state)

    def checkpoint_state(self):
        return self.inner.checkpoint_state()

    def close(self, status="success"):
        self.inner.shutdown(status)


def _points(run: str, steps) -> list[Point]:
    return [Point(run, "x", s, s * 0.5, 1_700_000_000.0 + s, "gauge") for s in steps]


@pytest.mark.parametrize("name", BACKENDS)
def test_transient_permanent_and_slow_faults_on_every_sink(name, tmp_path, request, caplog):
    """Three transient failures, a poison run mixed into a batch of a good run, and slow writes:
    the good run arrives exactly once, the poison run is quarantined (kept, counted, reported)
    without holding anything behind it, and the worker stays healthy."""
    url = request.getfixturevalue("mlflow_server").url if name == "mlflow" else None
    cfg = load_config({name: backend_config(name, tmp_path, url)}).backends[name]
    sink = Faults(registry.create(name, cfg), transient=3, poison_run="poison", delay_s=0.02)
    spool = Spool(tmp_path / "spool" / name)
    sinks = SinkSet([sink], 100_000, FAST_RETRY, spools={name: spool}).start()
    for block in range(6):
        points = _points("good", range(block * 10, block * 10 + 10))
        if block == 3:
            points += _points("poison", range(5))
        assert sinks.submit(Batch(sorted(points, key=lambda p: (p.run, p.step))))
    assert sinks.shutdown(Deadline(120))
    stats = sinks.stats()[name]
    assert stats["exported_points"] == 60 and stats["quarantined_points"] == 5
    assert stats["failed_attempts"] >= 4 and stats["worker_errors"] == 0
    counts = read_counts(name, tmp_path, "good", url)
    assert counts["x"] == {s: 1 for s in range(60)}
    values = read_scalars(name, tmp_path, "good", url)["x"]
    assert values == {s: s * 0.5 for s in range(60)}
    (kept,) = (tmp_path / "spool" / name / "quarantine").glob("refused-*.json")
    assert "injected: a value this backend cannot take" in kept.read_text()
    assert "refused for good" in caplog.text


def test_full_spool_drops_are_counted_and_the_rest_arrives_once(tmp_path):
    """TensorBoard unwritable (its log dir is a file) while training logs: the spool fills, later
    batches are dropped and counted, training never waits; once the directory is writable, what
    the spool held arrives, each step once."""
    import otel_rl

    blocker = tmp_path / "tb"
    pipeline = otel_rl.Pipeline({"run_name": "full", "export_interval_s": 0.05, "spool_dir": str(tmp_path / "spool"),
                                 "spool_max_bytes": 40_000, "tensorboard": {"log_dir": str(blocker)}})
    shutil.rmtree(blocker)  # init checked that it takes files; it goes away before the first write
    blocker.write_text("not a directory")
    gauge = pipeline.get_meter("t").create_gauge("x")
    started = time.perf_counter()
    for step in range(3000):
        otel_rl.set_step(step)
        gauge.set(step * 2.0)
        if step % 100 == 99:
            pipeline.collect_now()
    assert time.perf_counter() - started < 10  # never blocked on the dead sink
    stats = pipeline.stats()["tensorboard"]
    assert stats["dropped_points"] > 0
    blocker.unlink()  # the disk is back
    pipeline.shutdown(timeout_s=60)
    stats = pipeline.stats()["tensorboard"]
    got = exactly_once(read_tensorboard_events(blocker / "full")["x"])
    assert all(v == s * 2.0 for s, v in got.items())
    assert len(got) + stats["dropped_points"] == 3000  # every value delivered once or counted


def _fill(disk, leave_kib: int):
    """A file filling ``disk`` (the 2 MiB tmpfs) but about ``leave_kib`` KiB; unlink it to free it."""
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (2 * 2**20 - leave_kib * 1024))
    return filler


def _log_20_gauges(pipeline) -> float:
    """20 gauges over 1500 steps, collected every 100 steps; the loop's seconds."""
    import otel_rl

    meter = pipeline.get_meter("t")
    gauges = [meter.create_gauge(f"g{i:02d}") for i in range(20)]
    t0 = time.monotonic()
    for step in range(1500):
        otel_rl.set_step(step)
        for i, g in enumerate(gauges):
            g.set(step + i / 100)
        if step % 100 == 99:
            pipeline.collect_now()
    return time.monotonic() - t0


def _assert_20_gauges_exactly_once(run_dir) -> None:
    """Every value of :func:`_log_20_gauges` in the run's event files, each step once."""
    events = read_tensorboard_events(run_dir)
    for i in range(20):
        got = exactly_once(events[f"g{i:02d}"])
        assert got == pytest.approx({s: s + i / 100 for s in range(1500)}, rel=1e-6)


def test_a_disk_that_fills_up_and_frees_loses_nothing(tmp_path, small_disk):
    """TensorBoard's disk fills up mid-run (ENOSPC, records torn half-way): the batch is rolled
    back and retried, the spool (on another disk) holds the rest; once space is freed every step
    is in the event file exactly once and the file reads cleanly."""
    import otel_rl

    filler = _fill(small_disk, leave_kib=96)
    pipeline = otel_rl.Pipeline({"run_name": "disk", "export_interval_s": 0.05, "spool_dir": str(tmp_path / "spool"),
                                 "tensorboard": {"log_dir": str(small_disk / "tb")}})
    _log_20_gauges(pipeline)
    deadline = time.monotonic() + 30
    while pipeline.stats()["tensorboard"]["failed_attempts"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pipeline.stats()["tensorboard"]["failed_attempts"] > 0  # the disk really was full
    filler.unlink()
    assert pipeline.shutdown(timeout_s=60)
    _assert_20_gauges_exactly_once(small_disk / "tb" / "disk")
    assert pipeline.stats()["tensorboard"]["dropped_points"] == 0


def test_a_full_disk_under_the_helpers_private_spool_loses_nothing(tmp_path, small_disk, monkeypatch):
    """The helper's own spool (no ``spool_dir``: a private directory, here on a 2 MiB tmpfs)
    fills up mid-run. The helper cannot queue a frame, so it does not acknowledge it; the
    training process keeps the frames and the loop goes on. Once space is freed every step is in
    TensorBoard exactly once."""
    import otel_rl

    monkeypatch.setenv("OTEL_RL_HELPER_DIR", str(small_disk))
    filler = _fill(small_disk, leave_kib=64)
    pipeline = otel_rl.Pipeline({"run_name": "pdisk", "export_interval_s": 0.05,
                                 "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    loop_s = _log_20_gauges(pipeline)
    deadline = time.monotonic() + 30
    while pipeline.stats()["helper_unacknowledged_frames"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = pipeline.stats()
    assert stats["helper_unacknowledged_frames"] > 0, stats  # the disk really was full
    assert loop_s < 20, loop_s  # the loop never waited for the disk
    time.sleep(1.0)
    filler.unlink()
    assert pipeline.shutdown(timeout_s=60)
    _assert_20_gauges_exactly_once(tmp_path / "tb" / "pdisk")
    final = pipeline.stats()
    assert final["tensorboard"]["dropped_points"] == 0 and final["helper_lost_records"] == 0, final


def test_a_full_disk_under_the_spool_with_the_engine_in_process_loses_nothing(tmp_path, small_disk):
    """``helper: false`` and ``spool_dir`` on a disk that fills up: a batch the spool cannot store
    (its torn write cut back) waits in memory, in order, and is stored once there is room; every
    step is then in TensorBoard exactly once."""
    import otel_rl

    filler = _fill(small_disk, leave_kib=64)
    pipeline = otel_rl.Pipeline({"run_name": "idisk", "helper": False, "export_interval_s": 0.05,
                                 "spool_dir": str(small_disk / "spool"),
                                 "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    _log_20_gauges(pipeline)
    pipeline.collect_now()
    held = pipeline.stats()["tensorboard"]["unstored_points"]
    assert held > 0  # the disk really was full
    assert not pipeline.force_flush(2)  # not delivered yet, and it says so
    filler.unlink()
    assert pipeline.force_flush(60)
    assert pipeline.stats()["tensorboard"]["unstored_points"] == 0
    assert pipeline.shutdown(timeout_s=60)
    _assert_20_gauges_exactly_once(tmp_path / "tb" / "idisk")
    assert pipeline.stats()["tensorboard"]["dropped_points"] == 0


KILL_TRAINER = """
import json, sys, otel_rl
backends, spool, first, count = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pipeline = otel_rl.init({"run_name": "kills", "export_interval_s": 0.02, "spool_dir": spool, **backends})
from opentelemetry import metrics
x = metrics.get_meter("kill").create_gauge("x")
print("ready", flush=True)
for step in range(first, first + count):
    otel_rl.set_step(step)
    x.set(step * 1.5)
    if step % 5 == 4:
        pipeline.force_flush()
        print(step, flush=True)  # every step up to here is delivered: acknowledged
otel_rl.shutdown()
"""


def _kill_repeatedly(backends: dict, spool, kills: int, seed: int, after_first_ack: bool = False) -> set[int]:
    """Start a trainer, SIGKILL it at a random point, `kills` times, then once run it to the end;
    the steps the trainers saw delivered (acknowledged). ``after_first_ack``: see
    :func:`conftest.sigkill_at_random`."""
    import json

    rng = random.Random(seed)
    config = json.dumps(backends)
    acknowledged: set[int] = set()
    for attempt in range(kills):
        first = attempt * 1000
        acknowledged |= sigkill_at_random([sys.executable, "-c", KILL_TRAINER, config, str(spool), str(first), "600"],
                                          rng, first, after_first_ack=after_first_ack)
    final = subprocess.run([sys.executable, "-c", KILL_TRAINER, config, str(spool), "99000", "5"],
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    return acknowledged


def test_trainer_sigkilled_22_times_every_acknowledged_value_exactly_once(tmp_path):
    """SIGKILL at random points (while starting and replaying its spool, between a write and its
    checkpoint, mid-flush). Every step a trainer saw delivered is in TensorBoard, and no step is
    there twice: the event file is cut back to the spool's checkpoint before the replay."""
    log_dir = tmp_path / "tb"
    acknowledged = _kill_repeatedly({"tensorboard": {"log_dir": str(log_dir)}}, tmp_path / "spool", 22, seed=11)
    got = exactly_once(read_tensorboard_events(log_dir / "kills")["x"])
    assert len(acknowledged) > 500, len(acknowledged)
    missing = sorted(acknowledged - set(got))
    assert not missing, missing[:20]
    assert all(v == s * 1.5 for s, v in got.items())


def test_trainer_sigkilled_into_a_real_mlflow_server_exactly_once(tmp_path, mlflow_server):
    """The same against a real MLflow server: a replayed batch re-sends identical rows, which
    MLflow stores once, so after 12 kills every acknowledged step is there exactly once."""
    backends = {"tensorboard": {"enabled": False},
                "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": f"exp-{tmp_path.name}"}}
    acknowledged = _kill_repeatedly(backends, tmp_path / "spool", 12, seed=5, after_first_ack=True)
    counts = read_counts("mlflow", tmp_path, "kills", mlflow_server.url)["x"]
    assert len(acknowledged) > 200, len(acknowledged)
    assert sorted(s for s, n in counts.items() if n > 1) == []
    assert sorted(acknowledged - set(counts)) == []
    assert read_scalars("mlflow", tmp_path, "kills", mlflow_server.url)["x"] == {s: s * 1.5 for s in counts}


class HungServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung backend)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)

    def close(self) -> None:
        self._sock.close()
        for c in self._conns:
            c.close()


@pytest.mark.parametrize("timeout_s", [1.0, 3.0])
def test_shutdown_returns_within_its_deadline_whatever_the_backends_do(tmp_path, timeout_s):
    """MLflow and an OTLP collector that accept connections and never answer, each with a 120 s
    client timeout: shutdown(timeout_s=T) still returns within T + 1 s, and TensorBoard, which
    works, has every step."""
    import otel_rl

    hung = HungServer()
    try:
        pipeline = otel_rl.Pipeline({
            "run_name": "hung", "export_interval_s": 0.05, "tensorboard": {"log_dir": str(tmp_path / "tb")},
            "mlflow": {"enabled": True, "tracking_uri": f"http://127.0.0.1:{hung.port}", "timeout_s": 120},
            "otlp": {"enabled": True, "endpoint": f"http://127.0.0.1:{hung.port}", "timeout_s": 120}})
        gauge = pipeline.get_meter("t").create_gauge("x")
        for step in range(200):
            otel_rl.set_step(step)
            gauge.set(float(step))
        time.sleep(0.5)  # the hung sinks are now stuck in a call
        started = time.monotonic()
        delivered = pipeline.shutdown(timeout_s=timeout_s)
        took = time.monotonic() - started
    finally:
        hung.close()
    assert took <= timeout_s + 1.0, took
    assert delivered is False  # and it says so
    assert exactly_once(read_tensorboard_events(tmp_path / "tb" / "hung")["x"]) == {s: float(s) for s in range(200)}


def test_shutdown_without_an_argument_keeps_the_configured_deadline(tmp_path):
    """``otel_rl.shutdown()`` with no argument returns within the run's ``shutdown_timeout_s``
    (here 2 s, with an OTLP collector that never answers), not within a default of its own."""
    import otel_rl

    hung = HungServer()
    try:
        otel_rl.init({"run_name": "cfg", "shutdown_timeout_s": 2.0, "tensorboard": {"log_dir": str(tmp_path / "tb")},
                      "otlp": {"enabled": True, "endpoint": f"http://127.0.0.1:{hung.port}", "timeout_s": 120}},
                     set_global=False)
        otel_rl.set_step(0)
        otel_rl.get_pipeline().get_meter("t").create_gauge("x").set(1.0)
        time.sleep(0.5)  # the OTLP sink is now stuck in a call
        started = time.monotonic()
        delivered = otel_rl.shutdown()
        took = time.monotonic() - started
    finally:
        hung.close()
    assert took <= 3.0, took
    assert delivered is False
    assert exactly_once(read_tensorboard_events(tmp_path / "tb" / "cfg")["x"]) == {0: 1.0}


def test_logger_calls_after_finish_warn_once_and_are_counted(tmp_path, caplog):
    import otel_rl

    logger = otel_rl.Logger({"run_name": "late", "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finish()
    logger.log_metrics({"loss": 2.0}, step=1)
    logger.log_hyperparams({"lr": 0.1})
    assert logger.calls_after_finish == 2
    assert caplog.text.count("after finish()") == 1
    assert exactly_once(read_tensorboard_events(tmp_path / "tb" / "late")["loss"]) == {0: 1.0}


EXITS_WITHOUT_SHUTDOWN = """
import sys, otel_rl
otel_rl.init({"run_name": "atexit", "export_interval_s": 60, "tensorboard": {"log_dir": sys.argv[1]}})
from opentelemetry import metrics
loss = metrics.get_meter("t").create_gauge("loss")
for step in range(5):
    otel_rl.set_step(step)
    with otel_rl.span("rollout"):
        loss.set(step / 10)
if sys.argv[2] == "crash":
    raise RuntimeError("training crashed")
"""


@pytest.mark.parametrize("ending", ["normal", "crash"])
def test_interpreter_exit_runs_shutdown(tmp_path, ending):
    """No otel_rl.shutdown() call, a 60 s export interval: at exit the last step's timing and
    every value still arrive; a crash marks the run failed (TensorBoard's HParams session end)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader as EventFileLoader
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    proc = subprocess.run([sys.executable, "-c", EXITS_WITHOUT_SHUTDOWN, str(tmp_path / "tb"), ending],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == (1 if ending == "crash" else 0), proc.stderr[-2000:]
    events = read_tensorboard_events(tmp_path / "tb" / "atexit")
    assert exactly_once(events["loss"]) == pytest.approx({s: s / 10 for s in range(5)})
    assert sorted(exactly_once(events["timing/rollout"])) == list(range(5))  # the last step's too
    statuses = []
    for path in (tmp_path / "tb" / "atexit").glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_end_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    statuses.append(data.session_end_info.status)
    assert statuses == [api_pb2.STATUS_FAILURE if ending == "crash" else api_pb2.STATUS_SUCCESS]


def test_ranks_sharing_a_spool_dir_get_their_own_and_a_second_process_a_clear_error(tmp_path):
    import otel_rl
    from otel_rl.errors import SpoolLockedError

    cfg = {"run_name": "shared", "spool_dir": str(tmp_path / "spool"), "tensorboard": {"log_dir": str(tmp_path / "tb")}}
    rank0 = otel_rl.Pipeline({**cfg, "rank": 0})
    rank1 = otel_rl.Pipeline({**cfg, "rank": 1})  # same OTEL_RL_SPOOL_DIR: rank-0/ and rank-1/
    with pytest.raises(SpoolLockedError, match="in use by pid"):
        otel_rl.Pipeline({**cfg, "rank": 0})
    rank0.shutdown()
    rank1.shutdown()
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["rank-0", "rank-1"]
