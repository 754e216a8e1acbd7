"""Shared test helpers: reading real backends back."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the helper's private spools (kept where a run did not deliver everything) go to a folder of the
# test session's, not to the home directory of whoever runs the tests
os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="otel-rl-tests-state-"))


def sigkill_at_random(argv: list[str], rng, first: int, window: tuple[float, float] = (0.0, 1.5),
                      after_first_ack: bool = False) -> set[int]:
    """Start a trainer (``argv``: it prints ``ready``, then each step up to which it saw every
    value delivered), SIGKILL it at a random point of ``window`` seconds, and return the steps
    from ``first`` it saw delivered. ``after_first_ack``: the window starts at the first
    delivery, not at ``ready`` (a backend whose SDK the helper imports first, for seconds, would
    otherwise be killed before it ever delivered)."""
    import signal
    import threading
    import time

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    lines: list[str] = []
    if after_first_ack:
        lines.append(proc.stdout.readline())
    kill_at = time.monotonic() + rng.uniform(*window)
    reader = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
    reader.start()
    while time.monotonic() < kill_at and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(5)
    acked = [int(line) for line in lines if line.strip().isdigit()]
    return set(range(first, max(acked) + 1)) if acked else set()


def wait_for_late_helper(stderr: str, timeout_s: float = 180.0) -> None:
    """When a run's exit said its helper goes on delivering on its own (a loaded machine: the
    shutdown deadline passed while a backend SDK was still starting), wait for that helper to end
    before reading the backends, as a user would wait for it."""
    import re

    import psutil

    for pid in re.findall(r"the helper \(pid (\d+)\) did not answer", stderr):
        try:
            psutil.Process(int(pid)).wait(timeout_s)
        except psutil.NoSuchProcess:
            pass


def doc_blocks(doc: Path, title: str, language: str) -> list[str]:
    """The ``language`` code blocks of the ``## title`` section of a Markdown file, as written."""
    import re

    text = Path(doc).read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", text[start:end if end > 0 else None], re.S)


def read_tensorboard(run_dir: Path) -> dict:
    """{"scalars": {tag: {step: value}}, "histograms": {tag: {step: ndarray[k,3]}}, "tensors": tags},
    read with TensorBoard's own EventAccumulator (no downsampling), the run's ``late-<n>``
    sub-runs (points whose tag had passed their step) included."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    scalars: dict = {}
    histograms: dict = {}
    tensors: list = []
    metadata: dict = {}
    for directory in [Path(run_dir), *sorted(Path(run_dir).glob("late-*"))]:
        acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags["scalars"]:
            series = scalars.setdefault(tag, {})
            for ev in acc.Scalars(tag):
                series[ev.step] = ev.value
        for tag in tags["tensors"]:
            if tag not in tensors:
                tensors.append(tag)
                metadata[tag] = acc.SummaryMetadata(tag)
            if tag.startswith("_hparams_"):
                continue
            histograms.setdefault(tag, {}).update(
                {ev.step: tensor_util.make_ndarray(ev.tensor_proto) for ev in acc.Tensors(tag)})
    return {"scalars": scalars, "histograms": histograms, "tensors": tensors, "summary_metadata": metadata}


def read_tensorboard_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event of every event file in ``run_dir`` and its ``late-<n>`` sub-runs,
    duplicates included:
    ``{tag: [(step, value), ...]}``, read with TensorBoard's own record loader."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader as EventFileLoader

    out: dict[str, list[tuple[int, float]]] = {}
    files = [*sorted(Path(run_dir).glob("events.out.tfevents.*")),
             *sorted(Path(run_dir).glob("late-*/events.out.tfevents.*"))]
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def exactly_once(events: list[tuple[int, float]]) -> dict[int, float]:
    """``{step: value}`` after checking that no step appears twice."""
    from collections import Counter

    dupes = sorted(step for step, n in Counter(s for s, _ in events).items() if n > 1)
    assert not dupes, f"steps written more than once: {dupes[:20]}"
    return dict(events)


def read_tensorboard_tables(run_dir: Path, tag: str) -> dict[int, list[str]]:
    """Every text-plugin value of ``tag`` (a samples table: markdown) per step, with its reader,
    the run's ``late-<n>`` sub-runs included (a rank's table arriving after another rank's later
    step is written there, so that TensorBoard's default loader shows it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[int, list[str]] = {}
    for directory in [Path(run_dir), *sorted(Path(run_dir).glob("late-*"))]:
        acc = EventAccumulator(str(directory), size_guidance={"tensors": 0})
        acc.Reload()
        if f"{tag}/text_summary" not in acc.Tags()["tensors"]:
            continue
        for event in acc.Tensors(f"{tag}/text_summary"):
            out.setdefault(event.step, []).append(event.tensor_proto.string_val[0].decode())
    return out


def read_hparams(run_dir: Path) -> dict:
    """The HParams plugin's session-start hparams, decoded with the plugin's own protos."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    meta = acc.SummaryMetadata("_hparams_/session_start_info")
    data = plugin_data_pb2.HParamsPluginData.FromString(meta.plugin_data.content)
    out = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind)
    return out


def f32_close(a: float, b: float) -> bool:
    """Equal within float32 precision (TensorBoard stores scalars as float32)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=2 ** -23, abs_tol=1e-30)


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (sqlite store) on a free 127.0.0.1 port, for the whole session."""
    from backends import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture
def otlp_receiver():
    from backends import OtlpHttpReceiver

    receiver = OtlpHttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(autouse=True)
def _quiet_backends(monkeypatch):
    # system metrics add series at unpredictable steps; the tests that check them turn them on
    monkeypatch.setenv("OTEL_RL_SYSTEM_METRICS", "false")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a disk that really fills up (ENOSPC)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode()[:200]}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
