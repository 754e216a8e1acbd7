"""A NeMo-RL-style facade over the OTel pipeline.

``Logger(cfg).log_metrics({"loss": 0.3}, step=7)`` costs the training thread one append to
its run's tape (:mod:`otel_rl.api.recording`): the pipeline's drain thread turns the dict into
gauge points at the step, on the same OTel stream as instrument users' values (and over OTLP
to a collector). Nothing waits on a backend; the tape is bounded (``max_queue_points``, a
drain thread starved past it drops and counts).

Input rules (documented in docs/guarantees.md, "Bad input"):

- nested dicts are flattened with ``/``; ``prefix`` is prepended as ``prefix/key``;
- names are kept exactly as written (case included: ``Loss`` and ``loss`` are two series);
  each backend gets its documented key (``otel_rl/model/naming.py``), nothing is skipped
  for its spelling;
- bool, int, float, and 1-element numpy/torch values are recorded as float; NaN and +-inf
  arrive as they are (a NaN loss is worth seeing);
- logging the same name twice at one step keeps both values (docs/guarantees.md, "Every value as it was logged");
- strings, None and multi-element arrays are not numbers: reported once per key and counted
  in ``stats()["rejected_points"]``; the other metrics of the call still arrive;
- a bad ``step`` (negative, not an int) raises ``ValueError``/``TypeError`` at the call.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Mapping
from typing import Any

from otel_rl.api.globals import install as install_globals
from otel_rl.api.run import Pipeline
from otel_rl.config import Config
from otel_rl.model.steps import check_step

_log = logging.getLogger(__name__)


class Logger:
    """``Logger(cfg)``: ``log_metrics``, ``log_hyperparams``, ``finish``; cfg as for :func:`otel_rl.init`."""

    def __init__(self, cfg: Config | dict | str | None = None, *, pipeline: Pipeline | None = None) -> None:
        self._owns_pipeline = pipeline is None
        self.pipeline = pipeline or Pipeline(cfg)
        self.pipeline.activate(only_if_none=True)  # so otel_rl.span() and the meter API record into it
        if self._owns_pipeline:
            install_globals("otel_rl.Logger", strict=False)
        self._recorder = self.pipeline.recorder
        self._warned: set[str] = set()
        #: Calls made after :meth:`finish` (not recorded; warned once).
        self.calls_after_finish = 0
        self._finished = False
        atexit.register(self.finish)

    # -- training thread ---------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int, prefix: str | None = "",
                    step_metric: str | None = None, step_finished: bool = False) -> None:
        """Record every value of ``metrics`` at ``step``. Never blocks on a backend.

        NeMo-RL's ``LoggerInterface`` signature: ``step_metric`` (NeMo-RL's custom W&B x-axis,
        e.g. for GPU metrics) and ``step_finished`` are accepted; every backend here plots at
        ``step`` (W&B's x-axis is always ``otel_rl/step``)."""
        prefix = prefix or ""
        if self._finished:
            self._after_finish("log_metrics")
            return
        step = check_step(step)
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping of name -> value, got {type(metrics).__name__}")
        recorder = self._recorder
        # the values first: span timings waiting for their step take this one (otel_rl.api.timing)
        recorder.put(("m", prefix, dict(metrics), step, time.time_ns()))
        recorder.set_step(step)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters (nested dicts flattened with ``/``)."""
        if self._finished:
            self._after_finish("log_hyperparams")
            return
        self.pipeline.log_hyperparams(params)

    def log(self, data: Mapping[str, Any], step: int, backend: str | None = None,
            worker_group_name: str | None = None, rank: int | None = None) -> None:
        """RLinf's ``MetricLogger.log(data, step)``: :meth:`log_metrics` (``backend``,
        ``worker_group_name`` and ``rank`` are accepted; every enabled backend gets the values)."""
        self.log_metrics(data, step)

    # -- the rest of NeMo-RL's Logger -----------------------------------------------------------
    def log_histogram(self, histogram: Any, step: int, name: str) -> None:
        """A distribution of the values in ``histogram`` at ``step`` (NeMo-RL's signature)."""
        if self._finished:
            self._after_finish("log_histogram")
            return
        from otel_rl.api.summary import _array

        step = check_step(step)
        self._recorder.put(("hs", name, _array(histogram), step, time.time_ns(), None))

    def log_text(self, name: str, text: str, step: int) -> None:
        """A text at ``step``: TensorBoard's text plugin, W&B HTML, an MLflow artifact, SwanLab Text."""
        if self._finished:
            self._after_finish("log_text")
            return
        step = check_step(step)
        self._recorder.put(("t", name, str(text), step, time.time_ns(), None))

    def log_samples(self, rows: Any, step: int, name: str = "samples") -> None:
        """Rows of samples (a list of dicts, a dict of equal-length columns, a DataFrame) as one
        table at ``step``: see :func:`otel_rl.log_samples`."""
        if self._finished:
            self._after_finish("log_samples")
            return
        self.pipeline.log_samples(rows, check_step(step), name)

    def log_plot(self, figure: Any, step: int, name: str) -> None:
        """A matplotlib figure as an image at ``step`` (NeMo-RL's signature); the figure is closed."""
        from otel_rl.model.media import figure_array

        self._media("image", name, figure_array(figure), step, dataformats="HWC")

    def log_image(self, name: str, image: Any, step: int, dataformats: str = "HWC", caption: str | None = None) -> None:
        """An image (an array in ``dataformats``, float in [0, 1] or uint8; a batch as a grid; or a
        PNG/JPEG file path) at ``step``."""
        self._media("image", name, image, step, dataformats=dataformats, caption=caption)

    def log_video(self, name: str, video: Any, step: int, fps: float = 4, caption: str | None = None) -> None:
        """A video, ``(T, C, H, W)`` or ``(N, T, C, H, W)`` (float in [0, 1] or uint8), or a GIF/MP4
        file path (gymnasium's ``RecordVideo`` output), at ``step``."""
        self._media("video", name, video, step, fps=fps, caption=caption)

    def log_audio(self, name: str, audio: Any, step: int, sample_rate: int = 44100, caption: str | None = None) -> None:
        """Audio samples in [-1, 1] (or a WAV file path) at ``step``."""
        self._media("audio", name, audio, step, sample_rate=sample_rate, caption=caption)

    def _media(self, kind: str, name: str, value: Any, step: int, **options: Any) -> None:
        if self._finished:
            self._after_finish(f"log_{kind}")
            return
        from otel_rl.api.media import put_media

        put_media(self._recorder, kind, name, value, check_step(step), **options)

    @property
    def base_log_dir(self) -> str:
        """NeMo-RL's ``log_dir`` (RLinf's ``log_path``) when the config came from one, else ``.``."""
        return self.pipeline.config.log_dir or "."

    def log_batched_dict_as_jsonl(self, to_log: Mapping[str, Any], filename: str) -> None:
        """NeMo-RL's sample dump: one JSON line per sample of a dict of equal-length columns, to
        ``base_log_dir/filename`` (overwritten)."""
        columns = {k: list(v.tolist() if hasattr(v, "tolist") else v) for k, v in dict(to_log).items()}
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())] if columns else []
        self._write_jsonl(filename, rows, "w")

    def log_string_list_as_jsonl(self, to_log: list[str], filename: str) -> None:
        """NeMo-RL's string dump: one JSON line per string, appended to ``base_log_dir/filename``."""
        self._write_jsonl(filename, [str(x) for x in to_log], "a")

    def _write_jsonl(self, filename: str, rows: list, mode: str) -> None:
        import json
        import os

        path = os.path.join(self.base_log_dir, filename)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, mode) as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")

    def finish(self, timeout_s: float = 30.0, status: str | None = None) -> None:
        """Flush every sink and (when owned) shut the pipeline down with the run's ``status``
        (default: ``failed`` after an uncaught exception), waiting at most ``timeout_s`` for slow
        sinks (with a spool, what is left stays spooled)."""
        if self._finished:
            return
        self._finished = True
        atexit.unregister(self.finish)
        if self._owns_pipeline:
            self.pipeline.shutdown(timeout_s, status)
        else:
            self.pipeline.force_flush(timeout_s)

    def _after_finish(self, method: str) -> None:
        self.calls_after_finish += 1
        self._warn("finished", "Logger.%s after finish(): the pipeline is closed, nothing is recorded "
                   "(counted in Logger.calls_after_finish; create a new Logger for a new run)", method)

    def _warn(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned and len(self._warned) < 100_000:
            self._warned.add(key)
            _log.warning(message, *args)
