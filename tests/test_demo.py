"""The demo (the main job) end to end: every step of every metric is in TensorBoard."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from conftest import ROOT, f32_close, read_tensorboard, wait_for_late_helper


def test_demo_writes_every_step_of_every_metric(tmp_path, python):
    values = tmp_path / "values.json"
    proc = subprocess.run(
        [python, str(ROOT / "examples" / "cartpole_pg.py"), "--log-dir", str(tmp_path / "runs"),
         "--run-name", "demo", "--iterations", "40", "--dump-values", str(values)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"tensorboard: {tmp_path / 'runs' / 'demo'}" in proc.stdout
    assert f"tensorboard --logdir {tmp_path / 'runs'}" in proc.stdout

    expected = json.loads(values.read_text())
    tb = read_tensorboard(tmp_path / "runs" / "demo")
    assert set(expected) <= set(tb["scalars"])
    for metric, series in expected.items():
        got = tb["scalars"][metric]
        assert sorted(got) == list(range(40)), metric
        for step, value in series.items():
            assert f32_close(got[int(step)], value), (metric, step, got[int(step)], value)

    # the histogram of episode returns: 8 episodes per step, every step present
    hist = tb["histograms"]["episode/return_dist"]
    assert sorted(hist) == list(range(40))
    assert all(h[:, 2].sum() == 8 for h in hist.values())


def test_demo_shows_hparams_and_samples_in_a_real_tensorboard(tmp_path, python, monkeypatch):
    """What a newcomer opens after `make demo`: the HParams tab lists the demo's hyperparameters
    with its own metrics as columns (no system/* metrics), and the Text tab the episodes table."""
    from backends import TensorBoardServer

    monkeypatch.setenv("OTEL_RL_SYSTEM_METRICS", "true")  # on, as `make demo` runs it
    proc = subprocess.run(
        [python, str(ROOT / "examples" / "cartpole_pg.py"), "--log-dir", str(tmp_path / "runs"),
         "--run-name", "demo", "--iterations", "12"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    server = TensorBoardServer(tmp_path / "runs").start()
    try:
        deadline = time.monotonic() + 90
        while True:
            experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
            texts = server.get("/data/plugin/text/tags")
            if experiment.get("hparamInfos") and "episodes/text_summary" in texts.get("demo", []):
                break
            assert time.monotonic() < deadline, (experiment, texts)
            time.sleep(1)
        time.sleep(6)  # one more reload of the files
        experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert {"lr", "gamma", "seed", "policy/kind", "episodes_per_iter"} <= hparams, hparams
        columns = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"reward/mean", "loss", "entropy", "env_steps"} <= columns, columns
        assert not [c for c in columns if c.startswith("system")], columns
        scalar_tags = server.get("/data/plugin/scalars/tags")["demo"]
        assert any(t.startswith("system/") for t in scalar_tags)  # they are there, in their own section
        assert all("." not in t.split("/")[0] for t in scalar_tags), scalar_tags  # no process.*/system.* groups
        shown = server.get("/data/plugin/text/text", run="demo", tag="episodes/text_summary")
        assert sorted(e["step"] for e in shown) == [0, 10, 11]
        assert all("<table>" in e["text"] and "first actions" in e["text"] for e in shown)
    finally:
        server.stop()


def test_demo_help_is_whole_sentences(python):
    proc = subprocess.run([python, str(ROOT / "examples" / "cartpole_pg.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    description = proc.stdout.split("\n\n")[1].replace("\n", " ")
    assert description.rstrip().endswith("meter API."), description
    assert "(default: 150)" in proc.stdout  # every default shown


def test_demo_default_finishes_and_learns(tmp_path, python):
    """The default demo (what `make demo` runs) finishes well under 2 minutes and improves reward."""
    values = tmp_path / "values.json"
    proc = subprocess.run(
        [python, str(ROOT / "examples" / "cartpole_pg.py"), "--dump-values", str(values)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs").is_dir()
    reward = json.loads(values.read_text())["reward/mean"]
    first = sum(reward[str(s)] for s in range(10)) / 10
    last = sum(reward[str(s)] for s in range(140, 150)) / 10
    assert last > 3 * first, (first, last)


def test_demo_with_all_four_backends(tmp_path, python):
    from backends import BACKENDS, read_mlflow, read_swanlab, read_tensorboard, read_wandb

    values = tmp_path / "values.json"
    proc = subprocess.run(
        [python, str(ROOT / "examples" / "cartpole_pg.py"), "--backends", ",".join(BACKENDS),
         "--run-name", "demo4", "--iterations", "25", "--dump-values", str(values)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wait_for_late_helper(proc.stderr)
    for hint in ("tensorboard --logdir runs", "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db",
                 "wandb sync ./wandb/latest-run", "swanlab sync swanlog/run-*"):
        assert hint in proc.stdout
    # the printed W&B location is the run folder that `wandb sync` takes, and latest-run points to it
    (wandb_line,) = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("wandb: ")]
    run_folder = Path(wandb_line.split(": ", 1)[1])
    assert run_folder.name.startswith("offline-run-") and list(run_folder.glob("run-*.wandb"))
    assert (tmp_path / "wandb" / "latest-run").resolve() == run_folder.resolve()
    assert not (tmp_path / "mlflow.db").exists()  # the demo's MLflow store lives under mlruns/ (git-ignored)
    expected = json.loads(values.read_text())["reward/mean"]
    stores = {
        "tensorboard": read_tensorboard(tmp_path / "runs" / "demo4")["scalars"],
        "wandb": read_wandb(tmp_path, "demo4")["scalars"],
        "swanlab": read_swanlab(tmp_path / "swanlog", "demo4")["scalars"],
        "mlflow": read_mlflow(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "otel-rl-demo", "demo4")["scalars"],
    }
    for name, scalars in stores.items():
        got = scalars["reward/mean"]
        assert sorted(got) == list(range(25)), name
        assert all(f32_close(got[int(s)], v) for s, v in expected.items()), name


def test_demo_rejects_unknown_backend(tmp_path, python):
    proc = subprocess.run([python, str(ROOT / "examples" / "cartpole_pg.py"), "--backends", "tensorboard,neptune"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown backend 'neptune'; known: tensorboard, wandb, swanlab, mlflow" in proc.stderr
