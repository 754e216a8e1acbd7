"""The tape record: what the API side appends per call, and the one reader that turns records
into points.

Every call of the user's side (an instrument, ``Logger.log_metrics``, ``SummaryWriter.add_*``,
``log_samples``, a Logs-API record) appends one plain tuple to its run's tape, in this field
order (:class:`Record`)::

    (kind, name, value, step, time_ns, attributes[, bounds])

Producers append plain tuples (the hot path: no object to build); :class:`Kind` names the
first field, and :func:`translate_records` reads them with one handler per kind
(:data:`_HANDLERS`).
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from otel_rl.model.records import HistogramValue, Point, RunParams, fsum
from otel_rl.model.semconv import STEP_ATTRIBUTE
from otel_rl.model.steps import NO_STEP, as_step
from otel_rl.model.tables import table_from_rows
from otel_rl.model.translate import Translation, attribute_step, finish


class Kind(str, enum.Enum):
    """The first field of a tape record. A ``str`` enum: producers may append the plain
    string (``"g"``), which compares and hashes as the member."""

    GAUGE = "g"  # Gauge.set / ObservableGauge: (g, name, value, step, time_ns, attributes)
    COUNTER = "c"  # Counter.add: an increment
    UPDOWN = "u"  # UpDownCounter.add: an increment that may be negative
    HISTOGRAM = "h"  # Histogram.record: (h, ..., attributes[, advisory bounds])
    OBSERVED_SUM = "oc"  # ObservableCounter: a running total
    OBSERVED_UPDOWN = "ou"  # ObservableUpDownCounter: a running total
    METRICS = "m"  # Logger.log_metrics: (m, prefix, {name: value}, step, time_ns)
    PARAMS = "p"  # hyperparameters: (p, None, params, step, time_ns)
    ROWS = "r"  # log_samples: (r, name, Table, step, time_ns, None)
    LOG_ROW = "l"  # one Logs-API row: (l, event name, row dict, step, time_ns, attributes)
    TEXT = "t"  # SummaryWriter.add_text: (t, tag, text, step, time_ns, None)
    SAMPLES = "hs"  # a whole array of samples (add_histogram): (hs, tag, values, step, time_ns, None)
    INFO = "i"  # an instrument's unit, description, scope: (i, name, (unit, description, scope), None, time_ns)
    MEDIA = "md"  # an image, video or audio: (md, tag, media.snapshot(...), step, time_ns, None)


class Record(NamedTuple):
    """The fields of a tape record, by position (documentation and tests; the tape holds plain
    tuples of this shape)."""

    kind: str
    name: str | None
    value: Any
    step: int | None
    time_ns: int
    attributes: Mapping[str, Any] | None = None
    bounds: Sequence[float] | None = None


GAUGE, COUNTER, UPDOWN, HISTOGRAM = Kind.GAUGE.value, Kind.COUNTER.value, Kind.UPDOWN.value, Kind.HISTOGRAM.value
OBSERVED_SUM, OBSERVED_UPDOWN = Kind.OBSERVED_SUM.value, Kind.OBSERVED_UPDOWN.value
METRICS, PARAMS, ROWS, LOG_ROW = Kind.METRICS.value, Kind.PARAMS.value, Kind.ROWS.value, Kind.LOG_ROW.value
TEXT, SAMPLES, INFO, MEDIA = Kind.TEXT.value, Kind.SAMPLES.value, Kind.INFO.value, Kind.MEDIA.value

#: Bins of a distribution fitted to its samples (TensorBoard's own summaries use 30).
HISTOGRAM_BINS = 30
#: The name a value logged under an empty key gets (``Logger.log_metrics({"": 1.0})``).
EMPTY_NAME = "unnamed"
_COUNTERS = {COUNTER: ("counter", "delta"), UPDOWN: ("sum", "delta"),
             OBSERVED_SUM: ("counter", "cumulative"), OBSERVED_UPDOWN: ("sum", "cumulative")}


def fit_histogram(samples: list[float], bounds: Sequence[float] | None = None) -> HistogramValue:
    """A :class:`HistogramValue` of ``samples`` (finite floats): ``HISTOGRAM_BINS`` equal bins
    from min to max, or the instrument's advisory ``bounds``."""
    n = len(samples)
    lo, hi = min(samples), max(samples)
    total = fsum(samples)
    if bounds:
        edges = [-math.inf, *bounds, math.inf]
        counts = [0] * (len(edges) - 1)
        for v in samples:
            counts[bisect.bisect_left(bounds, v)] += 1
        buckets = tuple((edges[i], edges[i + 1], c) for i, c in enumerate(counts))
    elif lo == hi:
        buckets = ((lo, hi, n),)
    else:
        k = min(HISTOGRAM_BINS, n)
        width = (hi - lo) / k
        counts = [0] * k
        for v in samples:
            counts[min(int((v - lo) / width), k - 1)] += 1
        buckets = tuple((lo + i * width, hi if i == k - 1 else lo + (i + 1) * width, c)
                        for i, c in enumerate(counts))
    return HistogramValue(n, total, lo, hi, buckets)


