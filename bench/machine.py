"""What logging costs the whole machine: the CPU of every process the trainer starts, as the
marginal cost per step, otel-rl against each peer in the same run.

    python bench/machine.py [--short 1000 --long 3000 --rounds 3] [--only NAME ...]

Each logger runs a loop of 10 scalars per step; the step itself sleeps 2 ms, so it uses no CPU
and what is counted is logging's alone. Every run is a fresh process put in a cpuacct cgroup of
its own before it starts (``/sys/fs/cgroup/cpuacct``, cgroup v1; where that cannot be written,
the bench becomes a child subreaper and counts every descendant it reaps, processes that
outlive the trainer included). The count ends when the last process of the run has exited:
the trainer, otel-rl's helper, ``wandb-core``, SwanLab's and MLflow's threads and processes.

The marginal cost per step is (CPU of a ``--long`` run - CPU of a ``--short`` run) / (long -
short): start-up, imports and shutdown cancel. The loop's own cost (the Python loop and its
sleep calls: the ``none`` row, a run that logs nothing) is then subtracted, so each row is
logging's CPU alone. The loop's wall time per step is reported beside it from the same runs, as a
slowdown against ``none`` (a 2 ms sleeping step: ``bench/loop.py`` measures the slowdown of
loops that compute). Medians over ``--rounds`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CGROUP_ROOT = Path("/sys/fs/cgroup/cpuacct")
STEP_S = 0.002
#: bench/hotpath.py's names (its make_logger sets each up); MLflow on a sqlite store for both.
OTEL_RL = ["otel-rl (tensorboard)", "otel-rl (wandb)", "otel-rl (swanlab)", "otel-rl (mlflow)", "otel-rl (4 backends)"]
PEERS = ["tensorboardX", "wandb offline", "swanlab offline", "mlflow async"]
#: The peer each otel-rl sink is compared with.
PEER_OF = {"otel-rl (tensorboard)": "tensorboardX", "otel-rl (wandb)": "wandb offline",
           "otel-rl (swanlab)": "swanlab offline", "otel-rl (mlflow)": "mlflow async"}

CHILD = r'''
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[5])  # bench/: the loggers are set up as bench/hotpath.py sets them up
from hotpath import KEYS, make_logger
kind, steps, tmp, STEP_S = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
if kind == "none":
    log, finish = (lambda values, step: None), (lambda: None)
else:
    log, finish, _ = make_logger(kind, tmp, f"sqlite:///{tmp}/mlflow.db", system_metrics=False)
values = {k: 0.0 for k in KEYS}
start = time.perf_counter()
for step in range(steps):
    for i, k in enumerate(KEYS):
        values[k] = (step * 7 + i) % 13 / 13
    log(values, step)
    time.sleep(STEP_S)
loop_s = time.perf_counter() - start
finish()
print(json.dumps({"loop_s": loop_s}))
'''


def _cgroup_usable() -> bool:
    probe = CGROUP_ROOT / f"otel_rl_bench_probe_{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


def run_once(kind: str, steps: int, use_cgroup: bool) -> dict:
    """One fresh process: the CPU seconds of every process of the run, and the loop's wall time."""
    with tempfile.TemporaryDirectory(prefix="otel-rl-machine-") as tmp:
        env = {**os.environ, "WANDB_SILENT": "true", "SWANLAB_SAVE_DIR": tmp, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-c", CHILD, kind, str(steps), tmp, str(STEP_S), str(ROOT / "bench")]
        if use_cgroup:
            group = CGROUP_ROOT / f"otel_rl_bench_{os.getpid()}_{time.monotonic_ns()}"
            group.mkdir()
            procs = group / "cgroup.procs"
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900,
                                  preexec_fn=lambda: procs.write_text(str(os.getpid())))
            deadline = time.monotonic() + 60
            while procs.read_text().strip() and time.monotonic() < deadline:  # the run's last process
                time.sleep(0.05)
            cpu_s = int((group / "cpuacct.usage").read_text()) / 1e9
            left = procs.read_text().split()
            for pid in left:  # started by this run and still there after a minute
                os.kill(int(pid), 9)
            while procs.read_text().strip():
                time.sleep(0.05)
            group.rmdir()
        else:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # reap the descendants that outlived the trainer
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    time.sleep(0.05)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    loop_s = json.loads(proc.stdout.strip().splitlines()[-1])["loop_s"]
    return {"cpu_s": cpu_s, "loop_s": loop_s}


def measure(kinds: list[str], short: int, long: int, rounds: int) -> dict[str, dict]:
    use_cgroup = _cgroup_usable()
    if not use_cgroup:  # orphans of the run are reparented to this process, which reaps them
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:  # interleaved: the machine's drift spreads over every logger
            a, b = run_once(kind, short, use_cgroup), run_once(kind, long, use_cgroup)
            steps = long - short
            samples[kind].append(((b["cpu_s"] - a["cpu_s"]) / steps, (b["loop_s"] - a["loop_s"]) / steps))
    base_cpu = statistics.median(c for c, _ in samples["none"]) if "none" in samples else 0.0
    base_loop = statistics.median(w for _, w in samples["none"]) if "none" in samples else None
    out = {}
    for kind, pairs in samples.items():
        cpu = [c - base_cpu for c, _ in pairs]
        loop = statistics.median(w for _, w in pairs)
        out[kind] = {"cpu_ms_per_step": statistics.median(cpu) * 1e3, "cpu_ms_min": min(cpu) * 1e3,
                     "cpu_ms_max": max(cpu) * 1e3, "loop_ms_per_step": loop * 1e3,
                     "loop_cpu_ms_per_step": base_cpu * 1e3,
                     "accounting": "cgroup cpuacct" if use_cgroup else "subreaper rusage"}
        if base_loop:
            out[kind]["loop_slowdown_pct"] = (loop / base_loop - 1) * 100
    return out


def report(out: dict[str, dict]) -> str:
    base = next(iter(out.values()), {}).get("loop_cpu_ms_per_step", 0.0)
    lines = [f"Logging's CPU per step of 10 scalars, every process, the loop's own {base:.3f} ms subtracted; "
             f"accounting: {next(iter(out.values()), {}).get('accounting')}.", "",
             "| logger | CPU per step, all processes (min-max) | 2 ms sleeping step: slowdown |", "|---|---|---|"]
    for kind, row in out.items():
        if kind == "none":
            continue
        slow = f"{row['loop_slowdown_pct']:+.1f} %" if "loop_slowdown_pct" in row else ""
        lines.append(f"| {kind} | {row['cpu_ms_per_step']:.3f} ms ({row['cpu_ms_min']:.3f}-{row['cpu_ms_max']:.3f})"
                     f" | {slow} |")
    peers = [out[p]["cpu_ms_per_step"] for p in PEERS if p in out]
    if "otel-rl (4 backends)" in out and peers:
        lines.append(f"\nall four / cheapest single peer: {out['otel-rl (4 backends)']['cpu_ms_per_step'] / min(peers):.2f}")
    for ours, peer in PEER_OF.items():
        if ours in out and peer in out:
            lines.append(f"{ours} / {peer}: {out[ours]['cpu_ms_per_step'] / out[peer]['cpu_ms_per_step']:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=1000)
    parser.add_argument("--long", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="loggers to run (default: all)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    kinds = ["none", *(args.only or OTEL_RL + PEERS)]  # none: the loop's own CPU, subtracted
    out = measure(kinds, args.short, args.long, args.rounds)
    print(report(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
