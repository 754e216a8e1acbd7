"""Hot path: training-thread time per step of 10 scalars, otel-rl against the peer loggers.

    python bench/hotpath.py --steps 2000 --gap-ms 1 [--only NAME]

Each logger runs in its own subprocess (fresh interpreter, same machine, same run). Per step
the timed section is exactly the logging call(s) for 10 scalars; between steps the loop
sleeps ``--gap-ms`` (simulated compute) or not at all. Reported: p50/p99/mean of the
training-thread time, and total CPU per step (all threads of the process plus helper
processes such as wandb-core, including setup, flush and shutdown after the loop).
For otel-rl the delivery is checked after the run: every value is counted in every backend.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' real-backend readers count delivered values

KEYS = [f"train/m{i}" for i in range(10)]
LOGGERS = ["otel-rl (tensorboard)", "otel-rl (4 backends)", "otel sdk (10 gauges)", "tensorboardX",
           "tensorboard.summary.Writer", "wandb offline", "swanlab offline", "mlflow async", "mlflow sync"]


def _cpu(proc: psutil.Process) -> float:
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def make_logger(name: str, tmp: Path, mlflow_url: str | None, system_metrics: bool = True):
    """(log(step, values), finish(), count_delivered() or None) for logger ``name``: one of
    :data:`LOGGERS`, or ``otel-rl (<backend>)`` for otel-rl with that one backend. ``mlflow_url``:
    a tracking server or a ``sqlite:///`` store (also the MLflow peers')."""
    if name.startswith("otel-rl"):
        from backends import backend_config, read_scalars

        import otel_rl

        inner = name[name.index("(") + 1:name.rindex(")")]
        names = ["tensorboard", "wandb", "swanlab", "mlflow"] if inner == "4 backends" else [inner]
        cfg = {n: backend_config(n, tmp, mlflow_url) for n in names}
        for other in ("tensorboard",):
            cfg.setdefault(other, {"enabled": False})
        if not system_metrics:
            cfg["system_metrics"] = {"enabled": False}
        logger = otel_rl.Logger({"run_name": "bench", **cfg})

        def count():
            return {n: sum(len(read_scalars(n, tmp, "bench", mlflow_url).get(k, {})) for k in KEYS) for n in names}

        return logger.log_metrics, logger.finish, count
    if name == "otel sdk (10 gauges)":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        gauges = [provider.get_meter("b").create_gauge(k.replace("/", ".")) for k in KEYS]

        def log(values, step):
            attrs = {"step": step}
            for g, v in zip(gauges, values.values()):
                g.set(v, attrs)

        return log, provider.shutdown, None
    if name == "tensorboardX":
        from tensorboardX import SummaryWriter

        w = SummaryWriter(str(tmp / "tbx"))
        return (lambda values, step: [w.add_scalar(k, v, step) for k, v in values.items()]), w.close, None
    if name == "tensorboard.summary.Writer":
        from tensorboard.summary import Writer

        w = Writer(str(tmp / "tbw"))
        return (lambda values, step: [w.add_scalar(k, v, step) for k, v in values.items()]), w.close, None
    if name == "wandb offline":
        import wandb

        run = wandb.init(mode="offline", dir=str(tmp), project="bench",
                         settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        return (lambda values, step: run.log(values, step=step)), run.finish, None
    if name == "swanlab offline":
        import swanlab

        run = swanlab.init(project="bench", mode="offline", logdir=str(tmp / "sl"),
                           settings=swanlab.Settings(terminal=swanlab.Settings.Terminal(proxy_type="none")))
        return (lambda values, step: run.log(values, step=step)), run.finish, None
    if name.startswith("mlflow"):
        import mlflow

        mlflow.set_tracking_uri(mlflow_url)
        mlflow.set_experiment(f"bench-{os.getpid()}")
        mlflow.start_run()
        sync = name == "mlflow sync"
        return (lambda values, step: mlflow.log_metrics(values, step=step, synchronous=sync)), mlflow.end_run, None
    raise SystemExit(f"unknown logger {name!r}; known: {', '.join(LOGGERS)}")


def run_one(name: str, steps: int, gap_ms: float, mlflow_url: str | None) -> dict:
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cpu0, wall0 = _cpu(proc), time.perf_counter()
        log, finish, count = make_logger(name, tmp, mlflow_url)
        times = []
        for step in range(steps):
            values = {k: step * 0.001 + i for i, k in enumerate(KEYS)}
            t0 = time.perf_counter_ns()
            log(values, step)
            times.append(time.perf_counter_ns() - t0)
            if gap_ms:
                time.sleep(gap_ms / 1e3)
        finish()
        cpu = _cpu(proc) - cpu0
        wall = time.perf_counter() - wall0
        delivered = count() if count else None
    times.sort()
    us = [t / 1e3 for t in times]
    return {"logger": name, "steps": steps, "gap_ms": gap_ms, "p50_us": us[len(us) // 2],
            "p99_us": us[int(len(us) * 0.99) - 1], "mean_us": statistics.fmean(us),
            "cpu_ms_per_step": 1e3 * cpu / steps, "wall_s": wall,
            "delivered": delivered, "expected_per_backend": steps * len(KEYS)}


def run_all(steps: int, gap_ms: float, mlflow_url: str, only: list[str] | None = None) -> list[dict]:
    results = []
    for name in only or LOGGERS:
        n = min(steps, 200) if name == "mlflow sync" else steps  # 10+ ms per call: fewer steps
        out = subprocess.run([sys.executable, __file__, "--only", name, "--steps", str(n), "--gap-ms", str(gap_ms),
                              "--mlflow-url", mlflow_url], capture_output=True, text=True, timeout=900,
                             env={**os.environ, "WANDB_SILENT": "true"})
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:
            results.append({"logger": name, "error": (out.stderr or out.stdout)[-500:]})
            continue
        results.append(json.loads(lines[-1]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="run one logger in this process and print JSON")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--gap-ms", type=float, default=1.0)
    parser.add_argument("--mlflow-url", default=None)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only, args.steps, args.gap_ms, args.mlflow_url)))
        return 0
    from bench_common import mlflow_server

    with mlflow_server() as url:
        for row in run_all(args.steps, args.gap_ms, url):
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
