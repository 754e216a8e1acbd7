"""Where logging's CPU goes, stage by stage: what one value costs in each part of the embedded path.

    python bench/stages.py [--steps 3000] [--gap-ms 2] [--backends tensorboard,wandb,swanlab,mlflow] [--json F]

One process, 10 scalars per step, a step that sleeps ``--gap-ms``. The engine runs in this
process (``helper: false``) so that every stage can be timed where it runs; each is timed with
``time.thread_time`` (CPU of the thread that runs it, not time spent waiting), per value:

- **tape**: ``Logger.log_metrics`` on the training thread;
- **frame**: what crosses to the helper in the default set-up, measured on the same records
  the engine got: pickled as the trainer does it, written to a pipe, read back and unpickled;
- **translate**, **admit** (steps, increments and totals), **queue** (the spool write, or the
  in-memory queue), **engine, other** (the rest of ``Engine.process``): on the engine's thread;
- **each sink's write**, on its delivery thread (the backend SDK's call included);
- **the rest**: the CPU of this process and its children (``wandb-core``)
  over the timed steps, less all of the above and less the loop's own CPU (a run that logs
  nothing, measured first): what the backends' SDKs do on their own threads and processes.

Backends: TensorBoard, W&B offline, SwanLab offline, MLflow on a sqlite store. After a warm-up
the process takes the helper's garbage-collector settings, as the stages after the tape run in
the helper by default.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hotpath import _cpu as _tree_cpu  # noqa: E402

KEYS = [f"train/m{i}" for i in range(10)]

_cpu = defaultdict(float)  # stage -> CPU seconds
_captured: list[tuple] = []  # what Engine.process got: the frames' contents


def _timed(stage, fn):
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _cpu[stage(args) if callable(stage) else stage] += time.thread_time() - t0
    return wrapper


def _instrument() -> None:
    from otel_rl.route import engine, queues
    from otel_rl.sinks import base

    engine.translate_records = _timed("translate", engine.translate_records)
    engine.Stream.admit = _timed("admit", engine.Stream.admit)
    queues.SpoolQueue.put = _timed("queue", queues.SpoolQueue.put)
    queues.MemoryQueue.put = _timed("queue", queues.MemoryQueue.put)
    base.Sink.write_batch = _timed(lambda args: f"sink: {args[0].name}", base.Sink.write_batch)
    process = engine.Engine.process

    def capture(self, records, step, release, now, emission=None):
        _captured.append((list(records), step, release, now))
        return process(self, records, step, release, now, emission=emission)

    engine.Engine.process = _timed("engine, total", capture)


def _frames_cost(bodies: list[tuple]) -> dict[str, float]:
    """The trainer's frame encoding, the pipe and the helper's decoding, on these bodies."""
    from otel_rl.runtime.frames import _dumps_records, _grow_pipe

    read_fd, write_fd = os.pipe()
    _grow_pipe(write_fd)
    out = {"frame: pickle": 0.0, "frame: pipe": 0.0, "frame: unpickle": 0.0}
    for body in bodies:
        t0 = time.thread_time()
        data = _dumps_records(body)
        t1 = time.thread_time()
        view, got = memoryview(data), []
        while view:  # a frame bigger than the pipe goes over in pieces
            n = os.write(write_fd, view[:1 << 16])
            view = view[n:]
            got.append(os.read(read_fd, n))
        t2 = time.thread_time()
        pickle.loads(b"".join(got))
        t3 = time.thread_time()
        out["frame: pickle"] += t1 - t0
        out["frame: pipe"] += t2 - t1
        out["frame: unpickle"] += t3 - t2
    os.close(read_fd)
    os.close(write_fd)
    return out


def _process_cpu() -> float:
    """CPU of this process and its children (``wandb-core``), as the hot-path bench counts it."""
    return _tree_cpu(psutil.Process())


def _loop(log, steps: int, gap_s: float, first: int = 0) -> float:
    """CPU of ``steps`` steps (this process and its children); the training thread's time in
    ``log`` goes to the ``tape`` stage."""
    cpu0 = _process_cpu()
    for step in range(first, first + steps):
        values = {k: step * 0.001 + i for i, k in enumerate(KEYS)}
        if log is not None:
            t0 = time.thread_time()
            log(values, step=step)
            _cpu["tape"] += time.thread_time() - t0
        time.sleep(gap_s)
    return _process_cpu() - cpu0


def measure(steps: int, gap_ms: float, backends: list[str]) -> dict:
    from backends import backend_config

    import otel_rl

    _instrument()
    gap = gap_ms / 1e3
    idle = _loop(None, steps, gap)  # the loop's own CPU: a run that logs nothing
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # a spool, as the helper always has one: the queue stage is its write
        config = {"run_name": "stages", "helper": False, "system_metrics": {"enabled": False},
                  "spool_dir": str(tmp / "spool"),
                  **{b: backend_config(b, tmp) for b in backends}}
        config.setdefault("tensorboard", {"enabled": False})
        logger = otel_rl.Logger(config)
        _loop(logger.log_metrics, 300, gap)  # warm-up: every SDK loaded, every run open
        logger.pipeline.force_flush()
        time.sleep(2.0)
        gc.freeze()  # the helper's garbage-collector settings (otel_rl/runtime/child.py), where
        gc.set_threshold(50_000, 20, 20)  # these stages run by default
        _cpu.clear()
        _captured.clear()
        cpu0 = _process_cpu()
        _loop(logger.log_metrics, steps, gap, first=300)
        logger.pipeline.force_flush()
        time.sleep(1.0)  # what the SDKs' own threads and processes still do for these steps
        total = _process_cpu() - cpu0
        stages = dict(_cpu)
        logger.finish()
    stages.update(_frames_cost(_captured))
    values = steps * len(KEYS)
    engine_total = stages.pop("engine, total", 0.0)
    stages["engine, other"] = engine_total - sum(stages.get(k, 0.0) for k in ("translate", "admit", "queue"))
    timed = sum(v for k, v in stages.items() if not k.startswith("frame"))
    stages["the rest: SDK threads and processes, otel-rl's drain and delivery threads"] = max(
        0.0, total - idle - timed)
    return {"steps": steps, "values": values, "gap_ms": gap_ms, "backends": backends,
            "us_per_value": {k: 1e6 * v / values for k, v in stages.items()},
            "loop_cpu_us_per_step": 1e6 * idle / steps}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--gap-ms", type=float, default=2.0)
    parser.add_argument("--backends", default="tensorboard,wandb,swanlab,mlflow")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = measure(args.steps, args.gap_ms, args.backends.split(","))
    print(f"CPU per value, stage by stage ({result['steps']} steps of 10 scalars, {args.gap_ms} ms step, "
          f"backends: {', '.join(result['backends'])}):\n")
    print("| stage | µs per value |\n|---|---|")
    for stage, us in result["us_per_value"].items():
        print(f"| {stage} | {us:.2f} |")
    print(f"| **all** | **{sum(result['us_per_value'].values()):.2f}** |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
