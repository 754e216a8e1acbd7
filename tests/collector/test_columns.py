"""Gauges carried as columns (otel_rl.model.columns) give what their points give, in every stage
that reads columns: TensorBoard's records byte for byte, Prometheus's exposition, the router's
pass-through. Blocks are generated in the common shape (where the column paths are taken, and
this is checked) and in others (where they must fall back to the point loops)."""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otel_rl.sinks.tensorboard as tensorboard_sink
from otel_rl.model.columns import GaugeColumns
from otel_rl.model.naming import NameMapper
from otel_rl.model.records import Batch, Point
from otel_rl.sinks.prometheus import PrometheusConfig, PrometheusExporter
from otel_rl.sinks.tensorboard import TensorBoardConfig, TensorBoardExporter

BUDGET = settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow])
NAMES = ["loss", "reward/mean", "kl", "loss x", "loss_x", "timing/rollout"]  # "loss x" and "loss_x": one tag
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e39, 1e39),
                   st.sampled_from([3.4028235e38, 3.4028236e38, -3.5e38, 1e-46, -0.0]))


def _columns(run: str, rank: int, per_metric: list[tuple[str, list[tuple[int, float, float]]]]) -> GaugeColumns:
    """The columns the decoder makes of these metrics' points (a stable sort by step)."""
    names = [name for name, _ in per_metric]
    index = np.repeat(np.arange(len(names)), [len(points) for _, points in per_metric]).astype(np.intp)
    rows = [point for _, points in per_metric for point in points]
    steps = np.array([s for s, _, _ in rows], np.int64)
    order = np.argsort(steps, kind="stable")
    return GaugeColumns(run, rank, names, index[order], steps[order],
                        np.array([v for _, v, _ in rows], np.float64)[order],
                        np.array([t for _, _, t in rows], np.float64)[order])


@st.composite
def grids(draw):
    """The common shape: every step, the same metrics, times within 5 ms of each other."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    steps = sorted(draw(st.sets(st.integers(0, 2**40), min_size=1, max_size=12)))
    times = {s: 1.7e9 + s * 0.01 for s in steps}
    jitter = st.floats(0, 0.004)
    return [(name, [(s, draw(values), times[s] + draw(jitter)) for s in steps]) for name in names]


@st.composite
def free_blocks(draw):
    """Anything: repeated steps and names, steps going back, times far apart."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4))
    steps = st.integers(0, draw(st.sampled_from([5, 300])))
    return [(name, draw(st.lists(st.tuples(steps, values, st.floats(1.7e9, 1.7e9 + 0.02)),
                                 min_size=1, max_size=10))) for name in names]


def _records(directory: Path) -> list[bytes]:
    """Every record of every event file under ``directory`` but the files' version headers, by
    sub-run."""
    out = []
    for path in sorted(directory.rglob("events.out.tfevents.*")):
        data, pos, records = path.read_bytes(), 0, []
        while pos < len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            records.append(data[pos + 12:pos + 12 + length])
            pos += 16 + length
        out.append((str(path.parent.relative_to(directory)), records[1:]))
    return out


def _write_both(before: list[Point], block: GaugeColumns) -> tuple[list, list, bool]:
    taken = []
    real = tensorboard_sink.write_columns

    def spy(exporter, columns):
        taken.append(real(exporter, columns))
        return taken[-1]

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("columns", "points"):
            exporter = TensorBoardExporter(TensorBoardConfig(log_dir=f"{tmp}/{mode}"))
            if before:
                exporter.write(Batch(list(before)))
            tensorboard_sink.write_columns = spy
            try:
                batch = Batch(columns=block) if mode == "columns" else Batch(block.points())
                exporter.write(batch)
                exporter.write(Batch([Point(block.run, "after", 10**13, 1.0, 1.8e9)]))
            finally:
                tensorboard_sink.write_columns = real
            results.append((_records(Path(tmp, mode)), exporter.late_points, dict(exporter._last)))
            exporter.close()
    return results[0], results[1], bool(taken and taken[0])


earlier = st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 2**41)), max_size=3)


@BUDGET
@given(grids() | free_blocks(), earlier)
def test_tensorboard_writes_columns_as_it_writes_their_points(per_metric, before):
    block = _columns("run", 0, per_metric)
    prior = [Point("run", name, step, 0.5, 1.6e9) for name, step in sorted(before, key=lambda x: x[1])]
    columns, points, taken = _write_both(prior, block)
    assert columns == points
    grid = block.grid()
    tags = {NameMapper("tensorboard").key(name, ()) for name, _ in per_metric}
    if grid is not None and not prior and len(tags) == len(per_metric):
        assert taken, "the column path was not taken for a block of the common shape"


def test_a_block_of_the_common_shape_is_one_record_per_step(tmp_path):
    block = _columns("r", 1, [(f"m{i}", [(s, s + i / 10, 1.7e9 + s) for s in range(50)]) for i in range(10)])
    exporter = TensorBoardExporter(TensorBoardConfig(log_dir=str(tmp_path)))
    exporter.write(Batch(columns=block))
    exporter.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "r"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == sorted(f"m{i}" for i in range(10))
    for i in range(10):
        events = acc.Scalars(f"m{i}")
        assert [e.step for e in events] == list(range(50))
        assert all(math.isclose(e.value, e.step + i / 10, rel_tol=1e-6) for e in events)
        assert [e.wall_time for e in events] == [1.7e9 + s for s in range(50)]


