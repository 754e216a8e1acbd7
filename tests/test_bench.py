"""CI runs the benchmarks' quick mode and checks only that it completes (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_bench_quick_mode_completes(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## Hot path" in text and "## Collector" in text and "## Trainer memory" in text
    stages = text.split("## Where the CPU goes, stage by stage")[1].split("##")[0]
    assert "| sink: tensorboard |" in stages and "| translate |" in stages, stages
    assert "p99" in text.split("## Collector")[1], text
    assert "error" not in text, text
