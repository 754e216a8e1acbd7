"""Columnar decoding of the collector's common case: an OTLP gauge whose data points each carry
one int ``step`` attribute, a time and a value, and nothing else.

Reading such a point through the protobuf runtime's Python objects costs about 5 µs (a wrapper
object per field access); this module reads all points of a metric at once with numpy over the
metric's serialized bytes, about 0.1 µs per point. It is an optimisation only: it returns None
for anything that is not exactly that shape (flags, exemplars, a start time of another layout,
unknown fields, a missing time or value, a negative step, another attribute), and the caller
takes the general path, which gives the same result.

Why reading serialized bytes is sound here: the bytes come from ``SerializeToString`` of a
message the runtime already parsed, so they are canonical (fields in ascending number, every
length prefix exact, unknown fields after the known ones). Each data point is then one of a few
fixed byte layouts, told apart by its length and its first field; every constant byte of the
layout (field tags, length prefixes, the key ``step``) is checked for every point, so a point
of any other shape (an unknown field changes its length prefix) sends the whole resource to the
general path.
"""

from __future__ import annotations

from typing import Any

np: Any = None  # numpy, imported on first use: a training process never needs it here
_LAYOUTS: dict = {}

#: NumberDataPoint, canonical encoding, for a varint step of k bytes (1..9):
#:   [0x11 start_time(8)] 0x19 time(8) (0x21 as_double | 0x31 as_int)(8)
#:   0x3a (9+k) [0x0a 0x04 "step" 0x12 (1+k) [0x18 varint(k)]]
_ATTR = b"\x0a\x04step\x12"


def _layouts() -> dict[tuple[int, int], tuple[Any, list[int], int, int, int, int]]:
    """(entry length, first field tag) -> (template, constant positions, time offset, value
    offset, step offset, k)."""
    out = {}
    for start in (False, True):
        for k in range(1, 10):
            body = (b"\x11" + b"\0" * 8 if start else b"") + b"\x19" + b"\0" * 8 + b"\x21" + b"\0" * 8
            body += b"\x3a" + bytes([9 + k]) + _ATTR + bytes([1 + k]) + b"\x18" + b"\0" * k
            entry = b"\x0a" + bytes([len(body)]) + body
            t = entry.index(b"\x19") + 1
            v = t + 9
            s = len(entry) - k
            variable = set(range(t, t + 8)) | set(range(v - 1, v + 8)) | set(range(s, s + k))
            if start:
                variable |= set(range(3, 11))
            const = [i for i in range(len(entry)) if i not in variable]
            out[(len(entry), entry[2])] = (np.frombuffer(entry, np.uint8), const, t, v, s, k)
    return out


def _numpy() -> bool:
    """Import numpy and build the layouts once; False without numpy (no fast path; it comes
    with tensorboard, so a collector has it)."""
    global np, _LAYOUTS
    if np is None:
        try:
            import numpy
        except ImportError:  # pragma: no cover
            return False
        np = numpy
        _LAYOUTS = _layouts()
    return True


def gauge_columns(data: bytes):
    """(steps, values, times in seconds) as numpy arrays, for every data point in ``data`` (a
    serialized ``Gauge``), in order; None when a point is not of the simple shape."""
    if not _numpy():
        return None
    buf = np.frombuffer(data, np.uint8)
    size = len(data)
    steps, values, times = [], [], []
    pos = 0
    while pos < size:
        if pos + 3 > size or data[pos] != 0x0A or data[pos + 1] >= 0x80:
            return None
        length = data[pos + 1] + 2
        layout = _LAYOUTS.get((length, data[pos + 2]))
        if layout is None:
            return None
        template, const, t, v, s, k = layout
        # a run of entries of this length: up to the first position that does not start one
        count = (size - pos) // length
        block = buf[pos:pos + count * length].reshape(count, length)
        starts = (block[:, 0] == 0x0A) & (block[:, 1] == length - 2) & (block[:, 2] == data[pos + 2])
        if not starts.all():
            count = int(starts.argmin())
            block = block[:count]
        if not (block[:, const] == template[const]).all():
            return None
        kind = block[:, v - 1]
        raw = np.ascontiguousarray(block[:, v:v + 8]).view("<u8").ravel()
        if (kind == 0x21).all():
            vals = raw.view("<f8")
        elif ((kind == 0x21) | (kind == 0x31)).all():
            vals = np.where(kind == 0x21, raw.view("<f8"), raw.view("<i8").astype(np.float64))
        else:
            return None
        varint = block[:, s:s + k].astype(np.uint64)
        # canonical varint: continuation bit on every byte but the last, no zero last byte
        if k > 1 and (not (varint[:, :-1] >= 0x80).all() or not (varint[:, -1] > 0).all()):
            return None
        if not (varint[:, -1] < 0x80).all():
            return None
        step = np.zeros(count, np.uint64)
        for i in range(k):
            step |= (varint[:, i] & np.uint64(0x7F)) << np.uint64(7 * i)
        ns = np.ascontiguousarray(block[:, t:t + 8]).view("<u8").ravel()
        steps.append(step.astype(np.int64))
        values.append(vals)
        times.append(ns.astype(np.float64) / 1e9)
        pos += count * length
    if not steps:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
    return np.concatenate(steps), np.concatenate(values), np.concatenate(times)


def gauge_block(run: str, rank: int, metrics: list[tuple[str, bytes]]):
    """Every data point of ``metrics`` (``(name, serialized Gauge)`` pairs of one resource) as
    :class:`~otel_rl.model.columns.GaugeColumns`, ordered by step, and in each step by metric,
    then as sent: the order a stable sort by step of the points metric by metric gives. None
    when any point is not of the simple shape (see :func:`gauge_columns`)."""
    from otel_rl.model.columns import GaugeColumns

    names, steps, values, times = [], [], [], []
    for name, data in metrics:
        columns = gauge_columns(data)
        if columns is None:
            return None
        names.append(name)
        steps.append(columns[0])
        values.append(columns[1])
        times.append(columns[2])
    if not names:
        return GaugeColumns(run, rank, [], np.zeros(0, np.intp), np.zeros(0, np.int64), np.zeros(0),
                            np.zeros(0))
    index = np.repeat(np.arange(len(names)), [len(s) for s in steps])
    step = np.concatenate(steps)
    order = np.argsort(step, kind="stable")
    return GaugeColumns(run, rank, names, index[order], step[order], np.concatenate(values)[order],
                        np.concatenate(times)[order])
