"""Real trainer and collector processes for the collector tests (started by these tests, ended
by their process id)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

TRAINER = """
import json, os, sys, time, otel_rl
endpoint, steps, gap, spool = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
otel_rl.init({"run_name": os.environ["RUN"], "export_interval_s": 0.1, "tensorboard": {"enabled": False},
              "spool_dir": spool or None, "otlp": {"enabled": True, "endpoint": endpoint, "timeout_s": 5}})
from opentelemetry import metrics
meter = metrics.get_meter("rank")
loss, episodes = meter.create_gauge("loss"), meter.create_counter("episodes")
rank = int(os.environ["RANK"])
durations = []
for step in range(steps):
    t0 = time.perf_counter()
    otel_rl.set_step(step)
    loss.set(step + rank)
    if step % (rank + 2) == 0:  # ranks finish episodes at different steps
        episodes.add(1)
    time.sleep(gap)
    durations.append((time.time(), time.perf_counter() - t0))
t0 = time.monotonic()
delivered = otel_rl.shutdown(timeout_s=float(os.environ.get("SHUTDOWN_S", "60")))
print(json.dumps({"durations": durations, "shutdown_s": time.monotonic() - t0, "delivered": delivered}))
"""


def start_trainers(endpoint, world, steps, gap, run, spool="", shutdown_s=60):
    return [subprocess.Popen([sys.executable, "-c", TRAINER, endpoint, str(steps), str(gap), str(spool)],
                             env={**os.environ, "RANK": str(r), "WORLD_SIZE": str(world), "RUN": run,
                                  "SHUTDOWN_S": str(shutdown_s)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]


def finish(procs, timeout=600) -> list[dict]:
    out = []
    for p in procs:
        stdout, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def start_collector(config_path, stderr: bool = False):
    """The collector CLI on ``config_path``, once it says it is ready (``stderr``: keep its log to
    read with ``communicate()``)."""
    proc = subprocess.Popen([sys.executable, "-m", "otel_rl.cli", "collector", "--config", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
                            text=True)
    assert proc.stdout.readline().startswith("otel-rl collector ready")
    return proc
