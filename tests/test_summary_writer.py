"""``otel_rl.SummaryWriter``: an unmodified CleanRL-style script (tests/cleanrl_writer.py) run
with tensorboardX's SummaryWriter and with otel-rl's gives the same TensorBoard tags, steps and
values, point by point (wall times within 10 ms of each call), and the same data in W&B, SwanLab
and MLflow (enabled with no code change, through ``OTEL_RL_CONFIG``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from backends import _swanlab_experiments, read_mlflow, read_wandb
from conftest import ROOT

SCRIPT = str(Path(__file__).with_name("cleanrl_writer.py"))
RUN = "CartPole-v1__ppo__1__1700000000"


def _events(run_dir: Path) -> dict:
    """``{tag: [(step, value, wall_time), ...]}`` for scalars, ``{tag: [step, ...]}`` for the rest."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    scalars, others = defaultdict(list), defaultdict(list)
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    scalars[v.tag].append((event.step, v.simple_value, event.wall_time))
                elif not v.tag.startswith("_hparams_"):
                    others[v.tag].append(event.step)
    return scalars, others


def _run(which: str, out: Path, env: dict | None = None) -> list:
    proc = subprocess.run([sys.executable, SCRIPT, which, str(out)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(x) for x in json.loads(proc.stdout.strip().splitlines()[-1])]


def test_cleanrl_script_same_tensorboard_data_as_tensorboardx_and_every_backend(tmp_path, mlflow_server):
    _run("tensorboardX", tmp_path / "tbx")
    config = tmp_path / "otel-rl.yaml"
    config.write_text(yaml.safe_dump({
        "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb")},
        "swanlab": {"enabled": True, "mode": "offline", "logdir": str(tmp_path / "sl")},
        "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": f"exp-{tmp_path.name}"}}))
    ledger = _run("otel_rl", tmp_path / "runs", {"OTEL_RL_CONFIG": str(config)})

    ref_scalars, ref_others = _events(tmp_path / "tbx" / RUN)
    got_scalars, got_others = _events(tmp_path / "runs" / RUN)
    assert set(got_scalars) == set(ref_scalars) and len(got_scalars) == 11
    assert set(got_others) == set(ref_others) == {"hyperparameters/text_summary", "train/advantages"}
    assert got_others == ref_others  # text and histograms at the same steps
    for tag, ref in ref_scalars.items():
        # same steps and values, in the same order per tag (several returns at one step included;
        # SPS is a measured speed, so only its steps can match between two runs)
        timed = tag == "charts/SPS"
        assert [(s, None if timed else v) for s, v, _ in got_scalars[tag]] == \
            [(s, None if timed else v) for s, v, _ in ref], tag
    logged = defaultdict(list)
    for tag, step, value, t in ledger:
        logged[tag].append((step, value, t))
    for tag, calls in logged.items():  # each event written within 10 ms of its add_scalar call
        for (step, value, t), (s, v, wall) in zip(calls, got_scalars[tag]):
            assert s == step and math.isclose(v, value, rel_tol=1e-6) and abs(wall - t) < 0.010, (tag, step)

    per_step = {tag: defaultdict(list) for tag in logged}
    for tag, calls in logged.items():
        for step, value, _ in calls:
            per_step[tag][step].append(value)
    rows = read_wandb(tmp_path / "wb", RUN)["rows"]
    for tag, steps in per_step.items():
        wb = defaultdict(list)
        for row in rows:
            if tag in row:
                wb[row["otel_rl/step"]].append(row[tag])
        assert {s: sorted(v) for s, v in wb.items()} == {s: sorted(v) for s, v in steps.items()}, tag
    from mlflow.tracking import MlflowClient

    found = read_mlflow(mlflow_server.url, f"exp-{tmp_path.name}", RUN)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    for tag, steps in per_step.items():
        ml = defaultdict(list)
        for m in client.get_metric_history(found["run_id"], tag):
            ml[m.step].append(m.value)
        assert {s: sorted(v) for s, v in ml.items()} == {s: sorted(v) for s, v in steps.items()}, tag
    text = client.download_artifacts(found["run_id"], "text/hyperparameters", str(tmp_path / "dl"))
    assert "|learning_rate|0.00025|" in Path(text, "step-0.md").read_text()
    (records,) = [r for _, name, r in _swanlab_experiments(tmp_path / "sl") if name == RUN]
    sl = {(k, s): v for k, s, v in records}
    for tag, steps in per_step.items():
        for s, values in steps.items():
            assert math.isclose(sl[(tag, s)], sum(values) / len(values), rel_tol=1e-9), (tag, s)


def test_summary_writer_api_shapes(tmp_path):
    from conftest import read_tensorboard

    from otel_rl import SummaryWriter

    with SummaryWriter(str(tmp_path / "run")) as writer:
        assert writer.log_dir == writer.get_logdir() == str(tmp_path / "run")
        writer.add_scalars("loss", {"train": 1.0, "eval": 2.0}, 3)
        writer.add_hparams({"lr": 0.1}, {"hparam/score": 0.5})
        with pytest.raises(ValueError, match="needs a non-empty numeric array"):
            writer.add_image("img", object(), 1)  # tensorboardX raises too
        writer.add_embedding([[0.0, 1.0]], global_step=1)  # not carried: warned once, the script goes on
        writer.add_scalar("x", 1.0, 5, walltime=1_700_000_000.0)
    tb = read_tensorboard(tmp_path / "run")
    assert tb["scalars"]["loss/train"] == {3: 1.0} and tb["scalars"]["loss/eval"] == {3: 2.0}
    assert tb["scalars"]["hparam/score"] == {0: 0.5}
    _, _, wall = _events(tmp_path / "run")[0]["x"][0]
    assert wall == 1_700_000_000.0


def test_drop_in_script_shows_its_own_tags_plus_only_system(tmp_path):
    """With system metrics on (the default outside the tests), the unmodified script's TensorBoard
    run holds the script's tags and, beyond them, only the `system/` section."""
    _run("tensorboardX", tmp_path / "tbx")
    _run("otel_rl", tmp_path / "runs", {"OTEL_RL_SYSTEM_METRICS": "true"})
    ref_scalars, ref_others = _events(tmp_path / "tbx" / RUN)
    got_scalars, got_others = _events(tmp_path / "runs" / RUN)
    extra = set(got_scalars) - set(ref_scalars)
    assert set(ref_scalars) <= set(got_scalars) and set(got_others) == set(ref_others)
    assert extra and all(tag.startswith("system/") for tag in extra), sorted(extra)
    assert not [t for t in extra if "device:lo/" in t], sorted(extra)
