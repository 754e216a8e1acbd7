"""Sample tables: rows as plain data, with the limits of ``log_samples``."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

from otel_rl.errors import ConfigError
from otel_rl.model.records import Table

DEFAULT_NAME = "samples"


@dataclasses.dataclass(frozen=True)
class SamplesConfig:
    """``samples`` section: ``max_rows`` per call, ``max_chars`` per cell, ``print_rows``: print
    the first rows of every table to the console (0: off; NeMo-RL's ``num_val_samples_to_print``)."""

    max_rows: int = 1_000
    max_chars: int = 10_000
    print_rows: int = 0

    def validate(self, path: str) -> None:
        if self.max_rows < 1 or self.max_chars < 1 or self.print_rows < 0:
            raise ConfigError(f"{path}: max_rows and max_chars must be >= 1 and print_rows >= 0")


def cut_text(text: str, max_chars: int) -> str:
    """``text`` within ``max_chars`` characters, marked where it was cut."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}… [{len(text) - max_chars} more characters]"


def _cell(value: Any, max_chars: int) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if not isinstance(value, str):
        item = getattr(value, "item", None)
        size = getattr(value, "size", None)
        numel = getattr(value, "numel", None)
        if callable(numel):
            size = numel()
        if callable(item) and size == 1:
            try:
                value = item()
                if isinstance(value, (bool, int, float)):
                    return value
            except (TypeError, ValueError):
                pass
        value = str(value)
    return cut_text(value, max_chars)


def _columns_of(data: Any) -> dict[str, list] | None:
    """A dict of equal-length columns (NeMo-RL's batched dict, a pandas DataFrame), or None."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas
        data = data.to_dict("list")
    if isinstance(data, Mapping):
        columns = {str(k): list(v.tolist() if hasattr(v, "tolist") else v) for k, v in data.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"log_samples: columns have different lengths {sorted(lengths)}")
        return columns
    return None


def to_table(data: Any, max_rows: int, max_chars: int) -> tuple[Table, int]:
    """``data`` (a list of row dicts, a dict of columns, a DataFrame) as a :class:`Table`, and
    how many rows past ``max_rows`` were dropped."""
    columns = _columns_of(data)
    if columns is not None:
        names = list(columns)
        n = len(next(iter(columns.values()))) if columns else 0
        kept = min(n, max_rows)
        rows = tuple(tuple(_cell(columns[c][i], max_chars) for c in names) for i in range(kept))
        return Table(tuple(names), rows), n - kept
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"log_samples: rows must be a list of dicts or a dict of columns, got {type(data).__name__}")
    dicts = []
    dropped = 0
    for row in data:
        if not isinstance(row, Mapping):
            raise TypeError(f"log_samples: each row must be a dict of column -> value, got {type(row).__name__}")
        if len(dicts) >= max_rows:
            dropped += 1
            continue
        dicts.append(row)
    names: dict[str, None] = {}
    for row in dicts:
        names.update(dict.fromkeys(str(k) for k in row))
    order = list(names)
    rows = tuple(tuple(_cell(_get(row, c), max_chars) for c in order) for row in dicts)
    return Table(tuple(order), rows), dropped


def _get(row: Mapping, column: str) -> Any:
    if column in row:
        return row[column]
    for key, value in row.items():  # a non-str key, named by its str()
        if str(key) == column:
            return value
    return None


def row_of(body: Any, max_chars: int) -> dict[str, Any]:
    """A Logs-API record's body as one row."""
    if isinstance(body, Mapping):
        return {str(k): _cell(v, max_chars) for k, v in body.items()}
    return {"body": _cell(body, max_chars)}


def table_from_rows(rows: list[dict[str, Any]]) -> Table:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    order = tuple(names)
    return Table(order, tuple(tuple(row.get(c) for c in order) for row in rows))


#: Characters of a cell the console preview shows (the backends keep up to ``max_chars``).
PREVIEW_CHARS = 200


def preview_cell(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A cell cut to ``limit`` characters for the console."""
    return cut_text(str(value), limit)


def print_table(run: str, name: str, step: int, table: Table, limit: int) -> None:
    """The first ``limit`` rows, one block per row (NeMo-RL's validation sample print), each cell
    cut to :data:`PREVIEW_CHARS` characters: a preview; the backends hold the whole cells."""
    lines = [f"===== {name} · run {run} · step {step} · {len(table.rows)} rows ====="]
    for i, row in enumerate(table.rows[:limit]):
        lines.append(f"--- sample {i} ---")
        lines.extend(f"{column}: {preview_cell(value)}" for column, value in zip(table.columns, row))
    if len(table.rows) > limit:
        lines.append(f"... {len(table.rows) - limit} more")
    # the console: in the helper process, sys.stdout takes backend SDKs' banners to the logger and
    # keeps the real output as .console (otel_rl.runtime.child)
    print("\n".join(lines), file=getattr(sys.stdout, "console", sys.stdout), flush=True)
