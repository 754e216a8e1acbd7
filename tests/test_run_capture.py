"""``otel-rl run -- python train.py``: an unmodified tensorboardX or ``torch.utils.tensorboard``
script keeps writing its own TensorBoard files, and every call also reaches the backends of
``OTEL_RL_CONFIG``; with ``--no-tensorboard-files`` otel-rl's TensorBoard sink writes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from backends import read_mlflow, read_wandb

pytest.importorskip("tensorboardX")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "tests" / "cleanrl_writer.py")
RUN = "CartPole-v1__ppo__1__1700000000"
OTEL_RL = str(Path(sys.executable).with_name("otel-rl"))


def _events_without_wall_times(run_dir: Path) -> list[bytes]:
    """Every event of the run's files, serialized with its wall time zeroed, and without the
    script's ``charts/SPS`` (steps per second: the clock differs between two runs of a script)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            if any(v.tag == "charts/SPS" for v in event.summary.value):
                continue
            event.wall_time = 0
            out.append(event.SerializeToString())
    return out


@pytest.mark.parametrize("writer", ["tensorboardX", "torch"])
def test_an_unmodified_script_under_otel_rl_run_reaches_wandb_and_mlflow(tmp_path, mlflow_server, writer):
    if writer == "torch":
        pytest.importorskip("torch")
    config = tmp_path / "otel-rl.yaml"
    config.write_text(yaml.safe_dump({
        "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb"), "project": "capture"},
        "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": f"capture-{writer}"}}))
    plain = subprocess.run([sys.executable, SCRIPT, writer, str(tmp_path / "plain")], capture_output=True,
                           text=True, timeout=300, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    done = subprocess.run([OTEL_RL, "run", "--config", str(config), "--", sys.executable, SCRIPT, writer,
                           str(tmp_path / "captured")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ledger = json.loads(done.stdout.strip().splitlines()[-1])  # (tag, step, value, walltime) per add_scalar
    per_step: dict[str, dict[int, list]] = {}
    for tag, step, value, _ in ledger:
        per_step.setdefault(tag, {}).setdefault(step, []).append(value)  # several returns at one step

    # the script's own TensorBoard files: what they are without otel-rl run, apart from wall times
    assert _events_without_wall_times(tmp_path / "captured" / RUN) == _events_without_wall_times(tmp_path / "plain" / RUN)

    # every add_scalar at its step, each value (W&B rows; MLflow's metric history)
    from mlflow.tracking import MlflowClient

    rows = read_wandb(tmp_path / "wb", RUN)["rows"]
    found = read_mlflow(mlflow_server.url, f"capture-{writer}", RUN)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    for tag, steps in per_step.items():
        want = {s: sorted(v) for s, v in steps.items()}
        wandb: dict[int, list] = {}
        for row in rows:
            if tag in row:
                wandb.setdefault(row["otel_rl/step"], []).append(row[tag])
        assert {s: sorted(v) for s, v in wandb.items()} == want, tag
        mlflow: dict[int, list] = {}
        for m in client.get_metric_history(found["run_id"], tag):
            mlflow.setdefault(m.step, []).append(m.value)
        got = {s: sorted(v) for s, v in mlflow.items()}
        assert sorted(got) == sorted(want) and all(got[s] == pytest.approx(want[s]) for s in want), tag
    # the histogram and the text, at their steps
    histogram_steps = sorted({step for tag, step, *_ in ledger if tag == "losses/value_loss"})
    assert [r["otel_rl/step"] for r in rows if "train/advantages._type" in r] == histogram_steps
    assert found["scalars"]["train/advantages/count"] == {s: 64.0 for s in histogram_steps}
    assert [r["otel_rl/step"] for r in rows if "hyperparameters._type" in r] == [0]
    text = client.download_artifacts(found["run_id"], "text/hyperparameters", str(tmp_path / "dl"))
    assert "|learning_rate|0.00025|" in Path(text, "step-0.md").read_text()


@pytest.mark.parametrize("writer", ["tensorboardX", "torch"])
def test_no_tensorboard_files_lets_otel_rl_write_the_writers_event_files(tmp_path, writer):
    if writer == "torch":
        pytest.importorskip("torch")
    plain = subprocess.run([sys.executable, SCRIPT, writer, str(tmp_path / "plain")], capture_output=True,
                           text=True, timeout=300, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    done = subprocess.run([OTEL_RL, "run", "--no-tensorboard-files", "--", sys.executable, SCRIPT, writer,
                           str(tmp_path / "captured")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    from conftest import read_tensorboard, read_tensorboard_events

    # no file of the script's own writer: every file there is otel-rl's (its sink writes "late-<n>"
    # sub-runs for values whose tag had passed their step, so nothing is dropped)
    want = read_tensorboard_events(tmp_path / "plain" / RUN)
    got = read_tensorboard_events(tmp_path / "captured" / RUN)
    want.pop("charts/SPS"), got.pop("charts/SPS")  # a measured speed: differs between two runs
    assert sorted(got) == sorted(want) and sum(map(len, want.values())) > 100
    for tag in want:
        assert sorted(got[tag]) == sorted(want[tag]), tag  # both float32 simple_values
    histogram_steps = sorted({step for step, _ in want["losses/value_loss"]})
    assert sorted(read_tensorboard(tmp_path / "captured" / RUN)["histograms"]["train/advantages"]) == histogram_steps
    assert "hyperparameters/text_summary" in read_tensorboard(tmp_path / "captured" / RUN)["tensors"]
    if writer == "tensorboardX":  # as a user sees them: a real tensorboard server, default flags
        from backends import TensorBoardServer

        server = TensorBoardServer(tmp_path / "captured").start()
        try:
            runs = server.wait_loaded([RUN], ["losses/value_loss"])
            for tag in ("losses/value_loss", "charts/episodic_return"):
                steps = {step for run, tags in runs.items()
                         if (run == RUN or run.startswith(f"{RUN}/late-")) and tag in tags
                         for _, step, _ in server.scalars(run, tag)}
                assert steps == {step for step, _ in want[tag]}, tag  # every step shown, none dropped
        finally:
            server.proc.terminate()
            server.proc.wait(30)


def test_otel_rl_run_says_what_is_wrong_with_its_command_line(tmp_path):
    no_command = subprocess.run([OTEL_RL, "run"], capture_output=True, text=True, timeout=60)
    assert no_command.returncode == 2 and "needs a command" in no_command.stderr
    bad = subprocess.run([OTEL_RL, "run", "--backends", "wandb,tensorbord", "--", "true"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "'tensorbord' is not a backend; allowed: tensorboard" in bad.stderr
    missing = subprocess.run([OTEL_RL, "run", "--", "no-such-command-here"], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 127 and "command not found" in missing.stderr
    code = subprocess.run([OTEL_RL, "run", "--", sys.executable, "-c", "raise SystemExit(7)"], timeout=60)
    assert code.returncode == 7  # the command's own exit status
