"""The translation layer alone, fed real SDK MetricsData (InMemoryMetricReader)."""

from __future__ import annotations

import math

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from otel_rl.model.decode import translate_sdk
from otel_rl.model.records import HistogramValue
from otel_rl.model.translate import exponential_buckets
from otel_rl.route.admit import Stream
from otel_rl.route.sdk import DELTA_TEMPORALITY


def _sdk(temporality="delta", views=(), limit=None):
    prefs = DELTA_TEMPORALITY if temporality == "delta" else {
        cls: AggregationTemporality.CUMULATIVE for cls in DELTA_TEMPORALITY}
    kwargs = {"cardinality_limits": {cls: limit for cls in DELTA_TEMPORALITY}} if limit else {}
    reader = InMemoryMetricReader(preferred_temporality=prefs, **kwargs)
    provider = MeterProvider(resource=Resource.create({"otel_rl.run.id": "run-a"}),
                             metric_readers=[reader], views=list(views))
    return provider.get_meter("t"), reader


def _translate(metrics_data, stream=None):
    """Translate (stateless), then admit (steps, increments, running totals), as the pipeline does."""
    return (stream or Stream()).admit(translate_sdk(metrics_data).batch)


def _by(batch, name):
    return {p.step: p.value for p in batch.points if p.name == name}


def test_gauge_values_at_their_steps_and_run_from_resource():
    meter, reader = _sdk()
    g = meter.create_gauge("loss")
    for step in range(100):
        g.set(step / 3, {"step": step})
    batch = _translate(reader.get_metrics_data())
    assert _by(batch, "loss") == {s: s / 3 for s in range(100)}
    assert {p.run for p in batch.points} == {"run-a"}
    assert [p.step for p in batch.points] == sorted(p.step for p in batch.points)


@pytest.mark.parametrize("temporality", ["delta", "cumulative"])
def test_counter_becomes_running_total_under_both_temporalities(temporality):
    meter, reader = _sdk(temporality)
    c = meter.create_counter("tokens")
    t = Stream()
    seen = {}
    for step in range(6):
        c.add(10, {"step": step})
        c.add(1, {"step": step})
        seen.update(_by(_translate(reader.get_metrics_data(), t), "tokens"))
        # a second collect with nothing new adds nothing (cumulative re-exports are skipped)
        assert _by(_translate(reader.get_metrics_data(), t), "tokens") == {}
    assert seen == {s: 11.0 * (s + 1) for s in range(6)}


def test_up_down_counter_and_cumulative_without_step():
    meter, reader = _sdk("cumulative")
    q = meter.create_up_down_counter("queue")
    t = Stream()
    q.add(5, {"step": 1})
    q.add(-2, {"step": 2})
    assert _by(_translate(reader.get_metrics_data(), t), "queue") == {1: 5.0, 2: 3.0}
    meter2, reader2 = _sdk("cumulative")
    c = meter2.create_counter("bytes")
    t2 = Stream()
    c.add(7)
    assert _by(_translate(reader2.get_metrics_data(), t2), "bytes") == {0: 7.0}
    c.add(3)
    assert _by(_translate(reader2.get_metrics_data(), t2), "bytes") == {0: 10.0}


def test_histogram_buckets_count_sum_min_max():
    meter, reader = _sdk()
    h = meter.create_histogram("lat", explicit_bucket_boundaries_advisory=[1.0, 10.0])
    for v in (0.5, 2.0, 3.0, 50.0):
        h.record(v, {"step": 3})
    (point,) = _translate(reader.get_metrics_data()).points
    value = point.value
    assert isinstance(value, HistogramValue) and point.step == 3 and point.kind == "histogram"
    assert (value.count, value.sum, value.min, value.max) == (4, 55.5, 0.5, 50.0)
    assert value.buckets == ((-math.inf, 1.0, 1), (1.0, 10.0, 2), (10.0, math.inf, 1))
    assert value.finite_buckets() == [(0.5, 1.0, 1), (1.0, 10.0, 2), (10.0, 50.0, 1)]
    assert value.scalars()["mean"] == pytest.approx(55.5 / 4)