def record_step(record: tuple) -> int:
    """The step a tape record belongs to: its ``step`` attribute, else the step current when it
    was recorded, else :data:`NO_STEP`."""
    attrs = record[5] if len(record) > 5 else None
    if attrs and STEP_ATTRIBUTE in attrs:
        step = as_step(attrs[STEP_ATTRIBUTE])
        if step is not None:
            return step
    return NO_STEP if record[3] is None else record[3]


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened with ``/``; ``prefix`` prepended as ``prefix/key``."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        full = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def as_number(value: Any) -> float | None:
    """bool/int/float, or a one-element numpy/torch value, as a float; None otherwise."""
    if isinstance(value, (int, float)):
        return float(value)
    item = getattr(value, "item", None)
    numel = getattr(value, "numel", None)  # torch; numpy has .size
    size = numel() if callable(numel) else getattr(value, "size", 1)
    if callable(item) and size == 1:
        try:
            return float(item())
        except (TypeError, ValueError):
            return None
    return None


def _param_value(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class _Reading:
    """One :func:`translate_records` call's state: the output, plus what adds up across records
    (counter increments, histogram samples, consecutive Logs-API rows of one table)."""

    __slots__ = ("out", "points", "run", "rank", "sums", "samples", "log_rows")

    def __init__(self, run: str, rank: int) -> None:
        self.out = Translation()
        self.points = self.out.batch.points
        self.run, self.rank = run, rank
        self.sums: dict[tuple, list] = {}
        self.samples: dict[tuple, list] = {}
        self.log_rows: list[list] = []

    def flush_rows(self) -> None:
        for (name, step), rows, t_ns in self.log_rows:
            self.points.append(Point(self.run, name, step, table_from_rows(rows), t_ns / 1e9, "table", (),
                                     self.rank))
        self.log_rows.clear()

    def finish(self) -> Translation:
        self.flush_rows()
        run, rank, points = self.run, self.rank, self.points
        for (name, rest, step, point_kind, mode), (t_ns, total) in self.sums.items():
            points.append(Point(run, name, step, total, t_ns / 1e9, point_kind, rest, rank, mode))
        for (name, rest, step), (t_ns, values, bounds) in self.samples.items():
            points.append(Point(run, name, step, fit_histogram(values, bounds), t_ns / 1e9, "histogram", rest,
                                rank))
        return finish(self.out)


def _metrics(r: _Reading, record: tuple) -> None:
    _, prefix, metrics, step, t_ns = record[:5]
    wall = t_ns / 1e9
    nested = None
    points, run, rank = r.points, r.run, r.rank
    for key, value in metrics.items():
        vtype = type(value)
        if (vtype is float or vtype is int) and type(key) is str:  # the common case, inline
            name = f"{prefix}/{key}" if prefix else key
            points.append(Point(run, name or EMPTY_NAME, step, float(value), wall, "gauge", (), rank))
        else:
            (nested := nested or {})[key] = value
    for key, value in flatten(nested or {}, prefix).items():
        number = as_number(value)
        if number is None:
            r.out.reject(1, f"value:{key}", f"metric {key!r}: value {value!r} is not a number")
            continue
        points.append(Point(run, key or EMPTY_NAME, step, number, wall, "gauge", (), rank))


def _params(r: _Reading, record: tuple) -> None:
    r.out.batch.params.append(RunParams(r.run, {k or EMPTY_NAME: _param_value(v)
                                                for k, v in flatten(record[2]).items()}, record[4] / 1e9))


def _rows(r: _Reading, record: tuple) -> None:
    _, name, table, step, t_ns = record[:5]
    r.points.append(Point(r.run, name or EMPTY_NAME, NO_STEP if step is None else step, table, t_ns / 1e9,
                          "table", (), r.rank))


def _log_row(r: _Reading, record: tuple) -> None:
    _, name, row, step, t_ns, attrs = record[:6]
    if attrs and STEP_ATTRIBUTE in attrs:
        step = attribute_step(r.out, name, attrs, step)
        if step is None:  # refused, with its reason
            return
    key = (name or EMPTY_NAME, NO_STEP if step is None else step)
    if r.log_rows and r.log_rows[-1][0] == key:
        r.log_rows[-1][1].append(row)
        r.log_rows[-1][2] = t_ns
    else:
        r.flush_rows()
        r.log_rows.append([key, [row], t_ns])


def _info(r: _Reading, record: tuple) -> None:
    r.out.batch.info[record[1]] = tuple(record[2])


def _text(r: _Reading, record: tuple) -> None:
    _, name, text, step, t_ns = record[:5]
    r.points.append(Point(r.run, name, NO_STEP if step is None else step, str(text), t_ns / 1e9, "text", (),
                          r.rank))


def _media(r: _Reading, record: tuple) -> None:
    """Encoded here, off the training thread (PNG, GIF, WAV); bad input is refused with why."""
    from otel_rl.model.media import encode

    _, name, item, step, t_ns = record[:5]
    try:
        value = encode(item)
    except (ValueError, TypeError, ImportError) as exc:
        r.out.reject(1, f"media:{name}", f"{item[0]} {name!r}: {exc}")
        return
    r.points.append(Point(r.run, name, NO_STEP if step is None else step, value, t_ns / 1e9, "media", (), r.rank))


def _sample_array(r: _Reading, record: tuple) -> None:
    _, name, values, step, t_ns = record[:5]
    finite = [float(v) for v in values if math.isfinite(v)]
    if len(finite) != len(values):
        r.out.reject(len(values) - len(finite), f"value:{name}",
                     f"histogram {name!r}: {len(values) - len(finite)} samples are not finite")
    if finite:
        r.points.append(Point(r.run, name, NO_STEP if step is None else step, fit_histogram(finite), t_ns / 1e9,
                              "histogram", (), r.rank))


def _measurement(r: _Reading, record: tuple) -> None:
    """An instrument's measurement: a gauge value, a counter increment or total, a sample."""
    kind, name, value, step, t_ns, attrs = record[:6]
    rest: tuple = ()
    if attrs:
        if STEP_ATTRIBUTE in attrs:
            step = attribute_step(r.out, name, attrs, step)
            if step is None:  # refused, with its reason
                return
        rest = tuple(sorted((k, str(v)) for k, v in attrs.items() if k != STEP_ATTRIBUTE))
    if step is None:
        step = NO_STEP
    number = as_number(value)
    if number is None or (kind != GAUGE and not math.isfinite(number)):
        what = "not a number" if number is None else "not finite (only gauges keep NaN/inf)"
        r.out.reject(1, f"value:{name}", f"metric {name!r}: value {value!r} is {what}")
        return
    if kind == GAUGE:
        r.points.append(Point(r.run, name, step, number, t_ns / 1e9, "gauge", rest, r.rank))
    elif kind == HISTOGRAM:
        entry = r.samples.get((name, rest, step))
        if entry is None:
            r.samples[(name, rest, step)] = [t_ns, [number], record[6] if len(record) > 6 else None]
        else:
            entry[0] = t_ns
            entry[1].append(number)
    else:
        _increment(r, kind, name, rest, step, t_ns, number)


def _increment(r: _Reading, kind: str, name: str, rest: tuple, step: int, t_ns: int, number: float) -> None:
    point_kind, mode = _COUNTERS[kind]
    if kind == COUNTER and number < 0:
        r.out.reject(1, f"negative:{name}", f"counter {name!r}: negative increment {number!r} "
                     "(use an up-down counter)")
        return
    key = (name, rest, step, point_kind, mode)
    entry = r.sums.get(key)
    if entry is None or mode == "cumulative":
        r.sums[key] = [t_ns, number]
    else:
        entry[0] = t_ns
        entry[1] += number


#: One reader per record kind. Records that keep consecutive Logs-API rows together
#: (:data:`LOG_ROW`, and the kinds that do not end a table) are not in :data:`_ENDS_ROWS`.
_HANDLERS = {METRICS: _metrics, PARAMS: _params, ROWS: _rows, LOG_ROW: _log_row, TEXT: _text, INFO: _info,
             SAMPLES: _sample_array, MEDIA: _media, GAUGE: _measurement, COUNTER: _measurement, UPDOWN: _measurement,
             HISTOGRAM: _measurement, OBSERVED_SUM: _measurement, OBSERVED_UPDOWN: _measurement}
#: Kinds after which a following Logs-API row starts a new table.
_ENDS_ROWS = frozenset(_HANDLERS) - {METRICS, PARAMS, ROWS, LOG_ROW, INFO}


def translate_records(records: Iterable[tuple], run: str, rank: int = -1) -> Translation:
    """Tape records as points: every gauge value its own point at its recorded time; counter
    increments of one series and step added up; histogram samples of one series and step as one
    distribution fitted to them."""
    reading = _Reading(run, rank)
    handlers, ends_rows = _HANDLERS, _ENDS_ROWS
    for record in records:
        kind = record[0]
        if kind in ends_rows and reading.log_rows:
            reading.flush_rows()
        handlers[kind](reading, record)
    return reading.finish()
