"""Fidelity: a CleanRL-PPO-shaped script (tests/fidelity_ppo.py) logs through the plain OTel meter
API; every value it logged is compared with what each backend holds, read the way users read it:

- TensorBoard through a real ``tensorboard`` server with its default flags (the UI's HTTP API:
  every step visible) and through its event-file reader (every value, wall times);
- MLflow through a real server (every value, timestamps);
- W&B from the offline run file (every value as its own row, ``_timestamp``);
- SwanLab through its own reader (one value per step: the mean of the step's values).

Embedded, and through the collector with 4 ranks (values reduced per step across ranks).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from backends import TensorBoardServer, _swanlab_experiments, free_port, read_mlflow, read_params, read_wandb
from conftest import ROOT

SCRIPT = str(Path(__file__).with_name("fidelity_ppo.py"))
#: TensorBoard stores scalars as float32.
F32 = 1e-6


def _run_script(config: dict, ledger: Path, seed: int = 0, env: dict | None = None) -> subprocess.Popen:
    import os

    return subprocess.Popen([sys.executable, SCRIPT, json.dumps(config), str(ledger), str(seed)],
                            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, timeout: float = 300) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]


def _ledger(path: Path):
    """``scalars[name][step] = [(value, time), ...]`` in logging order; ``hists[name][step] = samples``."""
    scalars: dict = defaultdict(lambda: defaultdict(list))
    hists: dict = defaultdict(dict)
    for kind, name, step, value, t in json.loads(path.read_text()):
        if kind == "scalar":
            scalars[name][step].append((value, t))
        else:
            hists[name][step] = value
    return scalars, hists


def _event_values(run_dir: Path) -> dict:
    """Every scalar event under ``run_dir`` (sub-runs included): ``{tag: {step: [(value, wall), ...]}}``."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out: dict = defaultdict(lambda: defaultdict(list))
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out[value.tag][event.step].append((value.simple_value, event.wall_time))
    return out


def _close(a: float, b: float, rel: float = F32) -> bool:
    return a == b or math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def _same_values(got: list[float], want: list[float], rel: float = F32) -> bool:
    return len(got) == len(want) and all(_close(x, y, rel) for x, y in zip(sorted(got), sorted(want)))


def _check_tensorboard_ui(logdir: Path, run: str, want_steps: dict[str, set[int]],
                          hist_counts: dict[str, dict[int, int]]) -> None:
    """Every logged step of every tag is visible in TensorBoard's UI (some run under ``run``),
    through a real ``tensorboard`` server on ``logdir`` with its default flags."""
    server = TensorBoardServer(logdir).start()
    try:
        _check_ui(server, run, want_steps, hist_counts)
    finally:
        server.stop()


def _check_ui(server: TensorBoardServer, run: str, want_steps: dict[str, set[int]],
              hist_counts: dict[str, dict[int, int]]) -> None:
    tags = server.wait_loaded([run], list(want_steps))
    runs = [r for r in tags if r == run or r.startswith(run + "/")]
    for tag, steps in want_steps.items():
        shown = {step for r in runs if tag in tags[r] for _, step, _ in server.scalars(r, tag)}
        assert shown == steps, f"{tag}: TensorBoard's UI misses steps {sorted(steps - shown)[:10]}"
    hist_tags = server.get("/data/plugin/histograms/tags")
    for tag, counts in hist_counts.items():
        shown = {}
        for r in runs:
            if tag in hist_tags.get(r, {}):
                for _, step, buckets in server.histograms(r, tag):
                    shown[step] = round(sum(b[2] for b in buckets))
        assert shown == counts, f"{tag}: histogram counts per step differ in TensorBoard's UI"


