"""Trainer-process RSS over N steps (default 1,000,000), the helper process's included: the
meter API and the Logger with the helper (the default), the meter API with the engine in the
training process (``helper: false``), and that with a slow sink (the real TensorBoard sink
delayed 0.3 s per export), once with the in-memory queue (bounded; excess dropped and counted)
and once with a spool (nothing dropped).

    python bench/memory.py [--steps N]

Each mode runs in a fresh subprocess writing TensorBoard to a temp dir; RSS is sampled every
100k steps. Prints one table row per mode. A benchmark, not a timed test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import psutil
import otel_rl
steps, mode, log_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
extra = {"spool_dir": log_dir + "/spool"} if mode == "slow+spool" else {}
if mode.startswith("slow") or mode.endswith("in-process"):
    extra["helper"] = False
pipeline = otel_rl.Pipeline({"run_name": "mem", "tensorboard": {"log_dir": log_dir}, **extra})
helper = psutil.Process(pipeline.helper_pid) if pipeline.helper_pid else None

def rss():
    total = proc.memory_info().rss
    if helper is not None:
        try:
            total += helper.memory_info().rss
        except psutil.Error:
            pass
    return total

if mode.startswith("slow"):
    sink = pipeline.sinks[0]
    real_write = sink.write
    def slow_write(batch):
        time.sleep(0.3)
        real_write(batch)
    sink.write = slow_write
proc = psutil.Process()
samples = []
t0 = time.perf_counter()
final = 0
if mode.startswith("logger"):
    logger = otel_rl.Logger(pipeline=pipeline)
    for s in range(steps):
        logger.log_metrics({"loss": s * 0.1}, step=s)
        if s % 100_000 == 0:
            samples.append(rss())
    logger.finish()
else:
    loss = pipeline.get_meter("bench").create_gauge("loss")
    for s in range(steps):
        otel_rl.set_step(s)
        loss.set(s * 0.1)
        if s % 100_000 == 0:
            samples.append(rss())
pipeline.force_flush(5 if mode == "slow" else 600)
final = rss()
pipeline.shutdown(timeout_s=5 if mode == "slow" else 600)
stats = pipeline.stats()["tensorboard"]
print(json.dumps({"mode": mode, "seconds": time.perf_counter() - t0, "rss_mb": [x / 2**20 for x in samples],
                  "final_mb": final / 2**20, "exported": stats["exported_points"],
                  "dropped": stats["dropped_points"]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    args = parser.parse_args()
    print("| mode | steps | seconds | RSS first sample MB | RSS max MB | exported | dropped |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("meter", "logger", "meter in-process", "slow", "slow+spool"):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.steps), mode, tmp],
                                 capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {mode} | {args.steps:,} | {r['seconds']:.1f} | {r['rss_mb'][0]:.1f} | "
              f"{max(r['rss_mb'] + [r['final_mb']]):.1f} | {r['exported']:,} | {r['dropped']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
