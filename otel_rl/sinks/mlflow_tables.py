"""Samples as MLflow tables that cost what they add.

MLflow's own ``mlflow.log_table`` appends by downloading the table and uploading it whole, so
the bytes moved over a run grow with the square of its rows. Here a table is a series of parts,
each an MLflow table artifact (``mlflow.load_table`` and the UI's table view read each one):

    tables/<name>.json, tables/<name>.2.json, tables/<name>.3.json, ...

A part is kept in memory while its run writes to it, so nothing is downloaded per call, and a
new part begins once the current one holds ``part_bytes``: each call uploads at most one part.
A call's rows are skipped when the table already holds every one of them at that step and time
(a batch replayed after a crash, its upload done and its acknowledgement lost); two different
calls at the same step and time are both kept.
"""

from __future__ import annotations

import datetime
import json
import posixpath
import re
import tempfile
from typing import Any

from otel_rl.model.lru import LRU
from otel_rl.model.records import Point

#: A part's size, in bytes of JSON, before the next part begins.
PART_BYTES = 1 << 20
_OURS = ("step", "logged_at")


class _Part:
    __slots__ = ("path", "number", "columns", "data", "held", "before", "size")

    def __init__(self, path: str, number: int, columns: list, data: list, before: frozenset = frozenset()) -> None:
        self.path, self.number, self.columns, self.data = path, number, columns, data
        self.held = {_digest(columns, row) for row in data}  # the rows of this part, and
        self.before = before  # of the part before it (a replay may span the two)
        self.size = len(json.dumps({"columns": columns, "data": data}, default=str)) if data else 0


def part_path(base: str, number: int) -> str:
    """``tables/x.json`` for the first part, ``tables/x.<n>.json`` after it."""
    return base if number == 1 else f"{base[:-len('.json')]}.{number}.json"


def _digest(columns: list, row: list) -> str:
    """A row by content, as the server stores it (JSON), whatever the width of the table then."""
    return json.dumps([(c, v) for c, v in zip(columns, row) if v is not None], default=str)


class MlflowTables:
    def __init__(self, client_of: Any, part_bytes: int = PART_BYTES, open_parts: int = 64) -> None:
        self._client_of = client_of  # the sink's client, made on first use
        self.part_bytes = part_bytes
        self._parts: LRU = LRU(open_parts)  # (run id, base path) -> its current _Part
        self._tagged: set[tuple[str, str]] = set()  # (run id, part path) listed as a table
        #: Bytes uploaded, for the benchmark and the tests.
        self.uploaded_bytes = 0

    @property
    def _client(self):
        return self._client_of()

    def append(self, run_id: str, base: str, points: list[Point]) -> None:
        """The rows of ``points`` (tables) appended to the table ``base`` of ``run_id``."""
        part = self._parts.get((run_id, base)) or self._load(run_id, base)
        self._parts.put((run_id, base), part)
        if part.size >= self.part_bytes and part.data:
            part = _Part(part_path(base, part.number + 1), part.number + 1, list(_OURS), [], frozenset(part.held))
            self._parts.put((run_id, base), part)
        columns, data, added = list(part.columns), [list(r) for r in part.data], []
        for p in points:
            stamp = datetime.datetime.fromtimestamp(p.time, datetime.timezone.utc).isoformat(timespec="microseconds")
            # a sample column named like ours keeps its values under "sample.<name>"
            names = [c if c not in _OURS else f"sample.{c}" for c in p.value.columns]
            for name in names:
                if name not in columns:
                    columns.append(name)
                    for row in data:
                        row.append(None)
            index = [columns.index(n) for n in names]
            rows = []
            for values in p.value.rows:
                row = [None] * len(columns)
                row[0], row[1] = p.step, stamp
                for i, value in zip(index, values):
                    row[i] = value
                rows.append(row)
            digests = [_digest(columns, r) for r in rows]
            if digests and all(d in part.held or d in part.before for d in digests):
                continue  # this call's rows are there already: a replay
            for row in data:
                row.extend([None] * (len(columns) - len(row)))
            data.extend(rows)
            added.extend(digests)
        if not added:
            return
        for row in data:
            row.extend([None] * (len(columns) - len(row)))
        text = json.dumps({"columns": columns, "data": data}, default=str)
        self._client.log_text(run_id, text, part.path)  # raises: the part in memory is unchanged
        self.uploaded_bytes += len(text)
        part.columns, part.data, part.size = columns, data, len(text)
        part.held.update(added)
        self._tag(run_id, part.path)

    def _load(self, run_id: str, base: str) -> _Part:
        """The table's latest part as the server holds it (after a restart, or a part forgotten
        by the LRU), with the digests of the part before it, against replays across a new part."""
        folder = posixpath.dirname(base)
        stem = re.escape(posixpath.basename(base)[:-len(".json")])
        numbers = sorted(1 if m.group(1) is None else int(m.group(1))
                         for f in self._client.list_artifacts(run_id, folder)
                         if (m := re.fullmatch(stem + r"(?:\.(\d+))?\.json", posixpath.basename(f.path))))
        if not numbers:
            return _Part(base, 1, list(_OURS), [])
        before: frozenset = frozenset()
        if len(numbers) > 1:
            columns, data = self._download(run_id, part_path(base, numbers[-2]))
            before = frozenset(_digest(columns, row) for row in data)
        columns, data = self._download(run_id, part_path(base, numbers[-1]))
        return _Part(part_path(base, numbers[-1]), numbers[-1], columns, data, before)

    def _download(self, run_id: str, path: str) -> tuple[list, list]:
        with tempfile.TemporaryDirectory() as tmp:
            with open(self._client.download_artifacts(run_id, path, tmp)) as f:
                doc = json.load(f)
        return list(doc["columns"]), [list(r) for r in doc["data"]]

    def _tag(self, run_id: str, path: str) -> None:
        """List the part among the run's tables (the UI's table view reads this tag)."""
        if (run_id, path) in self._tagged:
            return
        tag = "mlflow.loggedArtifacts"
        logged = json.loads(self._client.get_run(run_id).data.tags.get(tag, "[]"))
        entry = {"path": path, "type": "table"}
        if entry not in logged:
            self._client.set_tag(run_id, tag, json.dumps(logged + [entry]))
        self._tagged.add((run_id, path))
