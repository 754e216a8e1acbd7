"""GPU gauges: a fake NVML (the only fake allowed: no GPU here) drives the full path to a
TensorBoard read-back; the real pynvml drives the no-GPU path."""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace

import pytest
from conftest import f32_close, read_tensorboard

import otel_rl
from otel_rl.sources.gpu import GpuConfig, GpuSampler, register_role


def _real_gpus() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount()
    except Exception:
        return 0


class NVMLError(Exception):
    pass


class FakeNvml:
    """Two GPUs with fixed readings; the API subset otel_rl.sources.gpu uses, same names as pynvml."""

    NVML_TEMPERATURE_GPU, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    def __init__(self, processes=(), fail_power=False):
        self.processes = processes
        self.fail_power = fail_power
        self.reads = 0
        self.shutdown_called = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdown_called = True

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-uuid-{h}"

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=f"00000000:0{h}:00.0")

    def nvmlDeviceGetUtilizationRates(self, h):
        self.reads += 1
        return SimpleNamespace(gpu=40 + h, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, h):
        if self.fail_power:
            raise NVMLError("Not Supported")
        return 350_000 + h

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 60 + h

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return 7_500_000 + h  # mJ since the driver loaded

    def nvmlSystemGetDriverVersion(self):
        return b"580.159.04"

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, gpu, mem in self.processes if gpu == h]


