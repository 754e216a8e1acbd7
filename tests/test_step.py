"""The step and the recording meters: every measurement as written, at its step."""

from __future__ import annotations

import math

import pytest
from opentelemetry.metrics import Observation

from otel_rl.api import recording
from otel_rl.api.meter import MeterProvider
from otel_rl.model.steps import NO_STEP, check_step
from otel_rl.model.tape import HISTOGRAM_BINS, translate_records


@pytest.mark.parametrize("bad", [-1, 2.5, "1", None, True, 2**63])
def test_check_step_rejects(bad):
    with pytest.raises((TypeError, ValueError), match="step must (be|fit)"):
        check_step(bad)


def test_check_step_accepts_index_types():
    import numpy as np

    assert check_step(np.int64(5)) == 5 and check_step(0) == 0


def _recorded(recorder, observe=False):
    records = recorder.drain() + (recorder.observe() if observe else [])
    return translate_records(records, "r")


def test_instruments_record_at_the_current_step_unless_given():
    recorder = recording.Recorder()
    meter = MeterProvider(recorder).get_meter("t")
    g, c, h, u = (meter.create_gauge("g"), meter.create_counter("c"),
                  meter.create_histogram("h"), meter.create_up_down_counter("u"))
    meter.create_observable_gauge("o", callbacks=[lambda opts: [Observation(1, {"k": "v"})]])
    g.set(0.5)  # before any step: placed at the run's latest step after admission
    recorder.set_step(11)
    g.set(1.0)
    c.add(1, {"rank": 0})
    c.add(2, {"rank": 0})
    h.record(2.0)
    u.add(-1)
    g.set(5.0, {"step": 3})  # an explicit step wins
    out = _recorded(recorder, observe=True)
    got = sorted((p.name, p.step, p.attributes, p.kind) for p in out.batch.points)
    assert got == sorted([("g", NO_STEP, (), "gauge"), ("g", 11, (), "gauge"), ("g", 3, (), "gauge"),
                          ("c", 11, (("rank", "0"),), "counter"), ("h", 11, (), "histogram"),
                          ("u", 11, (), "sum"), ("o", 11, (("k", "v"),), "gauge")])
    counter = next(p for p in out.batch.points if p.name == "c")
    assert counter.value == 3.0 and counter.temporality == "delta"


def test_names_keep_their_case_and_differ_by_it():
    recorder = recording.Recorder()
    meter = MeterProvider(recorder).get_meter("t")
    recorder.set_step(1)
    meter.create_gauge("charts/SPS").set(100.0)
    meter.create_gauge("Loss").set(1.0)
    meter.create_gauge("loss").set(100.0)
    got = {p.name: p.value for p in _recorded(recorder).batch.points}
    assert got == {"charts/SPS": 100.0, "Loss": 1.0, "loss": 100.0}


def test_every_value_of_a_step_is_kept_with_its_own_time():
    recorder = recording.Recorder()
    gauge = MeterProvider(recorder).get_meter("t").create_gauge("ret")
    recorder.set_step(4)
    for v in (1.0, 2.0, 2.0, float("nan")):
        gauge.set(v)
    points = _recorded(recorder).batch.points
    assert [p.value for p in points][:3] == [1.0, 2.0, 2.0] and math.isnan(points[3].value)
    assert [p.step for p in points] == [4] * 4
    times = [p.time for p in points]
    assert times == sorted(times) and all(abs(t - times[0]) < 1.0 for t in times)


def test_histograms_take_negative_values_with_bins_fitted_to_the_data():
    recorder = recording.Recorder()
    hist = MeterProvider(recorder).get_meter("t").create_histogram("adv")
    recorder.set_step(2)
    samples = [-3.0 + 0.01 * i for i in range(600)]  # -3 .. 2.99
    for v in samples:
        hist.record(v)
    out = _recorded(recorder)
    (point,) = out.batch.points
    value = point.value
    assert out.rejected == 0 and value.count == 600 and value.min == -3.0
    assert math.isclose(value.sum, math.fsum(samples))
    assert len(value.buckets) == HISTOGRAM_BINS
    assert sum(c for _, _, c in value.buckets) == 600
    assert value.buckets[0][0] == -3.0 and math.isclose(value.buckets[-1][1], 2.99)
    assert max(c for _, _, c in value.buckets) <= 21  # spread over the bins, not one bucket


def test_bad_values_are_reported_and_the_rest_kept():
    recorder = recording.Recorder()
    meter = MeterProvider(recorder).get_meter("t")
    recorder.set_step(1)
    meter.create_gauge("g").set("high")
    meter.create_counter("c").add(-1)
    meter.create_histogram("h").record(float("inf"))
    meter.create_gauge("ok").set(1.0)
    out = _recorded(recorder)
    assert [p.name for p in out.batch.points] == ["ok"]
    assert out.rejected == 3 and "not a number" in out.reason and "negative" in out.reason


def test_bad_instrument_names_are_refused_at_creation():
    meter = MeterProvider(recording.Recorder()).get_meter("t")
    with pytest.raises(ValueError, match="non-empty string"):
        meter.create_gauge("")


def test_a_full_tape_drops_and_counts_instead_of_growing():
    woken = []
    recorder = recording.Recorder(wake=lambda: woken.append(1), wake_at=10, max_records=20)
    gauge = MeterProvider(recorder).get_meter("t").create_gauge("g")
    for i in range(50):
        gauge.set(i)
    assert len(recorder.tape) == 20 and recorder.dropped == 30 and woken
