"""Four trainer processes as four ranks send OTLP to the collector; TensorBoard and a real
MLflow server show the per-step values reduced across ranks; Prometheus scrapes the result."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from backends import PrometheusServer, free_port, read_mlflow
from conftest import read_tensorboard

from otel_rl.model.records import HistogramValue, Point
from otel_rl_collector import create
from otel_rl_collector.reduce import Reducer

RANK_SCRIPT = """
import sys, time, otel_rl
endpoint, steps = sys.argv[1], int(sys.argv[2])
otel_rl.init({"run_name": "job-4", "export_interval_s": 0.3, "tensorboard": {"enabled": False},
              "otlp": {"enabled": True, "protocol": "grpc", "endpoint": endpoint}})
from opentelemetry import metrics
rank = int(__import__("os").environ["RANK"])
meter = metrics.get_meter("rank")
loss, tokens = meter.create_gauge("loss"), meter.create_counter("tokens")
for step in range(steps):
    otel_rl.set_step(step)
    loss.set(step + rank)
    tokens.add(10 * (rank + 1))
    with otel_rl.span("rollout"):
        time.sleep(0.001 * (rank + 1))
    time.sleep(0.005)
otel_rl.shutdown()
"""


def test_four_ranks_reduce_per_step_into_tensorboard_mlflow_and_prometheus(tmp_path, mlflow_server):
    prom_port = free_port()
    collector = create({
        "receivers": {"http": {"port": 0}, "grpc": {"port": 0}},
        "reduce": {"timeout_s": 30},
        "tensorboard": {"log_dir": str(tmp_path / "tb")},
        "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": "ranks"},
        "prometheus": {"enabled": True, "port": prom_port},
    }).start()
    steps = 40
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, f"http://127.0.0.1:{collector.grpc_port}",
                               str(steps)], env={**os.environ, "RANK": str(r), "WORLD_SIZE": "4"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    prometheus = PrometheusServer(tmp_path, [f"127.0.0.1:{prom_port}"]).start()
    try:
        result = prometheus.wait_for('loss{run="job-4"}', lambda r: len(r) == 1)
        assert float(result[0]["value"][1]) == steps - 1 + 1.5  # the last step, mean over ranks
        assert "step" not in result[0]["metric"] and "rank" not in result[0]["metric"]
        tokens = prometheus.wait_for("tokens_total", lambda r: len(r) == 1)
        assert float(tokens[0]["value"][1]) == steps * (10 + 20 + 30 + 40)
    finally:
        prometheus.stop()
        collector.shutdown()

    scalars = read_tensorboard(tmp_path / "tb" / "job-4")["scalars"]
    assert scalars["loss"] == {s: s + 1.5 for s in range(steps)}  # mean of step + rank
    assert scalars["tokens"] == {s: 100.0 * (s + 1) for s in range(steps)}  # counters: summed
    rollout = scalars["timing/rollout"]
    assert sorted(rollout) == list(range(steps)) and min(rollout.values()) >= 0.004  # max: rank 3 sleeps 4 ms
    mlflow = read_mlflow(mlflow_server.url, "ranks", "job-4")["scalars"]
    assert mlflow["loss"] == {s: s + 1.5 for s in range(steps)}
    metrics = collector.self_metrics()
    assert metrics["partial_groups"] == 0 and metrics["late_points"] == 0
    assert metrics["sinks"]["mlflow"]["dropped_points"] == 0


def _p(rank, value, step=0, name="loss", kind="gauge"):
    return Point("r", name, step, value, 1.0, kind, (), rank)


def test_reducer_waits_for_all_ranks_then_emits_once():
    r = Reducer(timeout_s=60)
    assert r.add([_p(0, 1.0), _p(1, 3.0)], {"r": 3}, now=0.0) == []
    (out,) = r.add([_p(2, 5.0)], {"r": 3}, now=0.0)
    assert out.value == 3.0 and out.rank == -1


@pytest.mark.parametrize("op, expected", [("mean", 2.0), ("max", 3.0), ("min", 1.0), ("sum", 6.0)])
def test_reduce_ops_from_rules(op, expected):
    r = Reducer(rules=[("loss", op)], timeout_s=60)
    (out,) = r.add([_p(0, 1.0), _p(1, 2.0), _p(2, 3.0)], {"r": 3}, now=0.0)
    assert out.value == expected


def test_none_keeps_ranks_as_series_and_timing_defaults_to_max():
    r = Reducer(rules=[("loss", "none")], timeout_s=60)
    out = r.add([_p(0, 1.0), _p(1, 2.0)], {"r": 2}, now=0.0)
    assert sorted(p.attributes for p in out) == [(("rank", "0"),), (("rank", "1"),)]
    (t,) = r.add([_p(0, 0.5, name="timing/gen"), _p(1, 0.9, name="timing/gen")], {"r": 2}, now=0.0)
    assert t.value == 0.9


def test_timeout_emits_partial_and_late_points_correct_the_step():
    r = Reducer(timeout_s=1.0)
    r.add([_p(0, 2.0), _p(1, 4.0)], {"r": 3}, now=0.0)
    assert r.expire(now=0.5) == []  # not yet timed out
    (partial,) = r.expire(now=2.0)
    assert partial.value == 3.0 and r.partial_groups == 1  # emitted with the ranks present
    (late,) = r.add([_p(2, 9.0)], {"r": 3}, now=0.0)
    assert late.value == 5.0 and r.late_points == 1  # corrected mean over all three ranks


def test_every_value_a_rank_logged_at_a_step_counts():
    # CleanRL logs a return per finished episode: rank 0 logged two values at step 0
    # (a retried request never reaches the reducer: the collector dedupes batch ids)
    r = Reducer(timeout_s=60)
    r.add([_p(0, 1.0), _p(0, 2.0)], {"r": 2}, now=0.0)
    (out,) = r.add([_p(1, 6.0)], {"r": 2}, now=0.0)
    assert out.value == 3.0


def test_histograms_merge_across_ranks():
    h = lambda c, lo, hi: HistogramValue(c, c * 1.0, lo, hi, ((0.0, 1.0, c),))  # noqa: E731
    r = Reducer(timeout_s=60)
    (out,) = r.add([_p(0, h(2, 0.1, 0.9), kind="histogram"), _p(1, h(3, 0.2, 0.8), kind="histogram")], {"r": 2}, now=0.0)
    assert (out.value.count, out.value.min, out.value.max, out.value.buckets) == (5, 0.1, 0.9, ((0.0, 1.0, 5),))


def _c(rank, inc, step, name="episodes"):
    """A counter increment from one rank (what the OTLP hop carries)."""
    return Point("r", name, step, float(inc), 1.0, "counter", (), rank, "delta")


def test_counter_increments_at_different_steps_add_up_across_ranks():
    """Minimal case from the issue: rank 0 adds 10 at step 1, rank 1 adds 10 at step 2. The
    run's total is 10 at step 1 and 20 at step 2 (the old reducer said 10 at step 2)."""
    from otel_rl.route.admit import Stream

    r, stream, world = Reducer(timeout_s=60), Stream(), {"r": 2}
    out = []
    out += stream.totals(r.add([_c(0, 10, 1), _p(0, 0.0, step=3)], world, now=0.0))  # rank 0 moves on
    out += stream.totals(r.add([_c(1, 10, 2), _p(1, 0.0, step=3)], world, now=0.0))
    out += stream.totals(r.expire(now=0.0, everything=True))
    totals = {p.step: p.value for p in out if p.name == "episodes"}
    assert totals == {1: 10.0, 2: 20.0}


