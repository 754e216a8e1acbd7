"""The helper process (otel_rl.runtime): the engine and every backend SDK run outside the
training process, and the delivery guarantees hold across its death, the training process's
death, and a helper that stops responding. Read back from the backends' own storage."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from backends import read_wandb
from conftest import ROOT, exactly_once, read_tensorboard, read_tensorboard_events

import otel_rl


def _wait_gone(pid: int, timeout_s: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def test_backends_run_in_the_helper_not_in_the_training_process(tmp_path):
    code = textwrap.dedent(f"""
        import json, os, sys, threading, otel_rl
        logger = otel_rl.Logger({{"run_name": "r", "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}},
                                 "wandb": {{"enabled": True, "mode": "offline", "dir": {str(tmp_path / "wb")!r}}}}})
        for step in range(200):
            logger.log_metrics({{"loss": step / 10, "Reward": -step}}, step=step)
        helper = logger.pipeline.helper_pid
        threads = sorted(t.name for t in threading.enumerate())
        logger.finish()
        print(json.dumps({{"helper": helper, "me": os.getpid(), "wandb_here": "wandb" in sys.modules,
                          "threads": threads}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["helper"] and doc["helper"] != doc["me"]
    assert not doc["wandb_here"], "the W&B SDK was imported into the training process"
    assert not [t for t in doc["threads"] if t.startswith("otel-rl-sink")], doc["threads"]
    tb = read_tensorboard(tmp_path / "tb" / "r")["scalars"]
    assert tb["loss"] == pytest.approx({s: s / 10 for s in range(200)})
    assert read_wandb(tmp_path / "wb", "r")["scalars"]["Reward"] == {s: -s for s in range(200)}


@pytest.mark.parametrize("spool", [False, True], ids=["private-spool", "spool_dir"])
def test_helper_sigkilled_repeatedly_nothing_lost_or_doubled(tmp_path, spool):
    """SIGKILL the helper at random points while the loop records gauges, counters and
    histograms: it is restarted, and every value is in TensorBoard exactly once."""
    config = {"run_name": "hk", "export_interval_s": 0.02, "flush_every_steps": 7,
              "tensorboard": {"log_dir": str(tmp_path / "tb")}}
    if spool:
        config["spool_dir"] = str(tmp_path / "spool")
    pipeline = otel_rl.init(config, set_global=False)
    meter = pipeline.get_meter("t")
    gauge, counter, hist = meter.create_gauge("Loss"), meter.create_counter("tokens"), meter.create_histogram("lat")
    killed: list[int] = []
    stop = threading.Event()
    rng = random.Random(7)

    def killer():
        while not stop.is_set() and len(killed) < 6:
            time.sleep(rng.uniform(0.3, 0.9))
            pid = pipeline.helper_pid
            if pid is not None and psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    thread = threading.Thread(target=killer)
    thread.start()
    steps = 0
    t_end = time.monotonic() + 6.0
    while time.monotonic() < t_end or len(killed) < 3:
        pipeline.set_step(steps)
        gauge.set(steps * 0.5)
        gauge.set(steps * 0.5 + 0.25)  # two values at one step: both kept
        counter.add(2)
        counter.add(1)
        hist.record(steps % 10)
        steps += 1
        time.sleep(0.0005)
    stop.set()
    thread.join()
    assert pipeline.shutdown(60)
    assert len(set(killed)) >= 3 and pipeline.stats()["helper_restarts"] == len(set(killed))
    events = read_tensorboard_events(tmp_path / "tb" / "hk")
    loss = sorted(events["Loss"])
    assert loss == sorted([(s, s * 0.5) for s in range(steps)] + [(s, s * 0.5 + 0.25) for s in range(steps)])
    tokens = exactly_once(events["tokens"])
    assert tokens == {s: 3.0 * (s + 1) for s in range(steps)}, "counter totals wrong after a helper restart"
    hists = read_tensorboard(tmp_path / "tb" / "hk")["histograms"]["lat"]
    assert sorted(hists) == list(range(steps))
    assert all(h[:, 2].sum() == 1 for h in hists.values())


def test_training_process_sigkilled_the_helper_delivers_what_was_handed_over(tmp_path):
    """No spool_dir: the training process is SIGKILLed; the helper notices, delivers every
    value it was handed (the step still open included) and exits, removing its private spool."""
    code = textwrap.dedent(f"""
        import os, sys, time, otel_rl
        os.environ["OTEL_RL_HELPER_DIR"] = {str(tmp_path / "private")!r}
        logger = otel_rl.Logger({{"run_name": "tk", "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}},
                                 "wandb": {{"enabled": True, "mode": "offline", "dir": {str(tmp_path / "wb")!r}}}}})
        for step in range(300):
            logger.log_metrics({{"x": step * 2.0}}, step=step)
        p = logger.pipeline
        p.collect_now()
        from otel_rl.route.deadline import Deadline
        assert p._route.handed_over(Deadline(60))
        print(p.helper_pid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    try:
        helper_pid = int(proc.stdout.readline())
        proc.kill()
        proc.wait(10)
        assert _wait_gone(helper_pid, 60), "the helper outlived its training process"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert exactly_once(read_tensorboard_events(tmp_path / "tb" / "tk")["x"]) == {s: s * 2.0 for s in range(300)}
    assert read_wandb(tmp_path / "wb", "tk")["scalars"]["x"] == {s: s * 2.0 for s in range(300)}
    assert list((tmp_path / "private").iterdir()) == []


def test_a_stopped_helper_never_blocks_the_loop_and_shutdown_keeps_its_deadline(tmp_path):
    """SIGSTOP the helper: the loop runs on (frames wait, bounded); after SIGCONT everything
    arrives. Stopped again at shutdown: shutdown returns by its deadline."""
    pipeline = otel_rl.init({"run_name": "st", "tensorboard": {"log_dir": str(tmp_path / "tb")},
                             "export_interval_s": 0.05, "helper_buffer_bytes": 1 << 20}, set_global=False)
    gauge = pipeline.get_meter("t").create_gauge("x")
    pid = pipeline.helper_pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        for step in range(30_000):
            pipeline.set_step(step)
            gauge.set(step)
        assert time.monotonic() - started < 10, "the loop waited on a stopped helper"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert pipeline.force_flush(60)
    assert exactly_once(read_tensorboard_events(tmp_path / "tb" / "st")["x"]) == {s: float(s) for s in range(30_000)}
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert pipeline.shutdown(timeout_s=2.0) is False
        assert time.monotonic() - started < 4.0
    finally:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)


def test_a_helper_that_cannot_build_its_sinks_fails_init_clearly(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = {p.pid for p in psutil.Process().children()}
        with pytest.raises(Exception, match="in use"):
            otel_rl.init({"run_name": "bad", "prometheus": {"enabled": True, "host": "127.0.0.1", "port": port}},
                         set_global=False)
        left = [p for p in psutil.Process().children() if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, "a helper that failed to start was left running"


def test_helper_false_runs_the_engine_in_process(tmp_path):
    pipeline = otel_rl.init({"run_name": "ip", "helper": False, "tensorboard": {"log_dir": str(tmp_path / "tb")}},
                            set_global=False)
    assert pipeline.helper_pid is None and pipeline.workers
    pipeline.get_meter("t").create_gauge("x").set(1.0)
    assert pipeline.shutdown(30)
    assert read_tensorboard(tmp_path / "tb" / "ip")["scalars"]["x"] == {0: 1.0}


def test_a_frame_with_a_cyclic_value_still_goes_over():
    # frames are pickled without the memo (faster); a cyclic value cannot be, and falls back
    import pickle

    from otel_rl.runtime.frames import _dumps_records

    cyclic: list = [1.5]
    cyclic.append(cyclic)
    plain = [("g", "loss", 0.5, 3, 10**18, None), ("g", "loss", 0.25, 4, 10**18 + 1, {"k": "v"})]
    assert pickle.loads(_dumps_records((plain, 4, False, 1.0))) == (plain, 4, False, 1.0)
    records, *_ = pickle.loads(_dumps_records(([("t", "x", cyclic, 1, 2, None)], None, True, 2.0)))
    value = records[0][2]
    assert value[0] == 1.5 and value[1] is value


def test_the_helper_starts_without_otel_rls_public_api_or_the_opentelemetry_sdk():
    """Half of the helper's start was importing ``otel_rl/__init__`` (the public API and the
    OpenTelemetry SDK), which it never uses: its command registers the package without it. This
    runs that command up to the helper's main loop and lists what it imported."""
    from otel_rl.runtime.link import _HELPER_MAIN

    assert _HELPER_MAIN.endswith("run(sys.argv)")
    probe = _HELPER_MAIN[:-len("run(sys.argv)")] + (
        "import json; print(json.dumps(sorted(m for m in sys.modules if m.startswith(('otel_rl', 'opentelemetry')))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    modules = json.loads(out.stdout)
    assert "otel_rl.runtime.child" in modules and "otel_rl.route.engine" in modules
    assert not [m for m in modules if m.startswith(("otel_rl.api", "opentelemetry.sdk"))], modules
