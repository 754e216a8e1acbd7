"""OTel metric data -> per-step :class:`~otel_rl.model.records.Point` records, without state.

The one translation path (DESIGN.md). :func:`translate_sdk` (the SDK's ``MetricsData``) and
:func:`translate_proto` (an OTLP ``ExportMetricsServiceRequest``) apply the same rules and keep
nothing between calls; what they could not translate comes back in the :class:`Translation`:

- **step**: the ``step`` point attribute; a point without one gets :data:`NO_STEP`, and
  :class:`~otel_rl.route.admit.Stream` places it at its run's latest step once the
  data is admitted (step-less gauges such as GPU ones land at the current step).
- **gauges**: the value as-is; an ``otel_rl.nonfinite`` attribute restores NaN/inf.
- **sums** (counters, up-down counters): the value as sent, with its temporality on the
  point; running totals are computed after admission (``accumulate``), never here, so a
  refused or retried request is never counted.
- **histograms / exponential histograms**: a :class:`HistogramValue` per step.
- the ``otel_rl.hparams`` gauge becomes :class:`RunParams`.
- points in the SDK's cardinality-overflow series cannot be placed at a step: they are
  returned as rejected (reason included), never silently merged.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_rl.model.records import Batch, HistogramValue, Point, RunParams
from otel_rl.model.semconv import HPARAMS_METRIC, NONFINITE_ATTRIBUTE, OVERFLOW_ATTRIBUTE, RANK, RUN_ID, STEP_ATTRIBUTE
from otel_rl.model.steps import NO_STEP, as_step

_log = logging.getLogger(__name__)

DELTA, CUMULATIVE = "delta", "cumulative"
_DEFAULT_RUN = "default"
_RESERVED = frozenset({STEP_ATTRIBUTE, NONFINITE_ATTRIBUTE})
_NONFINITE = frozenset({"nan", "inf", "-inf"})

def run_of(resource_attributes: Mapping[str, Any]) -> str:
    """The run a resource belongs to: ``otel_rl.run.id``, else ``service.name``."""
    run = resource_attributes.get(RUN_ID) or resource_attributes.get("service.name")
    return str(run) if run else _DEFAULT_RUN


def rank_of(resource_attributes: Mapping[str, Any]) -> int:
    """``otel_rl.rank`` as an int, -1 when absent or not an integer."""
    raw = resource_attributes.get(RANK)
    step = as_step(raw)
    return step if step is not None else -1


def exponential_buckets(scale: int, zero_count: int, zero_threshold: float,
                        pos_offset: int, pos_counts: Iterable[int],
                        neg_offset: int, neg_counts: Iterable[int]) -> tuple:
    """OTel base-2 exponential buckets as increasing ``(left, right, count)``.

    Bucket ``i`` covers ``(base**i, base**(i+1)]`` with ``base = 2**(2**-scale)``
    (mirrored for negative values; the zero bucket is ``[-t, t]``).
    """
    base = 2.0 ** (2.0 ** -scale)
    out = []
    for k, count in reversed(list(enumerate(neg_counts))):
        i = neg_offset + k
        out.append((-(base ** (i + 1)), -(base ** i), int(count)))
    if zero_count:
        out.append((-zero_threshold, zero_threshold, int(zero_count)))
    for k, count in enumerate(pos_counts):
        i = pos_offset + k
        out.append((base ** i, base ** (i + 1), int(count)))
    return tuple(out)


def explicit_buckets(bounds: Iterable[float], counts: Iterable[int]) -> tuple:
    bounds = list(bounds)
    edges = [-math.inf, *bounds, math.inf]
    return tuple((edges[i], edges[i + 1], int(c)) for i, c in enumerate(counts))


@dataclass
class Translation:
    """What one translation produced: the records, and the points it could not place."""

    batch: Batch = field(default_factory=Batch)
    rejected: int = 0
    #: The first reason per kind of rejection, e.g. ``{"overflow": "metric 'x' exceeded ..."}``.
    reasons: dict[str, str] = field(default_factory=dict)
    #: Of ``rejected``: points in the SDK's cardinality-overflow series.
    overflow: int = 0
    #: Histogram buckets taken so far (bounded per request: :data:`MAX_REQUEST_BUCKETS`).
    buckets: int = 0

    def reject(self, count: int, kind: str, reason: str) -> None:
        self.rejected += count
        self.reasons.setdefault(kind, reason)
        if kind == "overflow":
            self.overflow += count

    @property
    def reason(self) -> str:
        """All rejection reasons in one line (OTLP ``partial_success.error_message``)."""
        return "; ".join(self.reasons.values())


def empty_run(out: Translation, resource: Mapping[str, Any], count: int) -> bool:
    """An ``otel_rl.run.id`` that is set but empty: refused (merging it into another run, or
    into ``default``, would mix clients' data)."""
    raw = resource.get(RUN_ID)
    if raw is None or str(raw).strip():
        return False
    out.reject(count, "empty_run", "empty otel_rl.run.id: set it to the run's name (or leave it out to "
               "use service.name)")
    return True


_RUN_STEP = operator.attrgetter("run", "step")


def finish(out: Translation) -> Translation:
    out.batch.points.sort(key=_RUN_STEP)
    return out


def _split(out: Translation, name: str, attributes: Mapping[str, Any] | None):
    """(step or NO_STEP, other attributes), or None for a refused point (overflow, bad step)."""
    attributes = attributes or {}
    if attributes.get(OVERFLOW_ATTRIBUTE):
        out.reject(1, "overflow",
                   f"metric {name!r} exceeded the cardinality limit in one export interval; points past "
                   "the limit cannot be placed at a step (raise the SDK's cardinality limit or export more often)")
        return None
    step = attribute_step(out, name, attributes, NO_STEP)
    if step is None:
        return None
    rest = tuple(sorted((k, str(v)) for k, v in attributes.items() if k not in _RESERVED))
    return step, rest


def attribute_step(out: Translation, name: str, attributes: Mapping[str, Any], default: Any) -> Any:
    """The ``step`` attribute as an int64 step; ``default`` when absent; None when present but
    not a step ("oops", "²", "１２", -1, 2**63), which refuses the point (counted, with the
    reason): placed at some other step it would put a value where no one logged it."""
    if STEP_ATTRIBUTE not in attributes:
        return default
    parsed = as_step(attributes[STEP_ATTRIBUTE])
    if parsed is None:
        out.reject(1, "bad_step", f"metric {name!r}: bad {STEP_ATTRIBUTE!r} attribute "
                   f"{attributes[STEP_ATTRIBUTE]!r} (a step is an integer from 0 to 2**63-1, or its ASCII "
                   "digits); point refused")
    return parsed


def number(out: Translation, run: str, rank: int, name: str, kind: str, temporality: str | None,
           attributes: Mapping[str, Any] | None, time_ns: int, value: float) -> None:
    split = _split(out, name, attributes)
    if split is None:
        return
    step, rest = split
    wall = time_ns / 1e9
    if name == HPARAMS_METRIC:
        out.batch.params.append(RunParams(run, {k: v for k, v in (attributes or {}).items()
                                                if k not in _RESERVED}, wall))
        return
    marker = (attributes or {}).get(NONFINITE_ATTRIBUTE)
    value = float(marker) if marker in _NONFINITE else float(value)
    mode = ""
    if kind != "gauge":
        mode = _sum_mode(temporality, attributes)
    out.batch.points.append(Point(run, name, step, value, wall, kind, rest, rank, mode))


def _sum_mode(temporality: str | None, attributes: Mapping[str, Any] | None) -> str:
    if temporality != CUMULATIVE:
        return "delta"
    return "cumulative_step" if STEP_ATTRIBUTE in (attributes or {}) else "cumulative"


def histogram(out: Translation, run: str, rank: int, name: str, temporality: str | None,
              attributes: Mapping[str, Any] | None, time_ns: int, count: int, total: float,
              minimum: float | None, maximum: float | None, buckets: tuple) -> None:
    split = _split(out, name, attributes)
    if split is None:
        return
    step, rest = split
    mode = "cumulative_step" if temporality == CUMULATIVE and STEP_ATTRIBUTE in (attributes or {}) else ""
    value = HistogramValue(
        int(count), float(total or 0.0),
        math.nan if minimum is None else float(minimum),
        math.nan if maximum is None else float(maximum), buckets)
    out.batch.points.append(Point(run, name, step, value, time_ns / 1e9, "histogram", rest, rank, mode))














