"""What a training loop pays for logging: its slowdown, against the same loop without logging,
with each logger in its own process, side by side with the peers, interleaved rounds.

    python bench/loop.py [--steps 1500] [--rounds 4]
    python bench/loop.py --blocks 10 --steps 300 --rounds 3   # A/B blocks inside one process

Two loops, 10 scalars logged per step:

- ``gil``: a GIL-bound Python step of about 1.6 ms (an RL environment loop is like this): every
  thread the logger runs in the training process competes with it for the GIL;
- ``numpy``: a step of about 1.6 ms of numpy work that releases the GIL (a model step is closer
  to this): background threads can run meanwhile.

Reported per logger and loop: the median over rounds of the loop's wall time (the logger's
set-up and final flush excluded: ``init`` before, ``finish`` after), as a slowdown against the
median of the loop without logging. The helper processes a logger starts (W&B's service) run on
the same 2 cores, so their cost shows up too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
kind, loop, steps, tmp, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
os.environ.update(WANDB_SILENT="true", WANDB_MODE="offline", OTEL_RL_SYSTEM_METRICS="false")
# one BLAS thread: the numpy step uses one core, as a training step driving a GPU does; a BLAS
# spread over both of this machine's cores would measure the core count, not the GIL
os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
import numpy as np
a = np.random.rand(160, 160)

def step_work(i):
    if loop == "gil":
        x = 0
        for k in range(24000):  # about 1.6 ms of pure Python here
            x += k * i % 7
        return float(x % 11)
    b = a
    for _ in range(6):  # about 1.6 ms of BLAS, GIL released
        b = b @ a / 160.0
    return float(b[0, 0])

log = finish = pipeline = None

def otel_rl_config():
    cfg = {"run_name": "loop", "tensorboard": {"log_dir": f"{tmp}/tb"}}
    if "-tb" not in kind:
        cfg.update(wandb={"enabled": True, "mode": "offline", "dir": f"{tmp}/wb"},
                   swanlab={"enabled": True, "mode": "offline", "logdir": f"{tmp}/sl"},
                   mlflow={"enabled": True, "tracking_uri": f"sqlite:///{tmp}/mlflow.db"})
    if kind.endswith("-inproc"):
        cfg["helper"] = False
    return cfg

if kind == "none":
    log = lambda i, m: None
elif kind.startswith("otel-rl-logger"):
    import otel_rl
    logger = otel_rl.Logger(otel_rl_config())
    pipeline = logger.pipeline
    log = lambda i, m: logger.log_metrics(m, step=i)
    finish = logger.finish
elif kind.startswith("otel-rl-meter"):
    import otel_rl
    from opentelemetry import metrics
    pipeline = otel_rl.init(otel_rl_config())
    gauges = {f"m{k}": metrics.get_meter("b").create_gauge(f"m{k}") for k in range(10)}
    def log(i, m):
        otel_rl.set_step(i)
        for k, v in m.items():
            gauges[k].set(v)
    finish = otel_rl.shutdown
elif kind == "wandb":
    import wandb
    run = wandb.init(project="loop", dir=tmp, mode="offline")
    log = lambda i, m: run.log(m, step=i)
    finish = run.finish
elif kind == "swanlab":
    import swanlab
    run = swanlab.init(project="loop", mode="offline", logdir=f"{tmp}/sl")
    log = lambda i, m: run.log(m, step=i)
    finish = run.finish
elif kind == "tensorboardX":
    from tensorboardX import SummaryWriter
    w = SummaryWriter(f"{tmp}/tbx")
    def log(i, m):
        for k, v in m.items():
            w.add_scalar(k, v, i)
    finish = w.close
elif kind == "mlflow-async":
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.start_run()
    log = lambda i, m: mlflow.log_metrics(m, step=i, synchronous=False)
    finish = mlflow.end_run
for i in range(50):  # warm-up, not timed
    log(i, {f"m{k}": step_work(i) + k for k in range(10)})
cpu0 = points0 = 0.0
if pipeline is not None:  # the backends are open and wrote the warm-up, as a peer's init waits for
    pipeline.force_flush(120)
    if pipeline.helper_pid is not None:
        s0 = pipeline.stats()
        cpu0, points0 = s0["helper_cpu_s"], s0["helper_points"]
t0 = time.perf_counter()
ab = None
if blocks:  # the same process, blocks of steps with and without logging, alternating
    on, off, i = [], [], 50
    for _ in range(blocks):
        for logging in (True, False):
            b0 = time.perf_counter()
            for _ in range(steps):
                value = step_work(i)
                if logging:
                    log(i, {f"m{k}": value + k for k in range(10)})
                i += 1
            (on if logging else off).append(time.perf_counter() - b0)
    import statistics
    ab = statistics.median(on) / statistics.median(off) - 1
else:
    for i in range(50, 50 + steps):
        value = step_work(i)
        log(i, {f"m{k}": value + k for k in range(10)})
loop_s = time.perf_counter() - t0
helper = {}
if pipeline is not None and pipeline.helper_pid is not None:
    pipeline.force_flush(60)
    helper = pipeline.stats()
if finish:
    finish()
print(json.dumps({"kind": kind, "loop": loop, "loop_s": loop_s, "ab": ab,
                  "helper_cpu_s": helper["helper_cpu_s"] - cpu0 if helper else None,
                  "helper_points": helper["helper_points"] - points0 if helper else None}))
"""

KINDS = ["none", "otel-rl-logger-tb", "otel-rl-meter-tb", "otel-rl-logger-all4", "otel-rl-meter-all4",
         "otel-rl-logger-all4-inproc", "wandb", "swanlab", "tensorboardX", "mlflow-async"]


def run(kind: str, loop: str, steps: int, blocks: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, kind, loop, str(steps), tmp, str(blocks)],
                             capture_output=True,
                             text=True, timeout=900, cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"{kind}/{loop}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--blocks", type=int, default=0,
                        help="0: each logger's loop against a loop without logging in another process "
                             "(the default); N: in one process, N alternating blocks of --steps steps with "
                             "and without logging (the machine's drift cancels out; for small effects)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if args.blocks:
        kinds = [k for k in kinds if k != "none"]
        slow: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for loop in ("gil", "numpy"):
                for kind in kinds:
                    slow.setdefault((loop, kind), []).append(run(kind, loop, args.steps, args.blocks)["ab"])
        print(json.dumps({loop: {kind: round(statistics.median(slow[(loop, kind)]), 4) for kind in kinds}
                          for loop in ("gil", "numpy")}))
        return 0
    times: dict[tuple[str, str], list[float]] = {}
    helper: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # interleaved: drift on the machine hits every logger alike
        for loop in ("gil", "numpy"):
            for kind in kinds:
                out = run(kind, loop, args.steps)
                times.setdefault((kind, loop), []).append(out["loop_s"])
                if out.get("helper_points"):
                    helper.setdefault(kind, []).append(out["helper_cpu_s"] / out["helper_points"])
    result = {}
    for loop in ("gil", "numpy"):
        base = statistics.median(times[("none", loop)])
        result[loop] = {"step_ms": base / args.steps * 1e3,
                        **{kind: round(statistics.median(times[(kind, loop)]) / base - 1, 4)
                           for kind in kinds if kind != "none"}}
    # the helper's CPU per point: its process time (start-up excluded) over the points it admitted
    result["helper_cpu_us_per_point"] = {kind: round(statistics.median(v) * 1e6, 2) for kind, v in helper.items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
