"""End-to-end latency: from ``log_metrics`` returning to the value being readable in TensorBoard.

    python bench/latency.py [--steps 200] [--interval 1.0]

A watcher thread tails the run's event file with TensorBoard's own ``EventFileLoader`` and
notes when each step first appears; latency = first seen - logged. One step every 10 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import otel_rl


def measure(steps: int, interval_s: float) -> dict:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    with tempfile.TemporaryDirectory() as tmp:
        logger = otel_rl.Logger({"run_name": "lat", "export_interval_s": interval_s,
                                 "tensorboard": {"log_dir": tmp}})
        logged: dict[int, float] = {}
        seen: dict[int, float] = {}
        stop = threading.Event()

        def watch():
            loader = None
            while not stop.is_set() or len(seen) < steps:
                if loader is None:
                    files = list((Path(tmp) / "lat").glob("events.out.tfevents.*"))
                    loader = EventFileLoader(str(files[0])) if files else None
                for event in (loader.Load() if loader else ()):
                    if event.HasField("summary") and event.step not in seen:
                        seen[event.step] = time.perf_counter()
                if stop.is_set() and len(seen) >= steps:
                    break
                time.sleep(0.002)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for step in range(steps):
            logger.log_metrics({"loss": step * 0.1}, step=step)
            logged[step] = time.perf_counter()
            time.sleep(0.01)
        logger.finish()
        stop.set()
        watcher.join(30)
    lat = sorted(1e3 * (seen[s] - logged[s]) for s in logged if s in seen)
    return {"steps": steps, "export_interval_s": interval_s, "seen": len(lat),
            "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99) - 1], "mean_ms": statistics.fmean(lat)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--interval", type=float, nargs="+", default=[1.0, 0.1])
    args = parser.parse_args()
    for interval in args.interval:
        print(json.dumps(measure(args.steps, interval)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
