"""Weights & Biases sink.

Steps: W&B drops any ``step=`` lower than the run's current one (wandb#9449), which
would lose late points (a rank arriving late, a replay). This sink never passes
``step=``: every log call carries the training step as the value of the custom step
metric ``otel_rl/step``, declared as the x-axis of every key (``define_metric``).
W&B's own ``_step`` then just counts calls, so a step lower than an earlier one is
stored like any other and charts place it at its step.

Runs: the W&B run id is derived from the otel-rl run and this writer's instance (its spool id,
``resume="allow"``), so a restarted trainer or collector continues its own run while a new
process with the same run name starts a new W&B run (``resume: true``: the latest run of that
name written under ``dir``, whose id is kept in ``wandb/otel-rl-latest-<run>.txt``). A batch
replayed from a spool that was already written is recognized by its fingerprint and skipped
(W&B cannot overwrite history rows).

Repeated values: a key logged again at the same step starts another row at that step, so every
value is kept; each row's ``_timestamp`` is when its first value was recorded.

Values: histograms become ``wandb.Histogram`` (at most 512 bins), hyperparameters
go into the run config. Mode ``offline`` needs no key and no network; ``online``
needs ``WANDB_API_KEY`` (env) or ``api_key_file``. The key is never logged or put
in the run config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal, Optional

from otel_rl.errors import ConfigError, PermanentError, TransientError
from otel_rl.model.naming import NameMapper
from otel_rl.model.records import Batch, HistogramValue, Point
from otel_rl.settings import env_default, readable_file
from otel_rl.sinks.base import LazyModule, Sink

_log = logging.getLogger(__name__)

#: The custom x-axis of every otel-rl key in W&B.
STEP_METRIC = "otel_rl/step"
_MAX_BINS = 512


def _default_mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


@dataclass(frozen=True)
class WandbConfig:
    """``wandb:`` section. ``mode`` defaults to env ``WANDB_MODE``, else ``online`` when
    ``WANDB_API_KEY`` is set, else ``offline``. ``dir`` gets a ``wandb/`` folder."""

    enabled: bool = False
    project: str = env_default("WANDB_PROJECT", "otel-rl")
    entity: Optional[str] = env_default("WANDB_ENTITY", None)
    mode: Optional[Literal["online", "offline", "disabled"]] = None
    dir: str = env_default("WANDB_DIR", ".")
    group: Optional[str] = None
    api_key_file: Optional[str] = None
    #: W&B runs kept open (each holds files and threads); past it the least recently used is
    #: finished and resumed (same id) when its otel-rl run writes again.
    max_open_runs: int = 64

    def __post_init__(self) -> None:
        if self.mode is None:
            object.__setattr__(self, "mode", _default_mode())

    def validate(self, path: str) -> None:
        if self.mode not in ("online", "offline", "disabled"):
            raise ConfigError(f"{path}.mode: {self.mode!r} is not allowed; allowed: 'online', 'offline', "
                              "'disabled'")
        readable_file(f"{path}.api_key_file", self.api_key_file)
        if self.max_open_runs < 1:
            raise ConfigError(f"{path}.max_open_runs: must be >= 1, got {self.max_open_runs}")

    def local_dirs(self) -> dict[str, str]:
        """Directories this section writes on this machine (checked at start)."""
        return {} if self.mode == "disabled" else {"dir": self.dir}


def wandb_run_id(run: str) -> str:
    """A stable W&B run id for an otel-rl run, so a restarted process resumes the same W&B run
    (ids: letters, digits, ``-``, ``_``; at most 64 characters)."""
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", run)
    if clean == run and len(run) <= 64:
        return run
    return clean[:55] + "-" + hashlib.blake2s(run.encode(), digest_size=4).hexdigest()


class _Journal:
    """Fingerprints of the last batches written to a W&B run, kept on disk next to the run files.

    W&B history rows cannot be overwritten, so a batch replayed from a spool after a crash (written,
    but the spool checkpoint had not moved yet) is recognized and skipped. Only batches after the
    checkpoint can be replayed, so the last 1,000 fingerprints are plenty. One line per
    fingerprint, appended per batch (rewriting the whole list each time cost more than the
    fingerprint); cut back to the last 1,000 when it reaches twice that. A line cut short by a
    crash matches nothing. (Before: one JSON list, still read.)
    """

    LIMIT = 1000

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text()
        except OSError:
            text = ""
        try:
            self._seen = list(json.loads(text)) if text.startswith("[") else text.split()
        except ValueError:
            self._seen = []
        self._seen = self._seen[-self.LIMIT:]
        self._set = set(self._seen)
        self._lines = len(self._seen)

    def __contains__(self, fingerprint: str) -> bool:
        return fingerprint in self._set

    def add(self, fingerprint: str) -> None:
        self._seen.append(fingerprint)
        self._set.add(fingerprint)
        if len(self._seen) > self.LIMIT:
            self._set.discard(self._seen.pop(0))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._lines >= 2 * self.LIMIT:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(f"{f}\n" for f in self._seen))
            os.replace(tmp, self.path)
            self._lines = len(self._seen)
            return
        with open(self.path, "a") as f:
            f.write(f"{fingerprint}\n")
        self._lines += 1


def histogram_arrays(hist: HistogramValue) -> tuple[list[int], list[float]] | None:
    """Contiguous (counts, edges) for ``np_histogram``; gaps become empty bins; None if empty."""
    buckets = hist.finite_buckets()
    if not buckets:
        return None
    counts, edges = [], [buckets[0][0]]
    for left, right, count in buckets:
        if left > edges[-1]:
            counts.append(0)
            edges.append(left)
        counts.append(count)
        edges.append(max(right, edges[-1]))
    while len(counts) > _MAX_BINS:  # merge neighbours pairwise until W&B accepts it
        counts = [sum(counts[i:i + 2]) for i in range(0, len(counts), 2)]
        edges = edges[::2] + ([edges[-1]] if (len(edges) - 1) % 2 else [])
    return counts, edges


class WandbExporter(Sink):
    """Logs per-step records to W&B, one W&B run per otel-rl run."""

    name = "wandb"

    def __init__(self, config: WandbConfig | None = None) -> None:
        self._wandb = LazyModule("wandb", "wandb")  # imported by preload(), after start
        super().__init__()
        self.config = config or WandbConfig()
        self._names = NameMapper("wandb")
        self._runs: dict[str, Any] = {}  # insertion order: least recently used first
        self._busy: set[str] = set()  # runs of the batch being written: never finished for the limit
        #: W&B runs finished to stay within ``max_open_runs`` (resumed on demand).
        self.closed_runs = 0
        self._journals: dict[str, _Journal] = {}
        self._resume: tuple[Any, int] = (None, 0)
        self._folders: dict[str, str] = {}

    def replay_target(self) -> str:
        return f"wandb:{self.config.mode}"

    def location(self, run: str) -> str:
        # the run folder (``wandb sync`` takes it), not its files/ sub-folder; kept after close
        folder = self._folders.get(run)
        return folder if folder is not None else f"{self.config.dir}/wandb ({self.config.mode})"

    def open(self, run: str) -> None:
        self._run(run)

    def _run(self, run: str):
        active = self._runs.get(run)
        if active is None:
            active = self._runs[run] = self._init(run)
            for old in list(self._runs):
                if len(self._runs) <= self.config.max_open_runs:
                    break
                if old not in self._busy and old != run:
                    self._runs.pop(old).finish(exit_code=0)
                    self.closed_runs += 1
        elif next(reversed(self._runs)) != run:
            self._runs[run] = self._runs.pop(run)  # most recently used last
        return active

    def _init(self, run: str):
        wandb = self._wandb
        cfg = self.config
        if cfg.api_key_file and cfg.mode == "online":
            os.environ.setdefault("WANDB_API_KEY", Path(cfg.api_key_file).read_text().strip())
        # Absolute: a process may share an already running wandb-core service (WANDB_SERVICE),
        # which resolves a relative dir against its own working directory, not ours.
        run_root = Path(cfg.dir).resolve()
        run_root.mkdir(parents=True, exist_ok=True)
        # a new W&B run per writer (the spool id: a restarted process continues its own run);
        # with resume, the latest run of that name written here (its id is kept in a file)
        latest = run_root / "wandb" / f"otel-rl-latest-{wandb_run_id(run)}.txt"
        run_id = wandb_run_id(f"{run}-{self.instance}")
        if self.resume and latest.is_file():
            run_id = latest.read_text().strip() or run_id
        latest.parent.mkdir(parents=True, exist_ok=True)
        latest.write_text(run_id)
        self._journals[run] = _Journal(run_root / "wandb" / f"otel-rl-written-{run_id}.json")
        try:
            active = wandb.init(
                project=cfg.project, entity=cfg.entity, name=run, id=run_id, resume="allow", group=cfg.group,
                mode=cfg.mode, dir=str(run_root), reinit="create_new",
                settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                        x_save_requirements=False, save_code=False))
        except wandb.errors.UsageError as exc:  # e.g. online without a key
            raise PermanentError(f"wandb.init failed: {exc}") from exc
        active.define_metric(STEP_METRIC)
        active.define_metric("*", step_metric=STEP_METRIC)
        self._folders[run] = str(Path(active.dir).parent)
        _log.info("wandb: run %r -> %s", run, self._folders[run])
        return active

    def write(self, batch: Batch) -> None:
        try:
            self._write(batch)
        except self._wandb.errors.CommError as exc:  # network: W&B may be back later
            raise TransientError(f"wandb: {exc}") from exc

    def _write(self, batch: Batch) -> None:
        from otel_rl.model.codec import fingerprint_bytes

        runs = batch.runs()
        self._busy = set(runs)
        for run in runs:
            self._run(run)  # opens the run and its journal
        fingerprint = hashlib.blake2b(fingerprint_bytes(batch), digest_size=16).hexdigest()
        if runs and all(fingerprint in self._journals[r] for r in runs):
            _log.info("wandb: batch already written before a restart (replayed from a spool); skipped")
            return
        previous, done = self._resume
        start = done if previous is batch else 0  # a retried batch resumes after its last logged row
        if start == 0:
            for params in batch.params:
                self._run(params.run).config.update(params.params, allow_val_change=True)
        rows = self._rows(batch)
        for i in range(start, len(rows)):
            run, row = rows[i]
            self._resume = (batch, i)
            self._run(run).log(row, commit=True)
        self._resume = (None, 0)
        for run in runs:
            self._journals[run].add(fingerprint)

    def _rows(self, batch: Batch) -> list[tuple[str, dict[str, Any]]]:
        """One row per step; a key logged again at the same step starts another row at that
        step, so every value is kept (W&B's ``_step`` only counts rows; charts plot
        ``otel_rl/step``). ``_timestamp`` is when the row's first value was recorded."""
        rows: list[tuple[str, dict[str, Any]]] = []
        for (run, step), points in groupby(batch.points, key=lambda p: (p.run, p.step)):
            row: dict[str, Any] | None = None
            for p in points:
                value = self._value(p)
                if value is None:
                    continue
                key = self._names.key(p.name, p.attributes)
                if row is None or key in row:
                    row = {STEP_METRIC: step, "_timestamp": p.time}
                    rows.append((run, row))
                row[key] = value
        return rows

    def _value(self, p: Point):
        if p.kind == "media":
            return self._media(p.value)
        if p.kind == "table":  # samples: a W&B Table at the step
            return self._wandb.Table(columns=list(p.value.columns), data=[list(r) for r in p.value.rows])
        if p.kind == "text":
            import html

            return self._wandb.Html(f"<pre>{html.escape(p.value)}</pre>")
        if not isinstance(p.value, HistogramValue):
            return p.value
        arrays = histogram_arrays(p.value)
        if arrays is None:
            return None
        return self._wandb.Histogram(np_histogram=arrays)

    def _media(self, media):
        """wandb.Image, Video or Audio: W&B's media panels, the files in the run's ``media/``."""
        from otel_rl.sinks.media_files import audio_samples, pil_image

        caption = media.caption or None
        if media.kind == "image":
            return self._wandb.Image(pil_image(media), caption=caption)
        if media.kind == "video":
            import io

            # encoded bytes carry their frame rate (W&B's fps= applies to arrays only)
            return self._wandb.Video(io.BytesIO(media.data), caption=caption, format=media.format)
        if media.format == "wav":
            samples, rate = audio_samples(media)
            return self._wandb.Audio(samples, sample_rate=rate, caption=caption)
        self.warn_once(f"audio:{media.format}", "wandb: %s audio is not read; only WAV is carried", media.format)
        return None

    def close(self, status: str = "success") -> None:
        exit_code = 0 if status == "success" else 1
        for run in self._runs.values():
            run.finish(exit_code=exit_code)
        self._runs.clear()
