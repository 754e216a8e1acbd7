"""Runs: several per process (one after another, and at once in threads), run identity
(a reused run name starts a new run unless ``resume``), the status of a crashed run in every
backend that has one, the step a span's timing belongs to, and raw-API bursts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from backends import read_mlflow, read_wandb
from conftest import exactly_once, read_tensorboard, read_tensorboard_events
from opentelemetry import metrics

import otel_rl
from otel_rl import Logger, Pipeline


def test_runs_one_after_another_in_one_process_each_complete(tmp_path):
    """A notebook: init, log, shutdown, init again: the global meter records into the new run."""
    meter = metrics.get_meter("nb")  # created once, before any run, as modules do at import
    loss = meter.create_gauge("loss")
    for run in ("first", "second"):
        otel_rl.init({"run_name": run, "tensorboard": {"log_dir": str(tmp_path)}})
        for step in range(20):
            otel_rl.set_step(step)
            loss.set(step if run == "first" else -step)
        assert otel_rl.shutdown()
    assert read_tensorboard(tmp_path / "first")["scalars"]["loss"] == {s: float(s) for s in range(20)}
    assert read_tensorboard(tmp_path / "second")["scalars"]["loss"] == {s: float(-s) for s in range(20)}


def test_a_sweep_in_threads_keeps_each_run_complete_and_separate(tmp_path):
    loss = metrics.get_meter("sweep").create_gauge("loss")
    errors = []

    def trial(i: int) -> None:
        try:
            otel_rl.init({"run_name": f"trial-{i}", "tensorboard": {"log_dir": str(tmp_path)}})
            for step in range(300):
                otel_rl.set_step(step)  # each thread's own run and step
                with otel_rl.span("rollout"):
                    loss.set(1000 * i + step)
                if step % 50 == 0:
                    time.sleep(0.01)  # let the threads interleave
            assert otel_rl.shutdown()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(3):
        scalars = read_tensorboard(tmp_path / f"trial-{i}")["scalars"]
        assert scalars["loss"] == {s: float(1000 * i + s) for s in range(300)}
        assert sorted(scalars["timing/rollout"]) == list(range(300))


def test_a_reused_run_name_starts_a_new_run_unless_resume(tmp_path, mlflow_server):
    experiment = f"exp-{tmp_path.name}"

    def run(values: list[float], resume: bool) -> None:
        logger = Logger({"run_name": "same", "resume": resume, "tensorboard": {"log_dir": str(tmp_path / "tb")},
                         "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": experiment},
                         "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb")}})
        for step, v in enumerate(values):
            logger.log_metrics({"lr": v}, step=step)
        logger.finish()

    run([1.0, 2.0], resume=False)
    run([5.0], resume=False)  # the same name again: a new run everywhere
    run([7.0, 8.0, 9.0], resume=True)  # continues the latest one
    assert sorted(p.name for p in (tmp_path / "tb").iterdir() if p.is_dir()) == ["same", "same-2"]
    assert exactly_once(read_tensorboard_events(tmp_path / "tb" / "same")["lr"]) == {0: 1.0, 1: 2.0}
    assert read_tensorboard_events(tmp_path / "tb" / "same-2")["lr"] == [(0, 5.0), (0, 7.0), (1, 8.0), (2, 9.0)]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    histories = [sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "lr")) for r in runs]
    assert histories == [[(0, 1.0), (1, 2.0)], [(0, 5.0), (0, 7.0), (1, 8.0), (2, 9.0)]]

    # W&B: a second run named "same", then the resumed process appends to that one
    import glob

    from backends import _wandb_records

    per_id: dict = {}
    for run_dir in glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*")):
        records = _wandb_records(run_dir)
        run_id = next(r for r in records if r["type"] == "run")["run"]["run_id"]
        per_id.setdefault(run_id, []).extend(r["history"]["item"]["lr"] for r in records if r["type"] == "history")
    assert sorted(sorted(v) for v in per_id.values()) == [[1.0, 2.0], [5.0, 7.0, 8.0, 9.0]]


CRASHES = """
import sys, otel_rl
cfg = {"run_name": "crashed", "export_interval_s": 60, "tensorboard": {"log_dir": sys.argv[1] + "/tb"},
       "mlflow": {"enabled": True, "tracking_uri": sys.argv[2], "experiment": sys.argv[3]},
       "wandb": {"enabled": True, "mode": "offline", "dir": sys.argv[1] + "/wb"},
       "swanlab": {"enabled": True, "mode": "offline", "logdir": sys.argv[1] + "/sl"}}
logger = otel_rl.Logger(cfg)
for step in range(3):
    logger.log_metrics({"loss": step}, step=step)