def _exposition(points_or_columns, before: list[Point]) -> str:
    exporter = PrometheusExporter(PrometheusConfig(enabled=True), serve=False)
    if before:
        exporter.write(Batch(list(before)))
    exporter.write(points_or_columns)
    return exporter.render()


@BUDGET
@given(grids() | free_blocks(), earlier)
def test_prometheus_takes_columns_as_it_takes_their_points(per_metric, before):
    block = _columns("run", 2, per_metric)
    prior = [Point("run", name, step, 0.5, 1.7e9 + 0.01, rank=2) for name, step in before]
    assert _exposition(Batch(columns=block), prior) == _exposition(Batch(block.points()), prior)


def test_a_batch_of_columns_is_its_points():
    block = _columns("r", 0, [("a", [(2, 1.0, 5.0), (1, 2.0, 4.0)]), ("b", [(1, 3.0, 4.0)])])
    batch = Batch(columns=block, meta={"emission": 1})
    assert len(batch) == batch.point_count() == 3 and batch.runs() == ["r"]
    assert batch == Batch([Point("r", "a", 1, 2.0, 4.0, rank=0), Point("r", "b", 1, 3.0, 4.0, rank=0),
                           Point("r", "a", 2, 1.0, 5.0, rank=0)], meta={"emission": 1})
    assert batch.gauge_columns() is None  # made into points by the comparison: they are its content now
    batch.points.append(Point("r", "c", 3, 0.0, 6.0))
    assert batch.point_count() == 4


def _norm(points: list[Point]) -> list[tuple]:
    return [(p.run, p.name, p.step, "nan" if isinstance(p.value, float) and math.isnan(p.value) else p.value,
             p.time, p.kind, p.attributes, p.rank, p.temporality, p.increment) for p in points]


def _reducer_state(reducer) -> str:
    def group(g):
        return None if g is None else (g.first, sorted(g.ranks), repr(g.values), g.count, g.time,
                                       g.temporality, g.emitted_at)
    state = reducer.state()
    return repr(({run: {k: group(g) for k, g in groups.items()} for run, groups in state["pending"].items()},
                 [(k, group(g)) for k, g in state["emitted"]], state["progress"], state["active"],
                 state["late_points"], state["partial_groups"], reducer.pending))


sends = st.lists(st.tuples(st.integers(0, 3),  # rank (3: outside a world of 3, passed on as the reducer does)
                           st.lists(st.tuples(st.sampled_from(["loss", "kl", "timing/x", "acc"]),
                                              st.lists(st.tuples(st.integers(0, 6), values,
                                                                 st.floats(1.7e9, 1.7e9 + 1)), min_size=1, max_size=6)),
                                    min_size=1, max_size=3),
                           st.booleans()),  # expire after it
                 min_size=1, max_size=8)


@BUDGET
@given(sends, st.sampled_from([2, 3]), st.booleans())
def test_the_reducer_takes_columns_as_it_takes_their_points(sent, world, kl_per_rank):
    from otel_rl_collector.reduce import Reducer

    rules = [("kl", "none")] if kl_per_rank else [("acc", "max")]
    by_columns, by_points = (Reducer(rules, timeout_s=0.5, window=8) for _ in range(2))
    sizes = {"run": world}
    for k, (rank, per_metric, expire) in enumerate(sent):
        block = _columns("run", rank, per_metric)
        now = 1.7e9 + k * 0.2
        out = by_columns.add_columns(block, sizes, now)
        assert _norm(out) == _norm(by_points.add(block.points(), sizes, now))
        if expire:
            assert _norm(by_columns.expire(now + 0.3)) == _norm(by_points.expire(now + 0.3))
        assert _reducer_state(by_columns) == _reducer_state(by_points)


def test_a_spool_record_of_columns_reads_back_as_the_same_columns():
    import pickle

    import pytest

    from otel_rl.model.codec import decode_batch, encode_batch
    from otel_rl.model.records import RunParams

    block = _columns("r", 3, [("a", [(2, 1.5, 5.0), (1, -math.inf, 4.0)]), ("b", [(1, math.nan, 4.0)])])
    batch = Batch(params=[RunParams("r", {"lr": 0.1}, 1.0)], meta={"emission": 7}, info={"a": ("s", "d", "x")},
                  columns=block)
    back = decode_batch(encode_batch(batch))
    assert back.gauge_columns() is not None and back.meta == {"emission": 7} and back.params == batch.params
    assert _norm(back.points) == _norm(block.points()) and back.info == batch.info
    doc = pickle.loads(encode_batch(Batch(columns=block)))
    for bad in ([*doc["c"][:5], doc["c"][5][:-8], doc["c"][6]],  # a value short
                [*doc["c"][:3], np.array([0, 5, 1], "<i8").tobytes(), *doc["c"][4:]],  # no name 5
                doc["c"][:4], None):
        with pytest.raises(ValueError, match="undecodable spool record"):
            decode_batch(pickle.dumps({**doc, "c": bad}))
