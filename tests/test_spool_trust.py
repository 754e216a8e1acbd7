"""Whoever can write a spool directory used to run code as the trainer or the collector (a
planted pickle in engine.state or the router checkpoint ran `id`), could truncate a victim file
through a planted symlink, and could read prompts in 0644 files. Each the way it was found."""

from __future__ import annotations

import base64
import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import read_tensorboard_events


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _trainer(tmp_path: Path, spool: Path, steps: range, run: str = "trust") -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import otel_rl
        from opentelemetry import metrics
        otel_rl.init({{"run_name": {run!r}, "spool_dir": {str(spool)!r}, "system_metrics": {{"enabled": False}},
                       "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}}}})
        g = metrics.get_meter("t").create_gauge("x")
        for step in {list(steps)!r}:
            otel_rl.set_step(step)
            g.set(float(step))
        assert otel_rl.shutdown()
    """))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_a_planted_engine_state_runs_nothing(tmp_path):
    spool = tmp_path / "spool"
    assert _trainer(tmp_path, spool, range(3)).returncode == 0
    (state,) = list(spool.rglob("engine.state"))
    marker = tmp_path / "pwned"
    state.write_bytes(pickle.dumps({"session": "x", "emission": 0, "held": [_Exploit(marker)]}))
    proc = _trainer(tmp_path, spool, range(3, 6))
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert "unreadable engine state" in proc.stderr and "posix.system: not a class" in proc.stderr
    assert sorted(dict(read_tensorboard_events(tmp_path / "tb" / "trust")["x"])) == list(range(6))


def test_a_planted_router_checkpoint_runs_nothing(tmp_path, caplog):
    pytest.importorskip("otel_rl_collector")
    from otel_rl_collector import create

    config = {"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
              "spool": {"dir": str(tmp_path / "cspool")}, "tensorboard": {"log_dir": str(tmp_path / "tb")}}
    create(config).start().shutdown()
    checkpoint = tmp_path / "cspool" / "_ingress" / "checkpoint.json"
    doc = json.loads(checkpoint.read_text())
    marker = tmp_path / "pwned"
    doc.setdefault("state", {})["router"] = base64.b64encode(pickle.dumps(_Exploit(marker))).decode()
    checkpoint.write_text(json.dumps(doc))
    create(config).start().shutdown()  # it starts, with an empty router, and says why
    assert not marker.exists()
    assert any("could not restore the router checkpoint" in r.getMessage() for r in caplog.records)


def test_spool_files_are_private_and_a_planted_symlink_is_not_followed(tmp_path):
    spool = tmp_path / "spool"
    assert _trainer(tmp_path, spool, range(3)).returncode == 0
    sink_dir = next(p for p in spool.rglob("tensorboard") if p.is_dir())
    assert stat.S_IMODE(sink_dir.stat().st_mode) == 0o700
    for f in sink_dir.iterdir():
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (sink_dir / "checkpoint.json.tmp").symlink_to(victim)
    assert _trainer(tmp_path, spool, range(3, 6)).returncode == 0
    assert victim.read_text() == "precious"


def test_a_spool_directory_others_can_write_is_refused(tmp_path):
    import otel_rl

    shared = tmp_path / "shared"
    (shared / "tensorboard").mkdir(parents=True)
    os.chmod(shared / "tensorboard", 0o777)
    with pytest.raises(otel_rl.ConfigError, match="writable by others"):
        otel_rl.init({"spool_dir": str(shared), "helper": False, "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    if os.geteuid() == 0:  # as root (CI), a directory another user owns
        os.chmod(shared / "tensorboard", 0o700)
        os.chown(shared / "tensorboard", 12345, 12345)
        with pytest.raises(otel_rl.ConfigError, match="belongs to uid 12345"):
            otel_rl.init({"spool_dir": str(shared), "helper": False, "tensorboard": {"log_dir": str(tmp_path / "tb")}})


def test_a_trainer_restarted_right_after_a_crash_takes_over_its_spool(tmp_path):
    """SIGKILL a trainer whose MLflow hangs: its helper goes on delivering (up to its shutdown
    deadline) and holds the spool. A trainer restarted at once used to die with
    SpoolLockedError; it now waits for that orphaned helper and goes on from the same spool."""
    import signal
    import time

    from test_faults import HungServer

    hung = HungServer()
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, otel_rl
        from opentelemetry import metrics
        run = otel_rl.init({{"run_name": "crash", "spool_dir": {str(tmp_path / "spool")!r}, "shutdown_timeout_s": 6,
                             "system_metrics": {{"enabled": False}}, "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}},
                             "mlflow": {{"enabled": True, "tracking_uri": "http://127.0.0.1:{hung.port}", "timeout_s": 60}}}})
        g = metrics.get_meter("t").create_gauge("x")
        first = int(sys.argv[1])
        for step in range(first, first + 10):
            otel_rl.set_step(step)
            g.set(float(step))
        run.force_flush(3)  # TensorBoard has them; MLflow hangs
        print("handed over", flush=True)
        if first == 0:
            time.sleep(600)  # killed here
        otel_rl.shutdown(timeout_s=6)
        print("done", flush=True)
    """))
    try:
        first = subprocess.Popen([sys.executable, str(script), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=tmp_path)
        assert first.stdout.readline().strip() == "handed over"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        started = time.monotonic()
        second = subprocess.run([sys.executable, str(script), "10"], capture_output=True, text=True, timeout=120,
                                cwd=tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "SpoolLockedError" not in second.stderr and second.stdout.split() == ["handed", "over", "done"]
        assert "the helper of a process that ended, still delivering" in second.stderr
        assert time.monotonic() - started < 60
    finally:
        hung.close()
    events = read_tensorboard_events(tmp_path / "tb" / "crash")["x"]
    steps = [s for s, _ in events]
    assert sorted(steps) == list(range(20)), steps  # each step once
