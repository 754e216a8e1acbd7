"""The step: validation, and step-stamping meters over a real SDK."""

from __future__ import annotations

import pytest
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import otel_rl
from otel_rl._step import StepMeterProvider, check_step


@pytest.mark.parametrize("bad", [-1, 2.5, "1", None, True])
def test_check_step_rejects(bad):
    with pytest.raises((TypeError, ValueError), match="step must be a non-negative int"):
        check_step(bad)


def test_check_step_accepts_index_types():
    import numpy as np

    assert check_step(np.int64(5)) == 5 and check_step(0) == 0


def _points(reader):
    out = []
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out += [(m.name, dict(dp.attributes)) for dp in m.data.data_points]
    return sorted(out, key=str)


def test_instruments_stamp_the_current_step_unless_given():
    reader = InMemoryMetricReader()
    meter = StepMeterProvider(MeterProvider(metric_readers=[reader])).get_meter("t")
    g, c, h, u = (meter.create_gauge("g"), meter.create_counter("c"),
                  meter.create_histogram("h"), meter.create_up_down_counter("u"))
    meter.create_observable_gauge("o", callbacks=[lambda opts: [Observation(1, {"k": "v"})]])
    otel_rl.set_step(11)
    g.set(1.0)
    c.add(1, {"rank": 0})
    h.record(2.0)
    u.add(-1)
    g.set(5.0, {"step": 3})  # an explicit step wins
    assert otel_rl.get_step() == 11
    points = _points(reader)
    assert ("g", {"step": 3}) in points and ("g", {"step": 11}) in points
    assert ("c", {"rank": 0, "step": 11}) in points
    assert ("h", {"step": 11}) in points and ("u", {"step": 11}) in points
    assert ("o", {"k": "v", "step": 11}) in points


def test_nonfinite_gauge_values_survive_the_sdk():
    reader = InMemoryMetricReader()
    meter = StepMeterProvider(MeterProvider(metric_readers=[reader])).get_meter("t")
    otel_rl.set_step(1)
    meter.create_gauge("loss").set(float("nan"))
    assert _points(reader) == [("loss", {"otel_rl.nonfinite": "nan", "step": 1})]