def test_exponential_histogram_bucket_edges_contain_the_values():
    view = View(instrument_name="exp", aggregation=ExponentialBucketHistogramAggregation(max_size=40))
    meter, reader = _sdk(views=[view])
    h = meter.create_histogram("exp")
    values = [0.3, 1.5, 1.6, 7.0, 100.0]  # the SDK refuses negative histogram values
    for v in values:
        h.record(v, {"step": 0})
    (point,) = _translate(reader.get_metrics_data()).points
    hist = point.value
    assert hist.count == 5 and sum(c for _, _, c in hist.buckets) == 5
    for v in values:  # every value falls in a bucket that counts it
        assert any(lo <= v <= hi and c for lo, hi, c in hist.buckets), v
    lefts = [lo for lo, _, _ in hist.buckets]
    assert lefts == sorted(lefts)


def test_exponential_bucket_math():
    # scale 0: base 2; bucket i covers (2**i, 2**(i+1)]
    assert exponential_buckets(0, 1, 0.0, 1, [3, 0], -1, [2]) == (
        (-1.0, -0.5, 2), (0.0, 0.0, 1), (2.0, 4.0, 3), (4.0, 8.0, 0))


def test_a_missing_step_uses_the_latest_step_of_the_run_and_a_bad_one_is_refused():
    meter, reader = _sdk()
    g = meter.create_gauge("gpu_util")
    loss = meter.create_gauge("loss")
    loss.set(1.0, {"step": 9})
    g.set(0.5)
    g.set(0.7, {"step": "oops"})
    translation = translate_sdk(reader.get_metrics_data())
    assert "bad 'step' attribute 'oops'" in translation.reasons["bad_step"] and translation.rejected == 1
    batch = Stream().admit(translation.batch)
    steps = sorted((p.name, p.step, p.attributes, p.value) for p in batch.points)
    assert steps == [("gpu_util", 9, (), 0.5), ("loss", 9, (), 1.0)]


def test_attributes_other_than_step_make_separate_series():
    meter, reader = _sdk()
    g = meter.create_gauge("reward")
    g.set(1.0, {"step": 0, "env": "a"})
    g.set(2.0, {"step": 0, "env": "b"})
    batch = _translate(reader.get_metrics_data())
    assert sorted((p.attributes, p.value) for p in batch.points) == [
        ((("env", "a"),), 1.0), ((("env", "b"),), 2.0)]


def test_overflow_points_are_counted_not_silently_merged():
    meter, reader = _sdk(limit=10)
    g = meter.create_gauge("loss")
    for step in range(25):
        g.set(step, {"step": step})
    translation = translate_sdk(reader.get_metrics_data())
    assert len(translation.batch.points) == 10  # the SDK keeps `limit` sets; the rest merge into one overflow point
    assert translation.overflow == 1 and translation.rejected == 1
    assert "cardinality limit" in translation.reasons["overflow"]


def test_translation_keeps_no_state():
    """The same input translates the same way twice; sums keep their increments (totals are
    computed after admission, so a refused or retried request leaves no trace)."""
    meter, reader = _sdk()
    c = meter.create_counter("tokens")
    c.add(5, {"step": 1})
    data = reader.get_metrics_data()
    first, second = translate_sdk(data).batch.points, translate_sdk(data).batch.points
    assert first == second and [(p.value, p.temporality) for p in first] == [(5.0, "delta")]


def test_nonfinite_marker_restores_nan_and_inf():
    meter, reader = _sdk()
    g = meter.create_gauge("loss")
    g.set(0.0, {"step": 1, "otel_rl.nonfinite": "nan"})
    g.set(0.0, {"step": 2, "otel_rl.nonfinite": "-inf"})
    batch = _translate(reader.get_metrics_data())
    values = _by(batch, "loss")
    assert math.isnan(values[1]) and values[2] == -math.inf
    assert all(p.attributes == () for p in batch.points)


def test_hparams_metric_becomes_run_params():
    meter, reader = _sdk()
    meter.create_gauge("otel_rl.hparams").set(1, {"lr": 0.1, "algo": "ppo"})
    batch = _translate(reader.get_metrics_data())
    assert batch.points == [] and len(batch.params) == 1
    assert batch.params[0].params == {"lr": 0.1, "algo": "ppo"} and batch.params[0].run == "run-a"
