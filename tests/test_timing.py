"""Timing spans: real OTel spans (read back over OTLP and from a real MLflow server) plus
`timing/<phase>` at the step, read back from TensorBoard."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from conftest import read_tensorboard

import otel_rl
from otel_rl.api import propagation


def _pipeline(tmp_path, receiver=None, **extra):
    cfg = {"run_name": "t", "tensorboard": {"log_dir": str(tmp_path)}, **extra}
    if receiver is not None:
        cfg["otlp"] = {"enabled": True, "endpoint": receiver.url}
    return otel_rl.init(cfg)


def test_phases_become_timing_gauges_reduced_per_step(tmp_path):
    _pipeline(tmp_path)

    @otel_rl.span("update")
    def update():
        time.sleep(0.002)

    for step in range(5):
        otel_rl.set_step(step)
        with otel_rl.span("step", reduce="max"):
            for _ in range(3):  # repeated phase within a step: summed
                with otel_rl.span("rollout"):
                    time.sleep(0.01)
            with otel_rl.span("gen", reduce="count"):
                pass
            with otel_rl.span("gen", reduce="count"):
                pass
            update()
    otel_rl.shutdown()
    scalars = read_tensorboard(tmp_path / "t")["scalars"]
    assert sorted(scalars["timing/rollout"]) == list(range(5))
    assert all(0.03 <= v < 0.3 for v in scalars["timing/rollout"].values())
    assert scalars["timing/gen"] == {s: 2.0 for s in range(5)}
    assert all(v >= 0.002 for v in scalars["timing/update"].values())
    for s in range(5):  # the enclosing phase lasts at least as long as its parts
        assert scalars["timing/step"][s] >= scalars["timing/rollout"][s] + scalars["timing/update"][s]


def test_spans_nest_and_go_out_over_otlp(tmp_path, otlp_receiver):
    _pipeline(tmp_path, otlp_receiver)
    otel_rl.set_step(7)
    with otel_rl.span("step"):
        with otel_rl.span("rollout", attributes={"env": "cartpole"}):
            with otel_rl.span("generation"):
                pass
    otel_rl.shutdown()
    spans = {s.name: s for s in otlp_receiver.spans()}
    assert set(spans) == {"step", "rollout", "generation"}
    assert spans["rollout"].parent_span_id == spans["step"].span_id
    assert spans["generation"].parent_span_id == spans["rollout"].span_id
    assert len({s.trace_id for s in spans.values()}) == 1
    attrs = {a.key: a.value for a in spans["rollout"].attributes}
    assert attrs["step"].int_value == 7 and attrs["env"].string_value == "cartpole"


def test_context_follows_threads_and_child_processes(tmp_path, otlp_receiver):
    _pipeline(tmp_path, otlp_receiver)
    otel_rl.set_step(3)
    child = (
        "import otel_rl\n"
        "from otel_rl import propagation\n"
        f"otel_rl.init({{'run_name': 'child', 'tensorboard': {{'enabled': False}},"
        f" 'otlp': {{'enabled': True, 'endpoint': '{otlp_receiver.url}'}}}})\n"
        "with propagation.attached(propagation.from_env()):\n"
        "    assert otel_rl.get_step() == 3\n"
        "    with otel_rl.span('worker'):\n"
        "        pass\n"
        "otel_rl.shutdown()\n")
    with otel_rl.span("step"):
        with otel_rl.span("dispatch"):
            results = []

            def work():
                with otel_rl.span("thread_work"):
                    results.append(1)

            thread = threading.Thread(target=propagation.bind(work))
            thread.start()
            thread.join()
            proc = subprocess.run([sys.executable, "-c", child], env=propagation.child_env(),
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
    otel_rl.shutdown()
    spans = {s.name: s for s in otlp_receiver.spans()}
    assert spans["thread_work"].parent_span_id == spans["dispatch"].span_id
    assert spans["worker"].parent_span_id == spans["dispatch"].span_id
    assert spans["worker"].trace_id == spans["step"].trace_id


def test_spans_reach_mlflow_traces(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    _pipeline(tmp_path, mlflow_traces={"enabled": True, "tracking_uri": mlflow_server.url,
                                       "experiment": "traces"})
    otel_rl.set_step(1)
    with otel_rl.span("step"):
        with otel_rl.span("weight_sync"):
            time.sleep(0.001)
    otel_rl.shutdown()
    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("traces")
    deadline = time.monotonic() + 30
    while True:
        traces = client.search_traces(locations=[exp.experiment_id])
        if traces or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(traces) == 1
    names = {s.name: s for s in traces[0].data.spans}
    assert set(names) == {"step", "weight_sync"}
    assert names["weight_sync"].parent_id == names["step"].span_id


def test_bad_span_arguments():
    with pytest.raises(ValueError, match="reduce='median' is not allowed; allowed: sum, mean, max, min, count"):
        otel_rl.span("x", reduce="median")
    with pytest.raises(ValueError, match="non-empty string"):
        otel_rl.span("")


def test_mlflow_traces_needs_a_server_uri():
    with pytest.raises(otel_rl.ConfigError, match="mlflow_traces.tracking_uri: 'sqlite:///x.db' is not allowed"):
        otel_rl.load_config({"mlflow_traces": {"tracking_uri": "sqlite:///x.db"}})