raise RuntimeError("training crashed")
"""


def test_a_crashed_run_is_marked_failed_in_every_backend_with_a_status(tmp_path, mlflow_server):
    experiment = f"exp-{tmp_path.name}"
    proc = subprocess.run([sys.executable, "-c", CRASHES, str(tmp_path), mlflow_server.url, experiment],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1 and "training crashed" in proc.stderr
    found = read_mlflow(mlflow_server.url, experiment, "crashed")
    assert found["status"] == "FAILED" and found["scalars"]["loss"] == {0: 0.0, 1: 1.0, 2: 2.0}
    import glob

    from backends import _wandb_records

    (run_dir,) = glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*"))
    exits = [r["exit"] for r in _wandb_records(run_dir) if r["type"] == "exit"]
    assert exits and exits[-1].get("exitCode", exits[-1].get("exit_code")) == 1, exits
    assert read_wandb(tmp_path / "wb", "crashed")["scalars"]["loss"] == {0: 0.0, 1: 1.0, 2: 2.0}
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    statuses = [plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).session_end_info.status
                for path in (tmp_path / "tb" / "crashed").glob("events.out.tfevents.*")
                for e in LegacyEventFileLoader(str(path)).Load() for v in e.summary.value
                if v.tag == "_hparams_/session_end_info"]
    assert statuses == [api_pb2.STATUS_FAILURE]


def _timings(tmp_path, run):
    return read_tensorboard(tmp_path / run)["scalars"]


def test_span_timing_goes_to_the_step_the_iteration_logs_at(tmp_path):
    """The rule of otel_rl.api.timing, for the three loop shapes users write."""
    # 1. set the step first, then the phases, then the values
    logger = Logger({"run_name": "first", "tensorboard": {"log_dir": str(tmp_path)}})
    for i in range(1, 6):
        otel_rl.set_step(i * 10)
        with otel_rl.span("rollout"):
            pass
        logger.log_metrics({"loss": i}, step=i * 10)
    logger.finish()
    assert sorted(_timings(tmp_path, "first")["timing/rollout"]) == [10, 20, 30, 40, 50]

    # 2. log at the end (NeMo-RL, verl): the phases, then log_metrics(step=i)
    logger = Logger({"run_name": "end", "tensorboard": {"log_dir": str(tmp_path)}})
    for i in range(1, 6):
        with otel_rl.span("rollout"):
            pass
        with otel_rl.span("train"):
            pass
        logger.log_metrics({"loss": i}, step=i * 10)
    logger.finish()
    scalars = _timings(tmp_path, "end")
    assert sorted(scalars["timing/rollout"]) == sorted(scalars["timing/train"]) == [10, 20, 30, 40, 50]

    # 3. CleanRL: global_step moves during the rollout; the losses are logged at the end
    otel_rl.init({"run_name": "cleanrl", "tensorboard": {"log_dir": str(tmp_path)}})
    loss = metrics.get_meter("ppo").create_gauge("losses/value_loss")
    global_step = 0
    for _ in range(5):
        with otel_rl.span("rollout"):
            for _ in range(4):
                global_step += 8
                otel_rl.set_step(global_step)
        with otel_rl.span("train"):
            pass
        loss.set(1.0)
    otel_rl.shutdown()
    scalars = _timings(tmp_path, "cleanrl")
    assert sorted(scalars["timing/rollout"]) == sorted(scalars["timing/train"]) == [32, 64, 96, 128, 160]

    # 4. set the step first and log nothing after the phases: the step they ended at
    pipeline = Pipeline({"run_name": "quiet", "tensorboard": {"log_dir": str(tmp_path)}})
    for i in range(1, 4):
        otel_rl.set_step(i)
        with otel_rl.span("rollout"):
            pass
    pipeline.shutdown()
    assert sorted(_timings(tmp_path, "quiet")["timing/rollout"]) == [1, 2, 3]


def test_a_raw_api_burst_with_explicit_steps_arrives_whole(tmp_path):
    """25,000 steps stamped with a step attribute (no set_step) inside one 60 s interval."""
    pipeline = otel_rl.init({"run_name": "burst", "export_interval_s": 60, "tensorboard": {"log_dir": str(tmp_path)}})
    gauge = metrics.get_meter("raw").create_gauge("reward")
    for step in range(25_000):
        gauge.set(step * 0.5, {"step": step})
    assert otel_rl.shutdown()
    assert read_tensorboard(tmp_path / "burst")["scalars"]["reward"] == {s: s * 0.5 for s in range(25_000)}
    assert pipeline.stats()["tensorboard"]["dropped_points"] == 0


@pytest.fixture(autouse=True)
def _no_run_left_over():
    yield
    while otel_rl.get_pipeline() is not None and not otel_rl.get_pipeline()._closed:
        otel_rl.shutdown()


def test_wandb_and_swanlab_runs_start_when_training_starts(tmp_path):
    """Not at the first export (here a 60 s interval: the first write is at finish)."""
    import glob
    from datetime import datetime

    from backends import _wandb_records

    t0 = time.time()
    logger = Logger({"run_name": "starts", "export_interval_s": 60, "tensorboard": {"enabled": False},
                     "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb")},
                     "swanlab": {"enabled": True, "mode": "offline", "logdir": str(tmp_path / "sl")}})
    t1 = time.time()  # training starts now; its first write is at finish, 15 s on
    time.sleep(15)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finish()
    (run_dir,) = glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*"))
    header = next(r for r in _wandb_records(run_dir) if r["type"] == "run")["run"]
    started = datetime.fromisoformat(header["start_time"].replace("Z", "+00:00")).timestamp()
    # at the start (the SDK loads in the helper meanwhile: seconds on a loaded machine), not 15 s
    # on at the first write
    assert t0 - 1 < started < t1 + 10, (started - t0, t1 - t0)
    (sl_run,) = glob.glob(str(tmp_path / "sl" / "run-*"))
    # SwanLab names its run folder run-<local time of swanlab.init>
    sl_started = datetime.strptime(Path(sl_run).name.split("-")[1], "%Y%m%d_%H%M%S").timestamp()
    assert t0 - 1 < sl_started < t1 + 10, (sl_started - t0, t1 - t0)


TWIN = """
import os, sys, time, otel_rl
barrier, offset = sys.argv[1], float(sys.argv[2])
logger = otel_rl.Logger({"run_name": "same", "tensorboard": {"log_dir": sys.argv[3]},
                         "system_metrics": {"enabled": False}})
