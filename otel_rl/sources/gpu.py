"""GPU gauges from NVML, named per the OTel hardware semantic conventions.

Observable gauges (one point per GPU per collection, at the current training step; NVML is
read at most every ``interval_s`` and the latest reading is reported):

| instrument | unit | source |
|---|---|---|
| ``hw.gpu.utilization`` | 1 (0-1) | ``nvmlDeviceGetUtilizationRates().gpu / 100`` |
| ``hw.gpu.memory.usage`` | By | ``nvmlDeviceGetMemoryInfo().used`` |
| ``hw.gpu.memory.limit`` | By | ``nvmlDeviceGetMemoryInfo().total`` |
| ``hw.gpu.memory.utilization`` | 1 (0-1) | used / total |
| ``hw.gpu.power`` | W | ``nvmlDeviceGetPowerUsage() / 1000`` |
| ``hw.gpu.temperature`` | Cel | ``nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)`` |
| ``hw.gpu.clock.sm`` / ``hw.gpu.clock.memory`` | Hz | ``nvmlDeviceGetClockInfo() * 1e6`` |
| ``hw.energy`` (observable counter) | J | ``nvmlDeviceGetTotalEnergyConsumption() / 1000`` (Volta+) |
| ``hw.gpu.process.memory.usage`` | By | per process (``process.pid``, ``otel_rl.role``) |

The first four and ``hw.energy`` are the conventions' own names. The conventions name GPU
power ``hw.power`` (with ``hw.type=gpu``) and define no GPU temperature or clock; the
``hw.gpu.power``, ``hw.gpu.temperature`` and ``hw.gpu.clock.*`` names are otel-rl's, kept
under the ``hw.gpu.`` prefix so one dashboard query finds every GPU gauge.

Attributes: ``hw.id`` (GPU UUID, required by the conventions), ``hw.type`` (``gpu``, required),
``hw.name``, ``hw.vendor``, ``hw.driver_version``, ``hw.gpu.pci_bus_id`` and ``host.name``:
a bounded set per node.

One sampler per node, not per worker (wandb#5078: colocated workers double-count): the first
process to take the node's lock file samples; the others only register their role with
:func:`register_role`, so each process's GPU memory is counted once, under its role.
No NVML (no driver, no GPU, no ``nvidia-ml-py``) means one log line and no instruments.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from otel_rl.settings import env_default, positive

_log = logging.getLogger(__name__)

_DEFAULT_DIR = Path(os.environ.get("OTEL_RL_GPU_DIR", "/tmp/otel-rl-gpu"))

_GAUGES = {  # name: (unit, description, reading key)
    "hw.gpu.utilization": ("1", "GPU compute utilization (0-1)", "util"),
    "hw.gpu.memory.usage": ("By", "GPU memory used", "mem_used"),
    "hw.gpu.memory.limit": ("By", "GPU memory size", "mem_total"),
    "hw.gpu.memory.utilization": ("1", "fraction of GPU memory used (0-1)", "mem_frac"),
    "hw.gpu.power": ("W", "GPU power draw", "power"),
    "hw.gpu.temperature": ("Cel", "GPU temperature", "temp"),
    "hw.gpu.clock.sm": ("Hz", "SM clock", "clock_sm"),
    "hw.gpu.clock.memory": ("Hz", "memory clock", "clock_mem"),
}
_COUNTERS = {  # cumulative since the driver loaded: an observable counter
    "hw.energy": ("J", "energy consumed by the GPU", "energy"),
}


@dataclass(frozen=True)
class GpuConfig:
    """``gpu:`` section. ``interval_s``: minimum seconds between NVML reads (env
    ``OTEL_RL_GPU_INTERVAL``); ``per_process``: per-process memory by role."""

    enabled: bool = env_default("OTEL_RL_GPU", False, bool)
    interval_s: float = env_default("OTEL_RL_GPU_INTERVAL", 5.0, float)
    per_process: bool = True

    def validate(self, path: str) -> None:
        positive(f"{path}.interval_s", self.interval_s)


def register_role(role: str, pid: int | None = None, directory: Path = _DEFAULT_DIR) -> None:
    """Declare this process's role (``policy``, ``generation``, ``reward``...) to the node sampler."""
    roles = directory / "roles"
    roles.mkdir(parents=True, exist_ok=True)
    (roles / str(pid or os.getpid())).write_text(role)


def _load_nvml():
    try:
        import pynvml
    except ImportError:
        _log.warning("otel-rl: gpu.enabled is set but GPU gauges are off: nvidia-ml-py is not installed "
                     "(pip install 'otel-rl[gpu]')")
        return None
    return pynvml


