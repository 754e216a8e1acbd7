"""How long ``otel_rl.Logger(...)`` takes to return, with TensorBoard alone and with all four
backends (W&B and SwanLab offline, MLflow on sqlite), each in a fresh process, and whether every
value logged right after it arrived:

    python bench/startup.py --runs 5

The helper process says it is ready first and imports the backend SDKs after (MLflow's import
alone takes about 2 s), one after the other, while the sinks' threads wait; ``Logger()`` returns
at once and what is logged meanwhile waits, unacknowledged, in the training process and the pipe.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
os.environ.update(WANDB_SILENT="true", OTEL_RL_SYSTEM_METRICS="false")
t0 = time.perf_counter()
import otel_rl
tmp, which = sys.argv[1], sys.argv[2]
cfg = {"run_name": "start", "tensorboard": {"log_dir": f"{tmp}/tb"}}
if which == "all":
    cfg.update({"wandb": {"enabled": True, "mode": "offline", "dir": f"{tmp}/wb", "project": "start"},
                "swanlab": {"enabled": True, "mode": "offline", "logdir": f"{tmp}/sl", "project": "start"},
                "mlflow": {"enabled": True, "tracking_uri": f"sqlite:///{tmp}/mlflow.db", "experiment": "start"}})
t1 = time.perf_counter()
logger = otel_rl.Logger(cfg)
t2 = time.perf_counter()
for step in range(20):
    logger.log_metrics({"x": float(step)}, step)
logger.finish()
t3 = time.perf_counter()
stats = logger.pipeline.stats()
print(json.dumps({"import_s": t1 - t0, "logger_s": t2 - t1, "finish_s": t3 - t2,
                  "dropped": sum(s.get("dropped_points", 0) for s in stats.values() if isinstance(s, dict))}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Fresh processes per setting (default: 5).")
    args = parser.parse_args()
    print("| backends | `import otel_rl`, s | `Logger()` returns, s (median, max) | `finish()`, s | values dropped |")
    print("|---|---|---|---|---|")
    for which in ("tensorboard", "all"):
        rows = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run([sys.executable, "-c", CHILD, tmp, which], capture_output=True, text=True,
                                     timeout=300, cwd=ROOT)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {k: statistics.median(r[k] for r in rows) for k in ("import_s", "logger_s", "finish_s")}
        label = "TensorBoard" if which == "tensorboard" else "all four"
        print(f"| {label} | {med['import_s']:.2f} | {med['logger_s']:.2f}, {max(r['logger_s'] for r in rows):.2f} | "
              f"{med['finish_s']:.2f} | {sum(r['dropped'] for r in rows)} |", flush=True)


if __name__ == "__main__":
    main()
