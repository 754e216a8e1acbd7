"""Samples and tables: generations, prompts, rewards, logged as rows at a step.

``otel_rl.log_samples(rows, step=..., name="val/samples")`` (and ``Logger.log_samples``) puts one
record on the run's tape. The rows travel as OpenTelemetry log records, one per row (over OTLP:
``/v1/logs``, the event name is the table's name, the row is the body, the step an attribute),
and become each backend's own form: a W&B Table, a markdown table in TensorBoard's text plugin,
a growing MLflow table (``mlflow.load_table``), SwanLab Text, and a console print of the first
rows (``samples.print_rows``, NeMo-RL's ``num_val_samples_to_print``).

The OTel Logs API works too: with ``otel_rl.init`` the global logger provider records a log
record that has an ``event_name`` as a row of the table of that name (its body a mapping of
columns; a string body is the column ``body``). Records without an event name are not samples
and are not carried.

Limits (``samples`` config section, documented in docs/guide.md, "Samples and tables"):

- ``max_rows`` (default 1,000) rows per call; the rest are dropped, counted in
  ``stats()["dropped_sample_rows"]`` and warned once;
- ``max_chars`` (default 10,000) characters per cell; a longer text is cut and ends with
  ``… [N more characters]``;
- a cell is kept as str, int, float, bool or None; anything else (a tensor, a list) is ``str(x)``
  (a one-element numpy/torch value becomes its number).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opentelemetry import _logs as logs_api

from otel_rl.model.tables import SamplesConfig, row_of
from otel_rl.model.tape import LOG_ROW

_log = logging.getLogger(__name__)


# -- the OTel Logs API, recording into the current run ------------------------------------------
class Logger(logs_api.Logger):
    """Records a log record with an ``event_name`` as one row of the table of that name, at its
    ``step`` attribute or the run's current step."""

    def __init__(self, name: str, recorder=None) -> None:
        super().__init__(name)
        self._recorder = recorder

    def enabled(self, context=None, severity_number=None, event_name: str | None = None) -> bool:
        return bool(event_name) if event_name is not None else True

    def emit(self, record: logs_api.LogRecord | None = None, *, timestamp: int | None = None,
             observed_timestamp: int | None = None, context=None, severity_number=None,
             severity_text: str | None = None, body: Any = None, attributes=None,
             event_name: str | None = None, exception: BaseException | None = None) -> None:
        if record is not None:
            body, attributes, event_name = record.body, record.attributes, record.event_name
            timestamp = record.timestamp or record.observed_timestamp
        from otel_rl.api import current, recording

        recorder = self._recorder or recording.current()
        if not event_name:  # not a sample (see the module's docstring): counted, said once
            if recorder is not None:
                recorder.ignore_log_record()
            return
        if recorder is None:
            return
        run = current.run_of(recorder)
        max_chars = run.config.sources["samples"].max_chars if run is not None else SamplesConfig.max_chars
        recorder.put((LOG_ROW, str(event_name), row_of(body, max_chars), recorder.step,
                      timestamp or time.time_ns(), dict(attributes) if attributes else None))


class LoggerProvider(logs_api.LoggerProvider):
    """Loggers recording into ``recorder``, or (None) into the run current where they emit."""

    def __init__(self, recorder=None) -> None:
        self._recorder = recorder
        self._loggers: dict[str, Logger] = {}
        self._lock = threading.Lock()

    def get_logger(self, name: str, version: str | None = None, schema_url: str | None = None,
                   attributes=None) -> Logger:
        with self._lock:
            logger = self._loggers.get(name)
            if logger is None:
                logger = self._loggers[name] = Logger(name, self._recorder)
        return logger