def test_counter_step_waits_until_every_rank_moved_past_it_then_late_increments_still_count():
    r, world = Reducer(timeout_s=60), {"r": 2}
    assert r.add([_c(0, 1, 5)], world, now=0.0) == []  # rank 1 may still add at step 5
    assert [p for p in r.add([_p(1, 0.0, step=5)], world, now=0.0) if p.kind == "counter"] == []
    (done,) = [p for p in r.add([_p(0, 0.0, step=6), _p(1, 0.0, step=6)], world, now=0.0) if p.kind == "counter"]
    assert (done.step, done.value) == (5, 1.0)
    (late,) = r.add([_c(1, 4, 5)], world, now=0.0)  # a late increment of an emitted step
    assert (late.step, late.value, r.late_points) == (5, 4.0, 1)
    (both,) = r.add([_c(0, 1, 7), _c(1, 2, 7)], world, now=0.0)  # every rank sent one: no wait
    assert (both.step, both.value) == (7, 3.0)


def test_counter_group_of_a_silent_rank_is_emitted_after_the_timeout():
    r, world = Reducer(timeout_s=1.0), {"r": 2}
    r.add([_c(0, 7, 2)], world, now=10.0)
    assert r.expire(now=10.5) == []
    (out,) = r.expire(now=11.5)
    assert (out.step, out.value, r.partial_groups) == (2, 7.0, 1)


def test_a_clock_set_back_does_not_hold_a_step_for_the_size_of_the_jump():
    """The wall clock set back an hour while a step waits for its last rank: it used to wait an
    hour; it is emitted once the jump exceeds the timeout, with the ranks present."""
    r = Reducer(timeout_s=5)
    t = 1_800_000_000.0
    assert r.add([_p(0, 1.0), _p(1, 3.0)], {"r": 3}, now=t) == []
    assert not r.due(t + 1) and r.expire(now=t + 1) == []
    assert r.due(t - 3600)
    (out,) = r.expire(now=t - 3600)
    assert out.value == 2.0 and r.partial_groups == 1
    counters = Reducer(timeout_s=5)
    assert counters.add([_p(0, 1.0, kind="counter")], {"r": 2}, now=t) == []
    assert counters.due(t - 3600) and [p.value for p in counters.expire(now=t - 3600)] == [1.0]


