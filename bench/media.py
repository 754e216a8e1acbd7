"""What logging media costs the training thread, and the whole machine, side by side with the
peers, in one run:

    python bench/media.py                 # 200 images of each size, 10 videos, per logger

For each logger, in a process of its own: the median wall time of one call on the training
thread (``add_image`` of a 64x64 and of a 256x256 uint8 frame of 8x8-pixel color blocks, as a
game screen is; ``add_video`` of 100 such frames of 64x64; every logger gets the same pixels), and the CPU of every process involved (the trainer, its helper, ``wandb-core``) per
call, marginal (a run of 3N calls against one of N, from the first call to everything flushed
by ``close``/``finish``): this process, its running
children (psutil), and the children that ended and were waited for (``RUSAGE_CHILDREN``). Loggers: otel-rl's ``SummaryWriter`` (TensorBoard), tensorboardX's, and W&B
offline (``wandb.Image``/``wandb.Video`` in ``run.log``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
import numpy as np, psutil
kind, what, n, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
os.environ.update(WANDB_SILENT="true", WANDB_MODE="offline", OTEL_RL_SYSTEM_METRICS="false")
rng = np.random.default_rng(0)

def frames(*lead, size):  # game-like frames: 8x8-pixel blocks of color (noise would not compress)
    blocks = rng.integers(0, 256, (*lead, 3, size // 8, size // 8), dtype=np.uint8)
    return blocks.repeat(8, axis=-1).repeat(8, axis=-2)

if what == "video":
    items = [frames(1, 100, size=64) for _ in range(2)]
else:
    items = [frames(size=int(what)) for _ in range(4)]

import resource

def tree_cpu():
    # this process, its children that ended and were waited for, and those still running
    me = psutil.Process()
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = sum(me.cpu_times()[:2]) + ended.ru_utime + ended.ru_stime
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total

if kind == "wandb":
    import wandb
    run = wandb.init(project="bench", dir=tmp, mode="offline")
    if what == "video":
        call = lambda i, x: run.log({"v": wandb.Video(x, fps=30, format="gif")}, step=i)
    else:
        call = lambda i, x: run.log({"img": wandb.Image(np.ascontiguousarray(np.transpose(x, (1, 2, 0))))}, step=i)
    done = run.finish
else:
    if kind == "otel_rl":
        from otel_rl import SummaryWriter
    else:
        from tensorboardX import SummaryWriter
    writer = SummaryWriter(os.path.join(tmp, "run"))
    if what == "video":
        call = lambda i, x: writer.add_video("v", x, i, fps=30)
    else:
        call = lambda i, x: writer.add_image("img", x, i)
    done = writer.close
call(0, items[0])  # warm-up: imports, the first file
cpu0 = tree_cpu()
times = []
for i in range(1, n + 1):
    t = time.perf_counter()
    call(i, items[i % len(items)])
    times.append(time.perf_counter() - t)
done()
cpu = tree_cpu() - cpu0
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2] * 1e3, "p90_ms": times[int(len(times) * 0.9)] * 1e3,
                  "cpu_s": cpu}))
"""


def _child(kind: str, what: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, kind, what, str(n), tmp], capture_output=True,
                             text=True, timeout=1800, cwd=ROOT)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(kind: str, what: str, n: int) -> dict:
    """The call's time from a run of ``3n`` calls; the CPU per call as the difference between that
    run and one of ``n`` calls, over ``2n``, so that what a run pays once (closing, flushing the
    helper, the SDK's teardown) cancels."""
    short, long = _child(kind, what, n), _child(kind, what, 3 * n)
    if "error" in short or "error" in long:
        return short if "error" in short else long
    return {"median_ms": long["median_ms"], "p90_ms": long["p90_ms"],
            "cpu_ms_per_call": (long["cpu_s"] - short["cpu_s"]) * 1e3 / (2 * n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="Images of each size per logger (default: 200).")
    parser.add_argument("--videos", type=int, default=10, help="Videos per logger (default: 10).")
    parser.add_argument("--rounds", type=int, default=1, help="Repeats; medians are reported (default: 1).")
    args = parser.parse_args()
    rows = []
    for what, n in (("64", args.images), ("256", args.images), ("video", args.videos)):
        for kind in ("otel_rl", "tensorboardX", "wandb"):
            runs = [measure(kind, what, n) for _ in range(args.rounds)]
            ok = [r for r in runs if "error" not in r]
            row = {"item": {"64": "add_image 64x64", "256": "add_image 256x256", "video": "add_video 100x64x64"}[what],
                   "logger": kind}
            if ok:
                for key in ("median_ms", "p90_ms", "cpu_ms_per_call"):
                    row[key] = round(statistics.median(r[key] for r in ok), 3)
            else:
                row["error"] = runs[0]["error"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| item | logger | training thread, median ms | p90 ms | CPU of every process, ms per call |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['item']} | {r['logger']} | error: {r['error']} | | |")
        else:
            print(f"| {r['item']} | {r['logger']} | {r['median_ms']} | {r['p90_ms']} | {r['cpu_ms_per_call']} |")


if __name__ == "__main__":
    main()
