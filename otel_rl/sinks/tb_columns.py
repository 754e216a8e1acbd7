"""TensorBoard records of a block of gauge columns (:mod:`otel_rl.model.columns`), without a
Python object per value: the collector's common case.

A block whose every step holds the same metrics (see ``GaugeColumns.grid``), none of whose
steps is behind what its tags already wrote, is one scalar record per step. The ``Summary`` of
every step has one layout: each value's prefix (its tag) is the same, only its 4 float bytes
differ. So the summaries of all steps are one numpy array (a row per step, the float32 values
scattered into their columns), and the records differ by their wall time and step only. The
bytes are the ones :meth:`TensorBoardExporter._write_points` writes for the same points;
``tests/collector/test_columns.py`` compares the two on generated blocks.
"""

from __future__ import annotations

from typing import Any

from otel_rl.sinks.tb_events import event_bytes


def write_columns(exporter: Any, columns: Any) -> bool:
    """Write ``columns`` to ``exporter``'s run as its point loop would; False, with nothing
    written, for a block of another shape or with a step behind its tag (the loop's late
    sub-runs), which the caller writes as points."""
    grid = columns.grid()
    if grid is None:
        return False
    steps, row, first_times = grid
    run = columns.run
    entries = [exporter._scalar_entry(columns.names[i], ()) for i in row]
    tags = [tag for tag, _ in entries]
    if len(set(tags)) != len(tags):  # two names of one tag: the loop starts a record at the second
        return False
    lasts = exporter._last
    first, top = int(steps[0]), int(steps[-1])
    known = [lasts.get((run, 0, tag)) for tag in tags]
    if any(last is not None and first < last for last in known):
        return False
    for tag, last in zip(tags, known):
        if last is None:
            exporter._metric_tag(run, tag)
        if last is None or top > last:
            lasts[(run, 0, tag)] = top
            lasts.move_to_end((run, 0, tag))
    summaries, width = _summaries(entries, columns.values.reshape(len(steps), len(row)))
    records = [event_bytes(t, step, summaries[k * width:(k + 1) * width])
               for k, (t, step) in enumerate(zip(first_times.tolist(), steps.tolist()))]
    exporter._file(run).write_records(records)
    return True


def _summaries(entries: list[tuple[str, bytes]], values: Any) -> tuple[bytes, int]:
    """The serialized ``Summary`` of each row of ``values`` (steps x metrics, in ``entries``'
    order), concatenated, and the length of one."""
    import numpy as np

    template = b"".join(prefix + b"\0\0\0\0" for _, prefix in entries)
    width = len(template)
    where, offset = [], 0
    for _, prefix in entries:
        offset += len(prefix)
        where.extend(range(offset, offset + 4))
        offset += 4
    rows = np.tile(np.frombuffer(template, np.uint8), (len(values), 1))
    with np.errstate(over="ignore"):  # past float32's range: +-inf, as protobuf stores it
        floats = values.astype("<f4")
    rows[:, where] = floats.view(np.uint8).reshape(len(values), -1)
    return rows.tobytes(), width