def test_a_million_late_points_for_one_step_cost_what_a_few_do():
    """Found through the collector: late points were kept to re-reduce their step, about 250 MB
    per 1.6M. A group now holds a folded value and a count; the correction stays exact."""
    import tracemalloc

    r = Reducer(timeout_s=1.0)
    r.add([_p(0, 2.0)], {"r": 2}, now=0.0)
    r.expire(now=5.0)  # emitted with rank 0 only: what follows is late
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(20):
        out = r.add([_p(1, 1.0)] * 10_000, {"r": 2}, now=5.0)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 200_000, f"reducer grew {grown} bytes for 200,000 late points"
    assert r.late_points == 200_000 and [p.value for p in out] == [(2.0 + 200_000) / 200_001]


def test_waiting_groups_are_bounded_and_the_flooding_run_is_the_one_emitted_early():
    """A client inventing steps no other rank will send: past ``max_pending`` its oldest groups
    are emitted as a timeout would emit them; another run's waiting step is not touched."""
    r = Reducer(timeout_s=3600, max_pending=1_000)
    world = {"r": 2, "other": 2}
    r.add([Point("other", "loss", 0, 1.0, 1.0, rank=0)], world, now=0.0)
    out = []
    for step in range(5_000):
        out += r.add([_p(0, float(step), step=step)], world, now=0.0)
    assert r.pending <= 1_000 and r.partial_groups == len(out) >= 4_000
    assert {p.run for p in out} == {"r"} and sorted(p.step for p in out) == list(range(len(out)))
    (done,) = r.add([Point("other", "loss", 0, 3.0, 1.0, rank=1)], world, now=0.0)
    assert done.value == 2.0  # both ranks of the quiet run, reduced as usual
    (late,) = r.add([_p(1, 10.0, step=0)], world, now=0.0)  # the flooding run's rank 1 comes late
    assert late.value == 5.0  # corrected, as after a timeout


def test_an_idle_run_is_forgotten_and_state_survives_a_snapshot():
    import pickle

    from otel_rl.model.codec import load_state

    r, world = Reducer(timeout_s=1.0, idle_s=60), {"r": 2}
    r.add([_c(0, 3, 1), _p(0, 1.0, step=1)], world, now=0.0)
    again = Reducer(timeout_s=1.0, idle_s=60)
    again.restore(load_state(pickle.dumps(r.state())))  # what the collector's checkpoint does
    assert again.pending == 2
    assert sorted(p.value for p in again.add([_c(1, 4, 1), _p(1, 3.0, step=1)], world, now=0.5)) == [2.0, 7.0]
    assert "r" in again._progress
    again.expire(now=30.0)
    assert "r" in again._progress  # not idle long enough
    again.expire(now=61.0)
    assert "r" not in again._progress and again.pending == 0


def _ranked_request(rank: int, world: int, step: int, values: dict[str, float]) -> bytes:
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    request = mpb.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    for key, value in (("otel_rl.run.id", "edge"), ("otel_rl.rank", rank), ("otel_rl.world_size", world)):
        slot = rm.resource.attributes.add(key=key).value
        if isinstance(value, int):
            slot.int_value = value
        else:
            slot.string_value = value
    scope = rm.scope_metrics.add()
    for name, value in values.items():
        dp = scope.metrics.add(name=name).gauge.data_points.add(as_double=value, time_unix_nano=1_700_000_000 * 10**9)
        dp.attributes.add(key="step").value.int_value = step
    return request.SerializeToString()


def test_infinities_and_sums_past_float_range_across_ranks_are_reduced_not_a_crash(tmp_path):
    """+inf from one rank and -inf from another (a diverged loss), or two values whose sum passes
    float's range, made the reducer raise (math.fsum) inside the collector."""
    from test_receive import _post

    collector = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                        "reduce": {"timeout_s": 30}, "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    try:
        url = f"http://127.0.0.1:{collector.http_port}/v1/metrics"
        for step, pair in enumerate([(math.inf, -math.inf), (1.0, 3.0)]):
            for rank, value in enumerate(pair):
                status, body, _ = _post(url, _ranked_request(rank, 2, step, {"loss": value}))
                assert status == 200, body
    finally:
        collector.shutdown()
    loss = read_tensorboard(tmp_path / "tb" / "edge")["scalars"]["loss"]
    assert math.isnan(loss[0]) and loss[1] == 2.0

    reducer = Reducer(gauge_op="mean")
    huge = 8.98846567431158e+307
    out = reducer.add([_p(0, huge, 0), _p(1, huge, 0)], {"r": 2}, now=0.0)
    assert [p.value for p in out] == [huge]  # the mean is finite though the sum is not
    assert Reducer(gauge_op="sum").add([_p(0, huge), _p(1, huge)], {"r": 2}, now=0.0)[0].value == math.inf
