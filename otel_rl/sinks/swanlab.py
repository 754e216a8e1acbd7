"""SwanLab sink (modes ``offline``, ``local`` and ``cloud``).

Duplicate steps: SwanLab keeps the *first* value logged for a (key, step) and silently
drops later ones (SwanLab#1363). This sink defines instead:

- several values of a (key, step) in one export batch (a name logged several times at one
  step; the pipeline sends a step whole) become their mean, counted in
  :attr:`SwanlabExporter.averaged_values` and logged once per key;
- a value for a (key, step) already written by an earlier batch cannot replace the stored
  one, so it is not sent; it is counted in :attr:`SwanlabExporter.duplicates` and logged
  once per key. Nothing disappears without a trace. The memory of written (key, step)
  pairs is bounded (the most recent 200,000).

Other facts (SwanLab 0.10.3): steps lower than the current one are kept; NaN/inf are
kept; there is no histogram type, so histograms become ``<key>/count|sum|mean|min|max``;
one run can be open per process, so a batch for another otel-rl run finishes the current
SwanLab run and starts the next. Hyperparameters go into the run config. SwanLab's
capture of the process's stdout is turned off (it would record the trainer's prints).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal, Optional

from otel_rl.errors import ConfigError, PermanentError
from otel_rl.model.naming import NameMapper
from otel_rl.model.records import Batch, fmean, scalar_items
from otel_rl.settings import env_default, readable_file
from otel_rl.sinks.base import LazyModule, Sink

_log = logging.getLogger(__name__)

_WRITTEN_MEMORY = 200_000


@dataclass(frozen=True)
class SwanlabConfig:
    """``swanlab:`` section. ``mode`` (env ``SWANLAB_MODE``, default ``offline``); ``logdir``
    (env ``SWANLAB_LOG_DIR``, default ``swanlog``); ``cloud`` needs ``SWANLAB_API_KEY`` or
    ``api_key_file``."""

    enabled: bool = False
    project: str = env_default("SWANLAB_PROJECT", "otel-rl")
    workspace: Optional[str] = env_default("SWANLAB_WORKSPACE", None)
    mode: Literal["cloud", "offline", "local", "disabled"] = env_default("SWANLAB_MODE", "offline")
    logdir: str = env_default("SWANLAB_LOG_DIR", "swanlog")
    api_key_file: Optional[str] = None

    def validate(self, path: str) -> None:
        if self.mode not in ("cloud", "offline", "local", "disabled"):
            raise ConfigError(f"{path}.mode: {self.mode!r} is not allowed; allowed: 'cloud', 'offline', "
                              "'local', 'disabled'")
        readable_file(f"{path}.api_key_file", self.api_key_file)

    def local_dirs(self) -> dict[str, str]:
        """Directories this section writes on this machine (checked at start)."""
        return {} if self.mode == "disabled" else {"logdir": self.logdir}


class SwanlabExporter(Sink):
    """Logs per-step records to SwanLab."""

    name = "swanlab"

    def __init__(self, config: SwanlabConfig | None = None) -> None:
        self._swanlab = LazyModule("swanlab", "swanlab")  # imported by preload(), after start
        super().__init__()
        self.config = config or SwanlabConfig()
        self._names = NameMapper("swanlab")
        self._active: tuple[str, Any] | None = None
        self._ids: dict[str, str] = {}  # run -> its SwanLab experiment id (resumed when it comes back)
        #: Times a run came back after another one and its experiment was resumed.
        self.resumed_experiments = 0
        self._written: OrderedDict = OrderedDict()
        self.duplicates = 0
        self.averaged_values = 0

    def replay_target(self) -> str:
        return f"swanlab:{self.config.mode}"

    def location(self, run: str) -> str:
        return f"{self.config.logdir} ({self.config.mode}, experiment {run!r})"

    def open(self, run: str) -> None:
        self._run(run)

    def _run(self, run: str):
        if self._active is not None and self._active[0] == run:
            return self._active[1]
        self._finish_active()
        swanlab = self._swanlab
        cfg = self.config
        if cfg.api_key_file and cfg.mode == "cloud":
            os.environ.setdefault("SWANLAB_API_KEY", Path(cfg.api_key_file).read_text().strip())
        Path(cfg.logdir).mkdir(parents=True, exist_ok=True)
        resume = {"id": self._ids[run], "resume": "allow"} if run in self._ids else {}
        if resume:
            self.resumed_experiments += 1
            self.warn_once("interleaved", "swanlab: runs interleave (SwanLab holds one experiment per "
                           "process); run %r resumes its experiment %s (offline: one more folder with the same "
                           "id; `swanlab sync` joins them)", run, self._ids[run])
        try:
            active = swanlab.init(
                project=cfg.project, workspace=cfg.workspace, experiment_name=run, mode=cfg.mode,
                logdir=cfg.logdir, reinit=True,
                settings=swanlab.Settings(terminal=swanlab.Settings.Terminal(proxy_type="none")), **resume)
        except (ValueError, TypeError) as exc:
            raise PermanentError(f"swanlab.init failed: {exc}") from exc
        run_id = getattr(active, "id", None)
        if run_id and len(self._ids) < 100_000:
            self._ids[run] = run_id
        self._active = (run, active)
        return active

    def write(self, batch: Batch) -> None:
        for params in batch.params:
            self._run(params.run).config.update(params.params)
        for (run, step), points in groupby(batch.points, key=lambda p: (p.run, p.step)):
            values: dict[str, list[float]] = {}
            texts: dict[str, Any] = {}
            for p in points:
                if p.kind == "text":
                    texts[self._names.key(p.name, p.attributes)] = self._swanlab.Text(p.value)
                    continue
                if p.kind == "media":
                    media = self._media(p.value)
                    if media is not None:
                        texts[self._names.key(p.name, p.attributes)] = media
                    continue
                if p.kind == "table":  # samples: one Text per row, "column: value" lines
                    texts[self._names.key(p.name, p.attributes)] = [
                        self._swanlab.Text("\n".join(f"{c}: {v}" for c, v in zip(p.value.columns, row)))
                        for row in p.value.rows]
                    continue
                for suffix, value in scalar_items(p.value):
                    values.setdefault(self._names.key(p.name, p.attributes, suffix), []).append(value)
            row = {}
            for key, logged in values.items():
                if len(logged) > 1:  # SwanLab holds one value per step: the mean, counted
                    self.averaged_values += len(logged)
                    self.warn_once(f"mean:{run}:{key}", "swanlab: %r has %d values at step %d; SwanLab "
                                   "keeps one per step, so it gets their mean (counted in "
                                   "averaged_values; every value is in TensorBoard, W&B and MLflow)",
                                   key, len(logged), step)
                    row[key] = fmean(logged)
                else:
                    row[key] = logged[0]
            row = self._first_writes(run, step, row)
            row.update(texts)
            if row:
                self._run(run).log(row, step=step)
                self._mark(run, step, row)  # only once SwanLab took it: a retry sends it again

    def _media(self, media):
        """swanlab.Image, Video (GIF) or Audio."""
        from otel_rl.sinks.media_files import audio_samples, pil_image

        caption = media.caption or None
        if media.kind == "image":
            return self._swanlab.Image(pil_image(media), caption=caption)
        if media.kind == "video" and media.format == "gif":
            return self._swanlab.Video(media.data, caption=caption)
        if media.kind == "audio" and media.format == "wav":
            samples, rate = audio_samples(media)
            return self._swanlab.Audio(samples, sample_rate=rate, caption=caption)
        self.warn_once(f"media:{media.kind}:{media.format}", "swanlab: %s %s is not shown by SwanLab (GIF videos "
                       "and WAV audio are); kept in the other backends", media.format.upper(), media.kind)
        return None

    def _mark(self, run: str, step: int, row: dict[str, float]) -> None:
        for key in row:
            self._written[(run, key, step)] = None
            if len(self._written) > _WRITTEN_MEMORY:
                self._written.popitem(last=False)

    def _first_writes(self, run: str, step: int, row: dict[str, float]) -> dict[str, float]:
        kept = {}
        for key, value in row.items():
            mark = (run, key, step)
            if mark in self._written:
                self.duplicates += 1
                self.warn_once(
                    f"dup:{run}:{key}", "swanlab: %r already has a value at step %d; SwanLab keeps "
                    "the first (SwanLab#1363), so the later value is not sent (counted in "
                    "duplicates)", key, step)
                continue
            kept[key] = value
        return kept

    def _finish_active(self, status: str = "success") -> None:
        if self._active is not None:
            state = {"success": "success", "failed": "crashed", "killed": "aborted"}.get(status, "success")
            try:
                self._active[1].finish(state=state)
            except TypeError:  # an older SDK without finish(state=)
                self._active[1].finish()
            self._active = None

    def close(self, status: str = "success") -> None:
        self._finish_active(status)