class GpuSampler:
    """Registers the ``hw.gpu.*`` observable gauges on ``meter`` when this process owns the node."""

    def __init__(self, meter, config: GpuConfig | None = None, *, nvml: Any = None,
                 directory: Path = _DEFAULT_DIR) -> None:
        self.config = config or GpuConfig(enabled=True)
        self._meter = meter
        self._nvml = nvml
        self._dir = Path(directory)
        self._lock_file = None
        self._handles: list[tuple[Any, dict[str, str]]] = []
        self._readings: list[tuple[dict[str, str], dict[str, float]]] = []
        self._processes: list[tuple[dict[str, Any], float]] = []
        self._read_at = 0.0
        self._mutex = threading.Lock()
        self._warned: set[str] = set()
        self.active = False

    def start(self) -> bool:
        """True when gauges were registered; False (with one log line) otherwise. Never raises."""
        nvml = self._nvml or _load_nvml()
        if nvml is None:
            return False
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: zero GPUs
            _log.warning("otel-rl: gpu.enabled is set but GPU gauges are off: no NVIDIA GPU visible (NVML: %s)",
                         exc)
            return False
        if count == 0:
            _log.warning("otel-rl: gpu.enabled is set but GPU gauges are off: NVML reports 0 GPUs")
            return False
        if not self._take_node_lock():
            return False
        self._nvml = nvml
        host = socket.gethostname()
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:  # recommended, not required: left out when NVML cannot say
            driver = None
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            attrs = {"hw.id": _text(nvml.nvmlDeviceGetUUID(handle)), "hw.type": "gpu",
                     "hw.name": _text(nvml.nvmlDeviceGetName(handle)), "hw.vendor": "NVIDIA",
                     "hw.gpu.pci_bus_id": _text(nvml.nvmlDeviceGetPciInfo(handle).busId), "host.name": host}
            if driver:
                attrs["hw.driver_version"] = driver
            self._handles.append((handle, attrs))
        for name, (unit, description, key) in _GAUGES.items():
            self._meter.create_observable_gauge(name, callbacks=[self._callback(key)], unit=unit,
                                                description=description)
        for name, (unit, description, key) in _COUNTERS.items():
            self._meter.create_observable_counter(name, callbacks=[self._callback(key)], unit=unit,
                                                  description=description)
        if self.config.per_process:
            self._meter.create_observable_gauge("hw.gpu.process.memory.usage", callbacks=[self._per_process],
                                                unit="By", description="GPU memory used per process")
        self.active = True
        _log.info("GPU gauges on: %d GPU(s) on %s, NVML read at most every %.1fs", count, host,
                  self.config.interval_s)
        return True

    def _take_node_lock(self) -> bool:
        self._dir.mkdir(parents=True, exist_ok=True)
        lock = open(self._dir / f"sampler-{socket.gethostname()}.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            _log.info("GPU gauges: the node's sampler is another process (pid %s); this process only "
                      "registers its role", lock.read().strip() or "?")
            lock.close()
            return False
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock
        return True

    def _refresh(self) -> None:
        with self._mutex:
            now = time.monotonic()
            if self._readings and now - self._read_at < self.config.interval_s:
                return
            self._read_at = now
            self._readings = [(attrs, self._read(handle)) for handle, attrs in self._handles]
            if self.config.per_process:
                self._processes = self._read_processes()

    def _read(self, handle) -> dict[str, float]:
        nvml = self._nvml
        queries = {
            "util": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
            "mem": lambda: nvml.nvmlDeviceGetMemoryInfo(handle),
            "power": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "temp": lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            "clock_sm": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) * 1e6,
            "clock_mem": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM) * 1e6,
            "energy": lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0,
        }
        out: dict[str, float] = {}
        for key, query in queries.items():
            try:
                value = query()
            except Exception as exc:  # a field this GPU does not support: skip just that field
                self._warn(key, "GPU gauge %s unavailable: %s", key, exc)
                continue
            if key == "mem":
                out["mem_used"], out["mem_total"] = float(value.used), float(value.total)
                out["mem_frac"] = value.used / value.total if value.total else 0.0
            else:
                out[key] = float(value)
        return out

    def _read_processes(self) -> list[tuple[dict[str, Any], float]]:
        roles = self._roles()
        out = []
        for handle, attrs in self._handles:
            try:
                procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception as exc:
                self._warn("procs", "per-process GPU memory unavailable: %s", exc)
                return []
            for proc in procs:
                used = getattr(proc, "usedGpuMemory", None)
                if used is None:
                    continue
                out.append(({"hw.id": attrs["hw.id"], "hw.type": "gpu", "host.name": attrs["host.name"],
                             "process.pid": int(proc.pid), "otel_rl.role": roles.get(int(proc.pid), "unknown")},
                            float(used)))
        return out

    def _roles(self) -> dict[int, str]:
        roles = {}
        directory = self._dir / "roles"
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.name.isdigit():
                    try:
                        roles[int(entry.name)] = entry.read_text().strip() or "unknown"
                    except OSError:
                        continue
        return roles

    def _callback(self, key: str):
        def observe(options: CallbackOptions):
            if not self.active:
                return []
            self._refresh()
            return [Observation(values[key], attrs) for attrs, values in self._readings if key in values]
        return observe

    def _per_process(self, options: CallbackOptions):
        if not self.active:
            return []
        self._refresh()
        return [Observation(used, attrs) for attrs, used in self._processes]

    def _warn(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.warning(message, *args)

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        if self.active:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                _log.debug("nvmlShutdown: %s", exc)
            self.active = False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
