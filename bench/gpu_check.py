"""Check the GPU gauges against a real GPU (run on a machine with an NVIDIA driver).

    python bench/gpu_check.py [--seconds 10] [--json out.json]

Burns the GPU a little if torch with CUDA is installed (so utilization moves), samples
through the real pipeline into TensorBoard under a temp dir, reads it back with
TensorBoard's reader, and prints one line per instrument and GPU (system metrics on too).
Then it checks each GPU instrument's name against the OTel hardware conventions (the
``opentelemetry-semantic-conventions`` package's own list), and times one NVML sampling
round (every gauge of every GPU, per-process memory included) over ``--reads`` rounds.
Exit code 1 when no GPU was found, 2 when the gauges did not reach TensorBoard.
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


def conventions(names: list[str]) -> dict[str, str]:
    """Each name: ``conventions`` when the hardware conventions define it, else ``otel-rl``."""
    try:
        from opentelemetry.semconv._incubating.metrics import hw_metrics
    except ImportError:
        return {name: "unknown (opentelemetry-semantic-conventions not installed)" for name in names}
    defined = {value for key, value in vars(hw_metrics).items() if key.startswith("HW_") and isinstance(value, str)}
    return {name: "conventions" if name in defined else "otel-rl" for name in names}


def sampling_cost(reads: int) -> dict[str, float]:
    """One NVML round (what a collection does once per ``interval_s``): wall and CPU time."""
    from opentelemetry.metrics import NoOpMeter

    from otel_rl.sources.gpu import GpuConfig, GpuSampler

    sampler = GpuSampler(NoOpMeter("cost"), GpuConfig(interval_s=0.0), directory=Path(tempfile.mkdtemp()))
    if not sampler.start():
        return {}
    sampler._refresh()  # the first read warms NVML's caches
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for _ in range(reads):
        sampler._refresh()
    wall, cpu = (time.perf_counter() - wall0) / reads, (time.thread_time() - cpu0) / reads
    nvml, handle = sampler._nvml, sampler._handles[0][0]
    calls = {  # each NVML call of a round, on GPU 0: which one the round's time is
        "utilization": lambda: nvml.nvmlDeviceGetUtilizationRates(handle),
        "memory": lambda: nvml.nvmlDeviceGetMemoryInfo(handle),
        "power": lambda: nvml.nvmlDeviceGetPowerUsage(handle),
        "temperature": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        "clock_sm": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
        "clock_mem": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
        "energy": lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle),
        "processes": lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle),
    }
    loop = loop_slowdown(sampler)
    per_call = {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        for _ in range(max(reads // 4, 10)):
            call()
        per_call[name] = (time.perf_counter() - t0) / max(reads // 4, 10) * 1e6
    gpus = len(sampler._handles)
    sampler.close()
    return {"gpus": gpus, "reads": reads, "wall_ms_per_round": wall * 1e3, "cpu_ms_per_round": cpu * 1e3,
            "cpu_share_at_default_interval": cpu / GpuConfig().interval_s, "us_per_call_gpu0": per_call, **loop}


def loop_slowdown(sampler, rounds: int = 8, seconds: float = 1.0, every_s: float = 0.1) -> dict[str, float]:
    """A GIL-bound loop's steps per second with a thread sampling every ``every_s`` (50x the
    default rate) against none, interleaved ``rounds`` times: NVML's calls go through ctypes,
    which lets go of the GIL, so what the loop loses is the Python around them."""
    def steps(sampling: bool) -> int:
        stop = threading.Event()
        thread = threading.Thread(target=lambda: [sampler._refresh() for _ in iter(lambda: stop.wait(every_s), True)])
        if sampling:
            thread.start()
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            sum(i * i for i in range(200))
            n += 1
        stop.set()
        if sampling:
            thread.join()
        return n
    off, on = [], []
    for _ in range(rounds):
        off.append(steps(False))
        on.append(steps(True))
    return {"loop_steps_off": sum(off), "loop_steps_on": sum(on), "loop_slowdown_sampling_every_0.1s":
            sum(off) / sum(on) - 1}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
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
        if tag.startswith(("hw.", "system.", "process.")):
            values = [e.value for e in acc.Scalars(tag)]
            result[tag] = {"points": len(values), "min": min(values), "max": max(values)}
            print(f"{tag}: {len(values)} points, min {min(values):.4g}, max {max(values):.4g}")
    gpu_names = sorted({tag.split("/")[0] for tag in result if tag.startswith("hw.")})
    names = conventions(gpu_names)
    for name, where in names.items():
        print(f"name {name}: {where}")
    cost = sampling_cost(args.reads)
    if cost:
        print(f"sampling: {cost['wall_ms_per_round']:.3f} ms wall, {cost['cpu_ms_per_round']:.3f} ms CPU per round "
              f"of {cost['gpus']} GPU(s); {cost['cpu_share_at_default_interval']:.2e} of a core at the default interval")
        print(f"a GIL-bound loop sampled every 0.1 s: {cost['loop_slowdown_sampling_every_0.1s']:+.2%} time per step")
        print("per NVML call on GPU 0 (µs): " + ", ".join(f"{k} {v:.0f}" for k, v in cost["us_per_call_gpu0"].items()))
    summary = {"load": load.get("mode"), "steps": step, "instruments": len(result), "names": names,
               "sampling": cost, "series": result}
    print(json.dumps({k: summary[k] for k in ("load", "steps", "instruments")}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0 if any(tag.startswith("hw.") for tag in result) else 2


if __name__ == "__main__":
    sys.exit(main())
