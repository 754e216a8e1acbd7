"""Check the GPU gauges against a real GPU (run on a machine with an NVIDIA driver).

    python bench/gpu_check.py [--seconds 10]

Burns the GPU a little if torch with CUDA is installed (so utilization moves), samples
through the real pipeline into TensorBoard under a temp dir, reads it back with
TensorBoard's reader, and prints one line per instrument and GPU (system metrics on too). Exit code 1 when no GPU
was found, 2 when the gauges did not reach TensorBoard.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import otel_rl


def _burn(stop: threading.Event) -> str:
    try:
        import torch
    except ImportError:
        return "no torch: idle GPU"
    if not torch.cuda.is_available():
        return "torch without CUDA: idle GPU"
    x = torch.randn(4096, 4096, device="cuda")
    while not stop.is_set():
        x = (x @ x).tanh()
    torch.cuda.synchronize()
    return "torch matmul load"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    pipeline = otel_rl.init({"run_name": "gpu-check", "export_interval_s": 0.5,
                             "tensorboard": {"log_dir": str(tmp)},
                             "gpu": {"enabled": True, "interval_s": 0.5},
                             "system_metrics": {"enabled": True, "interval_s": 1.0}})
    if pipeline.gpu is None:
        otel_rl.shutdown()
        print("no GPU gauges: see the log line above")
        return 1
    stop = threading.Event()
    load = {}
    burner = threading.Thread(target=lambda: load.setdefault("mode", _burn(stop)), daemon=True)
    burner.start()
    t0 = time.monotonic()
    step = 0
    while time.monotonic() - t0 < args.seconds:
        otel_rl.set_step(step)
        time.sleep(0.5)
        step += 1
    stop.set()
    burner.join(30)
    otel_rl.shutdown()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp / "gpu-check"), size_guidance={"scalars": 0})
    acc.Reload()
    result = {}
    for tag in sorted(acc.Tags()["scalars"]):
        if tag.startswith(("hw.gpu", "system.", "process.")):
            values = [e.value for e in acc.Scalars(tag)]
            result[tag] = {"points": len(values), "min": min(values), "max": max(values)}
            print(f"{tag}: {len(values)} points, min {min(values):.4g}, max {max(values):.4g}")
    print(json.dumps({"load": load.get("mode"), "steps": step, "instruments": len(result)}))
    return 0 if any(tag.startswith("hw.gpu") for tag in result) else 2


if __name__ == "__main__":
    sys.exit(main())