def test_fake_nvml_full_path_to_tensorboard(tmp_path):
    pipeline = otel_rl.init({"run_name": "g", "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    register_role("policy", pid=1111, directory=tmp_path / "gpu")
    register_role("generation", pid=2222, directory=tmp_path / "gpu")
    nvml = FakeNvml(processes=[(1111, 0, 5 * 2**30), (2222, 1, 7 * 2**30), (3333, 1, 2**20)])
    sampler = GpuSampler(pipeline.get_meter("gpu"), GpuConfig(interval_s=0.01), nvml=nvml,
                         directory=tmp_path / "gpu")
    assert sampler.start()
    for step in (0, 1, 2):
        otel_rl.set_step(step)
        pipeline.force_flush()
    otel_rl.shutdown()
    sampler.close()
    scalars = read_tensorboard(tmp_path / "tb" / "g")["scalars"]
    key0 = f"/host.name:{socket.gethostname()}/hw.id:GPU-uuid-0"  # type, model, vendor, driver, bus: not in the key
    util = scalars["hw.gpu.utilization" + key0]
    assert sorted(util) == [0, 1, 2] and all(f32_close(v, 0.4) for v in util.values())
    assert scalars["hw.gpu.memory.usage" + key0][2] == 2**30
    assert scalars["hw.gpu.memory.limit" + key0][2] == 80 * 2**30
    assert abs(scalars["hw.gpu.memory.utilization" + key0][2] - 1 / 80) < 1e-7
    assert scalars["hw.gpu.power" + key0][2] == 350.0
    assert scalars["hw.gpu.temperature" + key0][2] == 60.0
    assert scalars["hw.gpu.clock.sm" + key0][2] == 1.98e9
    assert scalars["hw.energy" + key0][2] == 7500.0  # J, cumulative
    per_process = {k: v for k, v in scalars.items() if k.startswith("hw.gpu.process.memory.usage")}
    roles = {k.split("otel_rl.role:")[1].split("/")[0]: v[2] for k, v in per_process.items()}
    assert roles == {"policy": 5 * 2**30, "generation": 7 * 2**30, "unknown": 2**20}
    assert nvml.shutdown_called


def test_nvml_is_read_at_most_once_per_interval(tmp_path):
    pipeline = otel_rl.init({"run_name": "i", "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    nvml = FakeNvml()
    sampler = GpuSampler(pipeline.get_meter("gpu"), GpuConfig(interval_s=3600), nvml=nvml,
                         directory=tmp_path / "gpu")
    assert sampler.start()
    for step in range(5):
        otel_rl.set_step(step)
        pipeline.force_flush()
    otel_rl.shutdown()
    sampler.close()
    assert nvml.reads == 2  # one read per GPU, reused for every collection within the hour


def test_unsupported_field_is_skipped_with_one_warning(tmp_path, caplog):
    pipeline = otel_rl.init({"run_name": "p", "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    sampler = GpuSampler(pipeline.get_meter("gpu"), GpuConfig(interval_s=0.01), nvml=FakeNvml(fail_power=True),
                         directory=tmp_path / "gpu")
    assert sampler.start()
    for step in range(3):
        otel_rl.set_step(step)
        pipeline.force_flush()
    otel_rl.shutdown()
    sampler.close()
    scalars = read_tensorboard(tmp_path / "tb" / "p")["scalars"]
    assert not any(k.startswith("hw.gpu.power") for k in scalars)
    assert any(k.startswith("hw.gpu.temperature") for k in scalars)
    assert sum("GPU gauge power unavailable" in r.getMessage() for r in caplog.records) == 1


def test_one_sampler_per_node(tmp_path):
    pipeline = otel_rl.init({"run_name": "n", "tensorboard": {"enabled": False}})
    first = GpuSampler(pipeline.get_meter("a"), nvml=FakeNvml(), directory=tmp_path / "gpu")
    second = GpuSampler(pipeline.get_meter("b"), nvml=FakeNvml(), directory=tmp_path / "gpu")
    assert first.start() is True
    assert second.start() is False  # the node lock is held: no double counting
    first.close()
    third = GpuSampler(pipeline.get_meter("c"), nvml=FakeNvml(), directory=tmp_path / "gpu")
    assert third.start() is True
    third.close()
    otel_rl.shutdown()


@pytest.mark.skipif(_real_gpus() > 0, reason="this machine has a GPU: the no-GPU path cannot be met here")
def test_no_gpu_is_a_warning_not_an_exception(tmp_path, caplog):
    """The real pynvml on a machine without NVIDIA driver: zero GPUs, no instruments, and a
    warning at the default log level (the user asked for GPU gauges)."""
    caplog.set_level(logging.WARNING)
    pipeline = otel_rl.init({"run_name": "nogpu", "tensorboard": {"log_dir": str(tmp_path)},
                             "gpu": {"enabled": True}})
    otel_rl.set_step(0)
    pipeline.force_flush()
    otel_rl.shutdown()
    assert pipeline.gpu is None
    assert any("gpu.enabled is set but GPU gauges are off" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert not (tmp_path / "nogpu").exists() or not any(
        k.startswith("hw.gpu") for k in read_tensorboard(tmp_path / "nogpu")["scalars"])


def test_gpu_series_carry_the_conventions_attributes(tmp_path):
    """hw.type=gpu (required by the conventions), the driver version and the energy counter reach
    a Prometheus scrape; the descriptive attributes stay out of TensorBoard's tags (above)."""
    import urllib.request

    pipeline = otel_rl.init({"run_name": "attrs", "tensorboard": {"enabled": False},
                             "prometheus": {"enabled": True, "host": "127.0.0.1", "port": 0}})
    sampler = GpuSampler(pipeline.get_meter("gpu"), GpuConfig(interval_s=0.01), nvml=FakeNvml(),
                         directory=tmp_path / "gpu")
    assert sampler.start()
    otel_rl.set_step(0)
    pipeline.force_flush()
    prometheus = next(s for s in pipeline.sinks if s.name == "prometheus")
    exposition = urllib.request.urlopen(f"http://127.0.0.1:{prometheus.port}/metrics", timeout=10).read().decode()
    otel_rl.shutdown()
    sampler.close()
    util = [line for line in exposition.splitlines() if line.startswith("hw_gpu_utilization") and "GPU-uuid-0" in line]
    assert len(util) == 1, exposition
    assert 'hw_type="gpu"' in util[0] and 'hw_driver_version="580.159.04"' in util[0], util
    energy = [line for line in exposition.splitlines() if line.startswith("hw_energy") and "GPU-uuid-1" in line]
    assert len(energy) == 1 and energy[0].endswith(" 7500.001"), energy


@pytest.mark.skipif(_real_gpus() == 0, reason="needs an NVIDIA GPU and its driver (run on a GPU machine)")
def test_real_gpu_gauges_reach_tensorboard(tmp_path):
    """The real NVML, no fake: every gauge of every GPU at each step in TensorBoard, with
    readings in their physical ranges."""
    import pynvml

    pynvml.nvmlInit()
    uuids = [pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(_real_gpus())]
    uuids = [u.decode() if isinstance(u, bytes) else u for u in uuids]
    pipeline = otel_rl.init({"run_name": "real", "tensorboard": {"log_dir": str(tmp_path / "tb")},
                             "gpu": {"enabled": True, "interval_s": 0.05}})
    assert pipeline.gpu is not None and pipeline.gpu.active
    for step in range(3):
        otel_rl.set_step(step)
        pipeline.force_flush()
    otel_rl.shutdown()
    scalars = read_tensorboard(tmp_path / "tb" / "real")["scalars"]
    for uuid in uuids:
        key = f"/host.name:{socket.gethostname()}/hw.id:{uuid}"
        for name in ("hw.gpu.utilization", "hw.gpu.memory.utilization"):
            assert sorted(scalars[name + key]) == [0, 1, 2] and all(0 <= v <= 1 for v in scalars[name + key].values())
        limit = scalars["hw.gpu.memory.limit" + key][2]
        assert 2**30 < limit < 2**40 and 0 <= scalars["hw.gpu.memory.usage" + key][2] <= limit
        assert 5 < scalars["hw.gpu.temperature" + key][2] < 110
        assert 1 < scalars["hw.gpu.power" + key][2] < 2000
        assert scalars["hw.gpu.clock.sm" + key][2] > 1e8
        energy = scalars["hw.energy" + key]
        assert energy[0] > 0 and energy[2] >= energy[0]