open(f"{barrier}.{os.getpid()}", "w").close()
while len([f for f in os.listdir(os.path.dirname(barrier)) if f.startswith(os.path.basename(barrier))]) < 2:
    time.sleep(0.01)  # both processes have started their run before either logs
for step in range(40):
    logger.log_metrics({"loss": offset + step}, step=step)
logger.finish()
"""


def test_two_processes_with_one_run_name_get_a_run_directory_each(tmp_path):
    """Two trainers started at once with the same run name (two demos with --run-name same):
    each writes its own run directory, decided by a lock, with its own 40 steps once each; no
    directory holds both."""
    tb = tmp_path / "tb"
    procs = [subprocess.Popen([sys.executable, "-c", TWIN, str(tmp_path / "barrier"), str(offset), str(tb)],
                              stderr=subprocess.PIPE, text=True) for offset in (0.0, 1000.0)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    assert sorted(p.name for p in tb.iterdir() if p.is_dir()) == ["same", "same-2"]
    seen = set()
    for run in ("same", "same-2"):
        values = exactly_once(read_tensorboard_events(tb / run)["loss"])
        assert sorted(values) == list(range(40))
        offsets = {round(v - s) for s, v in values.items()}
        assert len(offsets) == 1, f"{run} holds values of both processes"
        seen |= offsets
    assert seen == {0, 1000}


def test_values_recorded_after_their_run_ended_warn_once_and_are_counted(tmp_path, caplog):
    """One rule for every API: gauge.set after shutdown(), SummaryWriter.add_scalar after close(),
    log_samples after shutdown() are not recorded, warn once and are counted (no exception, no
    silent drop); what was recorded before is all there."""
    import logging

    from otel_rl import SummaryWriter

    caplog.set_level(logging.WARNING)
    pipeline = otel_rl.init({"run_name": "ended", "tensorboard": {"log_dir": str(tmp_path / "tb")},
                             "system_metrics": {"enabled": False}}, set_global=False)
    gauge = pipeline.get_meter("t").create_gauge("x")
    otel_rl.set_step(0)
    gauge.set(1.0)
    assert otel_rl.shutdown()
    gauge.set(2.0)
    otel_rl.log_samples([{"prompt": "late"}])
    gauge.set(3.0)
    assert pipeline.stats()["records_after_close"] == 3
    assert caplog.text.count("after its run ended") == 1

    writer = SummaryWriter(str(tmp_path / "tb" / "writer"), config={"system_metrics": {"enabled": False}})
    writer.add_scalar("a", 1.0, 0)
    writer.close()
    writer.add_scalar("a", 2.0, 1)
    assert writer.pipeline.stats()["records_after_close"] == 1
    assert caplog.text.count("after its run ended") == 2  # once per run

    assert read_tensorboard(tmp_path / "tb" / "ended")["scalars"]["x"] == {0: 1.0}
    assert read_tensorboard(tmp_path / "tb" / "writer")["scalars"]["a"] == {0: 1.0}
