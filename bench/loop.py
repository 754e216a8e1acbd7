"""What a training loop pays for logging: its slowdown, against the same loop without logging,
with each logger in its own process, side by side with the peers.

    python bench/loop.py                                   # A/B in one process (the default)
    python bench/loop.py --blocks 0 --steps 1500 --rounds 4  # process against process

Two loops, 10 scalars logged per step:

- ``gil``: a GIL-bound Python step of about 1.4 ms (an RL environment loop is like this): every
  thread the logger runs in the training process competes with it for the GIL;
- ``numpy``: a step of about 1.6 ms of numpy work that releases the GIL (a model step is closer
  to this): background threads can run meanwhile.

A/B in one process (``--blocks N``, the default): N pairs of short blocks (``--steps`` steps,
default 20) with and without logging alternate inside one process. The slowdown is the sum of
two parts, each measured precisely:

- **in the loop**: the median over all pairs of (block with logging / block without) - 1,
  with a bootstrap 95 % interval. Short blocks cancel the machine's drift, and the median
  ignores the rare stall, which is why the second part is measured on its own:
- **in the process's other threads**: the CPU time of every thread of the training process
  but the loop's own (``/proc/self/task/*/schedstat``), over the steps that logged, as a share
  of a step. In a GIL-bound loop a thread of the same process runs only while the loop waits,
  so this is what the loop loses to it (in the numpy loop it is an upper bound: such threads
  can run beside the BLAS call).

Helper processes (ours, ``wandb-core``) run on the machine's other core and are reported as CPU
per point (ours). Process against process (``--blocks 0``, the issue's method): each logger's
loop in its own process against a loop without logging in another, interleaved rounds; it
charges everything at once, but this machine varies by about 10 % between processes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
elif kind == "python-floor":  # the values as tuples on a list: what building them costs any Python API
    tape = []
    def log(i, m):
        t = time.time_ns()
        for k, v in m.items():
            tape.append((k, v, i, t))
        if len(tape) > 10_000:
            tape.clear()
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
if blocks:  # pairs of short blocks with and without logging, alternating (see the module doc)
    import threading
    main_tid = threading.get_native_id()

    def other_threads_cpu():
        out = {}
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != main_tid:
                try:
                    with open(f"/proc/self/task/{tid}/schedstat") as f:
                        out[tid] = int(f.read().split()[0])
                except OSError:  # the thread ended meanwhile
                    pass
        return out

    pairs, off_s, i = [], 0.0, 50
    cpu_start = other_threads_cpu()
    for _ in range(blocks):
        times = []
        for logging in (True, False):
            b0 = time.perf_counter()
            for _ in range(steps):
                value = step_work(i)
                if logging:
                    log(i, {f"m{k}": value + k for k in range(10)})
                i += 1
            times.append(time.perf_counter() - b0)
        pairs.append(times[0] / times[1] - 1)
        off_s += times[1]
    cpu_end = other_threads_cpu()
    ab = {"pairs": pairs, "logged_steps": blocks * steps, "step_s": off_s / (blocks * steps),
          "other_threads_cpu_s": sum(v - cpu_start.get(t, 0) for t, v in cpu_end.items()) / 1e9}
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

KINDS = ["none", "python-floor", "otel-rl-logger-tb", "otel-rl-meter-tb", "otel-rl-logger-all4", "otel-rl-meter-all4",
         "otel-rl-logger-all4-inproc", "wandb", "swanlab", "tensorboardX", "mlflow-async"]


def run(kind: str, loop: str, steps: int, blocks: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, kind, loop, str(steps), tmp, str(blocks)],
                             capture_output=True,
                             text=True, timeout=900, cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"{kind}/{loop}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bootstrap_ci(values: list[float], n: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[int(n * 0.025)], medians[int(n * 0.975)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per block (A/B, default 20) or per process (--blocks 0, default 1500)")
    parser.add_argument("--rounds", type=int, default=None, help="default 2 (A/B) or 4 (--blocks 0)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--loops", default="gil,numpy")
    parser.add_argument("--blocks", type=int, default=600,
                        help="N: A/B in one process, N pairs of blocks with and without logging (the default, "
                             "600); 0: each logger's loop against a loop without logging in another process")
    args = parser.parse_args()
    kinds, loops = args.kinds.split(","), args.loops.split(",")
    helper: dict[str, list[float]] = {}

    def note_helper(kind: str, out: dict) -> None:
        if out.get("helper_points"):
            helper.setdefault(kind, []).append(out["helper_cpu_s"] / out["helper_points"])

    if args.blocks:
        steps, rounds = args.steps or 20, args.rounds or 2
        kinds = [k for k in kinds if k != "none"]
        pairs: dict[tuple[str, str], list[float]] = {}
        threads: dict[tuple[str, str], list[float]] = {}
        step_s: dict[str, list[float]] = {}
        for _ in range(rounds):
            for loop in loops:
                for kind in kinds:
                    out = run(kind, loop, steps, args.blocks)
                    ab = out["ab"]
                    pairs.setdefault((loop, kind), []).extend(ab["pairs"])
                    threads.setdefault((loop, kind), []).append(
                        ab["other_threads_cpu_s"] / (ab["logged_steps"] * ab["step_s"]))
                    step_s.setdefault(loop, []).append(ab["step_s"])
                    note_helper(kind, out)
        result: dict = {}
        for loop in loops:
            result[loop] = {"step_ms": round(statistics.median(step_s[loop]) * 1e3, 3)}
            for kind in kinds:
                in_loop = statistics.median(pairs[(loop, kind)])
                lo, hi = _bootstrap_ci(pairs[(loop, kind)])
                other = statistics.median(threads[(loop, kind)])
                result[loop][kind] = {"slowdown": round(in_loop + other, 4), "in_loop": round(in_loop, 4),
                                      "in_loop_ci95": [round(lo, 4), round(hi, 4)],
                                      "other_threads": round(other, 4), "pairs": len(pairs[(loop, kind)])}
    else:
        steps, rounds = args.steps or 1500, args.rounds or 4
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):  # interleaved: drift on the machine hits every logger alike
            for loop in loops:
                for kind in kinds:
                    out = run(kind, loop, steps)
                    times.setdefault((kind, loop), []).append(out["loop_s"])
                    note_helper(kind, out)
        result = {}
        for loop in loops:
            base = statistics.median(times[("none", loop)])
            result[loop] = {"step_ms": base / steps * 1e3,
                            **{kind: round(statistics.median(times[(kind, loop)]) / base - 1, 4)
                               for kind in kinds if kind != "none"}}
    # the helper's CPU per point: its process time (start-up excluded) over the points it admitted
    result["helper_cpu_us_per_point"] = {kind: round(statistics.median(v) * 1e6, 2) for kind, v in helper.items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
