"""Run names MLflow's filter syntax cannot quote: "bob's run" split into two MLflow runs after
any restart (one RUNNING forever), and a name ending in a backslash never reached MLflow. Both
the way they were found: a trainer restarted on its spool, against a real MLflow server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize("name", ["bob's run", "ends\\", "quote'and\\back"])
def test_awkward_run_names_are_one_mlflow_run_across_a_restart(tmp_path, mlflow_server, name):
    from mlflow.tracking import MlflowClient

    experiment = f"names-{tmp_path.name}"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, otel_rl
        from opentelemetry import metrics
        otel_rl.init({{"run_name": {name!r}, "spool_dir": {str(tmp_path / "spool")!r},
                       "system_metrics": {{"enabled": False}}, "tensorboard": {{"enabled": False}},
                       "mlflow": {{"enabled": True, "tracking_uri": {mlflow_server.url!r}, "experiment": {experiment!r}}}}})
        g = metrics.get_meter("t").create_gauge("loss")
        first = int(sys.argv[1])
        for step in range(first, first + 3):
            otel_rl.set_step(step)
            g.set(float(step))
        assert otel_rl.shutdown(timeout_s=60)
    """))
    for first in (0, 3):  # the same process restarted on its spool
        proc = subprocess.run([sys.executable, str(script), str(first)], capture_output=True, text=True, timeout=180,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.data.tags["otel_rl.run_id"] for r in runs] == [name]
    (run,) = runs
    assert run.info.status == "FINISHED" and run.info.run_name == name
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(6))
