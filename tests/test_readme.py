"""README.md as a newcomer uses it: each example of "Four ways in" runs as written, in a fresh
process and an empty folder, and its data is where "Where the data shows" says; the documented
commands work as written (the demo's are in tests/test_demo.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, read_tensorboard

README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def _blocks(title: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(title), re.S)


EXAMPLES = _blocks("Four ways in", "python")


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env={**os.environ, "OTEL_RL_SYSTEM_METRICS": "false"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_there_is_one_example_per_way_in():
    assert len(EXAMPLES) == 4
    assert "metrics.get_meter" in EXAMPLES[0] and "otel_rl.Logger" in EXAMPLES[1]
    assert "SummaryWriter" in EXAMPLES[2] and "otel_rl.hf" in EXAMPLES[3]
    assert all(len(code.strip().splitlines()) <= 12 for code in EXAMPLES)


def test_the_meter_api_example(tmp_path):
    _run(EXAMPLES[0], tmp_path)
    scalars = read_tensorboard(tmp_path / "runs" / "grpo-7b")["scalars"]
    assert sorted(scalars["loss"]) == list(range(100))
    assert scalars["tokens"][99] == 4096 * 100


def test_the_logger_example(tmp_path):
    _run(EXAMPLES[1], tmp_path)
    tb = read_tensorboard(tmp_path / "runs" / "ppo")
    assert sorted(tb["scalars"]["train/loss"]) == list(range(100))
    assert tb["scalars"]["train/reward/mean"][50] == pytest.approx(0.5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "runs" / "ppo"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "samples/text_summary" in acc.Tags()["tensors"]  # log_samples: a table in the Text tab
    assert "_hparams_/session_start_info" in acc.Tags()["tensors"]


def test_the_summary_writer_example(tmp_path):
    _run(EXAMPLES[2], tmp_path)
    scalars = read_tensorboard(tmp_path / "runs" / "cleanrl-ppo")["scalars"]
    assert scalars["charts/episodic_return"] == {s: 20.0 + s for s in range(100)}


def test_the_hugging_face_example(tmp_path):
    pytest.importorskip("transformers")
    code = EXAMPLES[3] + ("from transformers.integrations import get_reporting_integration_callbacks\n"
                          "(callback,) = get_reporting_integration_callbacks(['otel_rl'])\n"
                          "print(callback.__module__, callback.__name__)\n")
    assert _run(code, tmp_path).stdout.split() == ["otel_rl.integrations.hf", "OtelRLCallback"]


def test_the_configuration_example_checks_valid(tmp_path):
    (block,) = _blocks("Configuration", "yaml")
    config = tmp_path / "otel-rl.yaml"
    config.write_text(block)
    proc = subprocess.run([sys.executable, "-m", "otel_rl.cli", "check-config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("trainer config: valid"), proc.stderr
    assert "enabled: mlflow, prometheus, tensorboard, wandb" in proc.stdout


def test_the_collector_command_config_is_valid():
    (block,) = _blocks("Many processes and ranks: the collector", "bash")
    assert block.strip() == "otel-rl collector --config collector/collector.example.yaml"
    pytest.importorskip("otel_rl_collector")
    proc = subprocess.run([sys.executable, "-m", "otel_rl.cli", "check-config", "collector/collector.example.yaml"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("collector config: valid"), proc.stderr


def test_the_two_setup_commands_are_the_makefile_and_ci():
    (block, _more) = _blocks("Start: two commands", "bash")
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_readme_is_short_and_has_no_internal_issue_numbers():
    assert len(README.splitlines()) < 250
    first_example = README.count("\n", 0, README.index("## Four ways in"))
    assert first_example < 60  # the first working example within the first screen or so
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not re.search(r"(?<![\w/])#\d{1,3}\b", page.read_text()), page.name