def test_embedded_cleanrl_script_every_value_in_every_backend(tmp_path, mlflow_server):
    run = "ppo-embedded"
    config = {"run_name": run, "export_interval_s": 0.3,
              "tensorboard": {"log_dir": str(tmp_path / "tb")},
              "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb"), "project": "fid"},
              "swanlab": {"enabled": True, "mode": "offline", "logdir": str(tmp_path / "sl"), "project": "fid"},
              "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": f"exp-{tmp_path.name}"}}
    _wait(_run_script(config, tmp_path / "ledger.json"))
    scalars, hists = _ledger(tmp_path / "ledger.json")
    repeated = sum(len(v) > 1 for steps in scalars.values() for v in steps.values())
    assert repeated > 5  # the script does log several values at one step

    # TensorBoard event files: every value, at its step, with the time it was logged
    events = _event_values(tmp_path / "tb" / run)
    for name, steps in scalars.items():
        assert set(events[name]) == set(steps), name
        for step, logged in steps.items():
            stored = events[name][step]
            assert _same_values([v for v, _ in stored], [v for v, _ in logged]), (name, step, stored, logged)
            for (value, t) in logged:  # a stored event of this value within 10 ms of its logging
                assert any(_close(v, value) and abs(w - t) < 0.010 for v, w in stored), (name, step, value, t, stored)
    # TensorBoard's UI with default flags: every step of every tag visible
    _check_tensorboard_ui(tmp_path / "tb", run, {n: set(s) for n, s in scalars.items()},
                          {n: {s: len(v) for s, v in steps.items()} for n, steps in hists.items()})

    # MLflow: every value, timestamps within 10 ms (MLflow keeps milliseconds)
    from mlflow.tracking import MlflowClient

    found = read_mlflow(mlflow_server.url, f"exp-{tmp_path.name}", run)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    for name, steps in scalars.items():
        history = client.get_metric_history(found["run_id"], name)
        by_step = defaultdict(list)
        for m in history:
            by_step[m.step].append((m.value, m.timestamp / 1e3))
        assert set(by_step) == set(steps), name
        for step, logged in steps.items():
            assert _same_values([v for v, _ in by_step[step]], [v for v, _ in logged], 1e-12), (name, step)
            for value, t in logged:
                assert any(v == value and abs(ts - t) < 0.010 for v, ts in by_step[step]), (name, step)
    for name, steps in hists.items():
        history = client.get_metric_history(found["run_id"], f"{name}/count")
        assert {m.step: m.value for m in history} == {s: float(len(v)) for s, v in steps.items()}

    # W&B: every value is a row of its own at its step (otel_rl/step), _timestamp within 10 ms
    rows = read_wandb(tmp_path / "wb", run)["rows"]
    wb = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for key, value in row.items():
            if key in scalars:
                wb[key][row["otel_rl/step"]].append((value, row["_timestamp"]))
    for name, steps in scalars.items():
        assert set(wb[name]) == set(steps), name
        for step, logged in steps.items():
            assert _same_values([v for v, _ in wb[name][step]], [v for v, _ in logged], 1e-12), (name, step)
            for value, t in logged:
                assert any(v == value and abs(ts - t) < 0.010 for v, ts in wb[name][step]), (name, step)
    for name, steps in hists.items():  # a wandb.Histogram per step, every sample counted
        counts = {row["otel_rl/step"]: sum(json.loads(row[f"{name}.values"]) if isinstance(
            row[f"{name}.values"], str) else row[f"{name}.values"]) for row in rows if f"{name}.values" in row}
        assert counts == {s: len(v) for s, v in steps.items()}, name

    # SwanLab: one value per (key, step): the mean of the values logged at that step
    (records,) = [r for _, n, r in _swanlab_experiments(tmp_path / "sl") if n == run]
    sl = defaultdict(dict)
    for key, step, value in records:
        assert step not in sl[key], f"swanlab: {key} written twice at step {step}"
        sl[key][step] = value
    for name, steps in scalars.items():
        want = {s: math.fsum(v for v, _ in logged) / len(logged) for s, logged in steps.items()}
        assert set(sl[name]) == set(want) and all(_close(sl[name][s], want[s], 1e-9) for s in want), name

    # hyperparameters everywhere
    for backend in ("tensorboard", "wandb", "swanlab", "mlflow"):
        params = read_params(backend, tmp_path, run, mlflow_server.url)
        assert str(params["env_id"]) == "CartPole-v1" and float(params["num_envs"]) == 8, backend


def _reduced(ledgers: list[Path]):
    """What a collector with ``mean`` reduction holds: per (name, step) the mean of every value
    every rank logged there; histograms: the samples of every rank together."""
    values = defaultdict(lambda: defaultdict(list))
    samples = defaultdict(lambda: defaultdict(list))
    for path in ledgers:
        scalars, hists = _ledger(path)
        for name, steps in scalars.items():
            for step, logged in steps.items():
                values[name][step].extend(v for v, _ in logged)
        for name, steps in hists.items():
            for step, s in steps.items():
                samples[name][step].extend(s)
    means = {n: {s: math.fsum(v) / len(v) for s, v in steps.items()} for n, steps in values.items()}
    return means, samples


@pytest.mark.timeout(600)
def test_collector_four_ranks_every_step_reduced_in_every_backend(tmp_path, mlflow_server):
    sys.path.insert(0, str(Path(__file__).with_name("collector")))
    from trainers import start_collector

    run, world = "ppo-collector", 4
    http = free_port()
    (tmp_path / "collector.yaml").write_text(json.dumps({
        "receivers": {"http": {"port": http}, "grpc": {"enabled": False}},
        "reduce": {"timeout_s": 30},
        "tensorboard": {"log_dir": str(tmp_path / "tb")},
        "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": f"exp-{tmp_path.name}"},
    }))
    collector = start_collector(tmp_path / "collector.yaml")
    try:
        procs = [_run_script({"run_name": run, "rank": r, "world_size": world, "export_interval_s": 0.3,
                              "tensorboard": {"enabled": False},
                              "otlp": {"enabled": True, "endpoint": f"http://127.0.0.1:{http}"}},
                             tmp_path / f"ledger-{r}.json", seed=r) for r in range(world)]
        for p in procs:
            _wait(p)
    finally:
        collector.terminate()
        collector.wait(120)
    means, samples = _reduced([tmp_path / f"ledger-{r}.json" for r in range(world)])

    events = _event_values(tmp_path / "tb" / run)
    for name, steps in means.items():
        assert set(events[name]) == set(steps), name
        for step, mean in steps.items():
            assert _close(events[name][step][-1][0], mean, 1e-5), (name, step, events[name][step], mean)
    _check_tensorboard_ui(tmp_path / "tb", run, {n: set(s) for n, s in means.items()},
                          {n: {s: len(v) for s, v in steps.items()} for n, steps in samples.items()})

    # MLflow: the latest value of each step is the reduction over every value of every rank (a
    # value that arrived after its step was reduced adds a correction, as in TensorBoard)
    from mlflow.tracking import MlflowClient

    found = read_mlflow(mlflow_server.url, f"exp-{tmp_path.name}", run)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    for name, steps in means.items():
        latest = {}
        for m in sorted(client.get_metric_history(found["run_id"], name), key=lambda m: m.timestamp):
            latest[m.step] = m.value
        assert set(latest) == set(steps), name
        assert all(_close(latest[s], steps[s], 1e-9) for s in steps), (name, latest, steps)


def test_names_arrive_under_their_documented_key_in_every_backend(tmp_path, mlflow_server):
    """Case kept, nothing skipped for its spelling; each backend's key as docs/guarantees.md's table says."""
    from backends import read_scalars

    from otel_rl import Logger

    names = {"charts/SPS": 1.0, "Loss": 2.0, "loss": 3.0, "eval//reward": 4.0, "/value": 5.0, "": 6.0,
             "reward mean[0]": 7.0}
    logger = Logger({"run_name": "names", "tensorboard": {"log_dir": str(tmp_path / "tb")},
                     "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb")},
                     "swanlab": {"enabled": True, "mode": "offline", "logdir": str(tmp_path / "sl")},
                     "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": f"exp-{tmp_path.name}"},
                     "prometheus": {"enabled": True, "port": 0}})
    for step in range(3):
        logger.log_metrics(names, step=step)
    prometheus = next(s for s in logger.pipeline.sinks if s.name == "prometheus")
    logger.pipeline.force_flush()
    exposition = urllib.request.urlopen(f"http://127.0.0.1:{prometheus.port}/metrics", timeout=10).read().decode()
    logger.finish()
    want = {
        "tensorboard": {"charts/SPS", "Loss", "loss", "eval//reward", "/value", "unnamed", "reward mean[0]"},
        "wandb": {"charts/SPS", "Loss", "loss", "eval//reward", "/value", "unnamed", "reward mean[0]"},
        "mlflow": {"charts/SPS", "Loss", "loss", "eval/reward", "value", "unnamed", "reward mean_0_"},
        "swanlab": {"charts/SPS", "Loss", "loss", "eval//reward", "value", "unnamed", "reward mean[0]"},
    }
    for backend, keys in want.items():
        scalars = read_scalars(backend, tmp_path, "names", mlflow_server.url)
        assert set(scalars) == keys, (backend, sorted(scalars))
        assert scalars["Loss"] == {0: 2.0, 1: 2.0, 2: 2.0} and scalars["loss"] == {0: 3.0, 1: 3.0, 2: 3.0}, backend
    for line in ('charts_SPS{run="names"} 1.0', 'Loss{run="names"} 2.0', 'loss{run="names"} 3.0'):
        assert line in exposition, exposition
