"""The embedded (in-process) pipeline: SDK MeterProvider -> one reader -> fan-out to sinks.

::

    instruments (step attribute) --> MeterProvider --> StepReader (DELTA, own thread)
        --> Translator (once) --> SinkWorker queue per sink --> TensorBoard | W&B | ...
        --> PeriodicExportingMetricReader --> OTLP (standard exporter), when enabled

One reader feeds every record sink, so recording cost does not grow with the
number of backends, and the batch is translated once.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_rl import _step
from otel_rl.config import Config, default_run_name, load_config
from otel_rl.delivery import SinkWorker
from otel_rl.exporters import registry
from otel_rl.exporters.base import DELTA_TEMPORALITY, RecordExporter
from otel_rl.exporters.translate import Translator
from otel_rl.semconv import RANK, RUN_ID, WORLD_SIZE
from otel_rl.timing import PhaseTimer

_log = logging.getLogger(__name__)
_active: list["Pipeline"] = []  # the pipeline otel_rl.span() and friends use: the last activated


def active_pipeline() -> "Pipeline | None":
    return _active[-1] if _active else None


def open_spool(spool_dir: str | None, sink: str, max_bytes: int, fsync: bool = True):
    """The durable spool for ``sink`` under ``spool_dir``, or None (in-memory queues)."""
    if not spool_dir:
        return None
    from otel_rl.spool import Spool

    return Spool(Path(spool_dir) / sink, max_bytes=max_bytes, fsync=fsync)


class Fanout:
    """Translates each collected ``MetricsData`` once and queues it for every sink."""

    def __init__(self, sinks: list[RecordExporter], max_queue_points: int, spool_dir: str | None = None,
                 spool_max_bytes: int = 1 << 30) -> None:
        self.translator = Translator()
        self._lock = threading.Lock()
        self.workers = [SinkWorker(sink, max_queue_points, spool=open_spool(spool_dir, sink.name, spool_max_bytes))
                        for sink in sinks]

    def export(self, metrics_data) -> None:
        with self._lock:
            batch = self.translator.translate_sdk(metrics_data)
        if batch:
            for worker in self.workers:
                worker.submit(batch)

    def flush(self, timeout_s: float) -> bool:
        ok = all([worker.drain(timeout_s) for worker in self.workers])
        return all([worker.sink.force_flush() for worker in self.workers]) and ok

    def shutdown(self, timeout_s: float) -> None:
        for worker in self.workers:
            worker.stop(timeout_s)
            worker.sink.shutdown()


class StepReader(MetricReader):
    """Collects every ``interval_s``, or sooner when :meth:`request_collect` is called."""

    def __init__(self, fanout: Fanout, interval_s: float, cardinality_limit: int) -> None:
        super().__init__(preferred_temporality=DELTA_TEMPORALITY,
                         cardinality_limits={cls: cardinality_limit for cls in DELTA_TEMPORALITY})
        self._fanout = fanout
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._shutdown_once = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="otel-rl-reader", daemon=True)
        self._thread.start()

    def _receive_metrics(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> None:
        if metrics_data is not None:
            self._fanout.export(metrics_data)

    def request_collect(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.collect()
            except Exception:  # keep collecting; one bad cycle must not end telemetry
                _log.exception("collect failed")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.collect(timeout_millis=timeout_millis)
        return self._fanout.flush(timeout_millis / 1e3)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        if not self._shutdown_once.acquire(blocking=False):
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_millis / 1e3)
        try:
            self.collect(timeout_millis=timeout_millis)
        finally:
            self._fanout.shutdown(timeout_millis / 1e3)


def resolve_resource(config: Config) -> Resource:
    """Resource from ``OTEL_RESOURCE_ATTRIBUTES``/``OTEL_SERVICE_NAME`` plus the run id."""
    env = OTELResourceDetector().detect().attributes
    pcfg = config.pipeline
    run = pcfg.run_name or env.get(RUN_ID) or default_run_name()
    attributes = {"service.name": pcfg.service_name, RUN_ID: str(run)}
    if pcfg.rank is not None:
        attributes[RANK] = pcfg.rank
    if pcfg.world_size is not None:
        attributes[WORLD_SIZE] = pcfg.world_size
    return Resource.create(attributes)


class Pipeline:
    """Owns the MeterProvider, the readers and the sinks of one process."""

    def __init__(self, config: Config | dict | str | None = None) -> None:
        self.config = load_config(config)
        pcfg = self.config.pipeline
        self.resource = resolve_resource(self.config)
        self.run_name = str(self.resource.attributes[RUN_ID])
        sinks, readers = [], []
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        for name, backend_config in self.config.enabled().items():
            spec = registry.spec(name)
            span_exporter = registry.create_span_exporter(name, backend_config)
            if span_exporter is not None:
                self.tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            if spec.exporter is None:
                continue
            exporter = registry.create(name, backend_config)
            if isinstance(exporter, RecordExporter):
                sinks.append(exporter)
            else:
                # Its own thread; bursts beyond cardinality_limit steps per interval overflow.
                readers.append(PeriodicExportingMetricReader(
                    exporter, export_interval_millis=pcfg.export_interval_s * 1e3,
                    cardinality_limits={cls: pcfg.cardinality_limit for cls in DELTA_TEMPORALITY}))
        self.fanout = Fanout(sinks, pcfg.max_queue_points, pcfg.spool_dir, pcfg.spool_max_bytes)
        self.reader = StepReader(self.fanout, pcfg.export_interval_s, pcfg.cardinality_limit)
        self.meter_provider = MeterProvider(resource=self.resource, metric_readers=[self.reader, *readers],
                                            shutdown_on_exit=True)
        self.step_meter_provider = _step.StepMeterProvider(self.meter_provider)
        self.timing = PhaseTimer(self.meter_provider.get_meter("otel_rl.timing"),
                                 self.tracer_provider.get_tracer("otel_rl"))
        self.gpu = None
        if self.config.sources["gpu"].enabled:
            from otel_rl.gpu import GpuSampler

            sampler = GpuSampler(self.get_meter("otel_rl.gpu"), self.config.sources["gpu"])
            self.gpu = sampler if sampler.start() else None
        self._pending_steps = 0
        self._closed = False
        _step.add_step_listener(self._on_step)
        _log.info("otel-rl: run %r -> %s", self.run_name, ", ".join(self.describe()) or "no sinks")

    @property
    def sinks(self) -> list[RecordExporter]:
        return [w.sink for w in self.fanout.workers]

    def describe(self) -> list[str]:
        """Where the data goes, one line per sink."""
        lines = []
        for sink in self.sinks:
            where = getattr(sink, "run_dir", None)
            lines.append(f"{sink.name}: {where(self.run_name)}" if where else sink.name)
        return lines

    def get_meter(self, name: str, version: str | None = None):
        """A meter whose instruments stamp the current step (see :func:`otel_rl.set_step`)."""
        return self.step_meter_provider.get_meter(name, version)

    def activate(self, only_if_none: bool = False) -> None:
        """Make this the pipeline that :func:`otel_rl.span` records into."""
        if not (only_if_none and _active) and not self._closed:
            _active.append(self)

    def get_tracer(self, name: str = "otel_rl"):
        return self.tracer_provider.get_tracer(name)

    def _on_step(self, step: int) -> None:
        self.timing.on_step(step)
        self._pending_steps += 1
        if self._pending_steps >= self.config.pipeline.flush_every_steps:
            self._pending_steps = 0
            self.reader.request_collect()

    def collect_now(self) -> None:
        """Collect and queue everything recorded so far (on the calling thread)."""
        self._pending_steps = 0
        self.reader.collect()

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Export everything recorded so far (timing of finished steps included) and wait until
        every sink wrote it."""
        step = _step.get_step()
        if step is not None:
            self.timing.on_step(step)
        spans_ok = self.tracer_provider.force_flush(timeout_millis=int(timeout_s * 1e3))
        return self.meter_provider.force_flush(timeout_millis=timeout_s * 1e3) and spans_ok

    def stats(self) -> dict[str, Any]:
        """Self-metrics: per-sink point counts, plus translation overflow."""
        out: dict[str, Any] = {w.sink.name: w.stats.as_dict() for w in self.fanout.workers}
        out["overflow_points"] = self.fanout.translator.overflow_points
        return out

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Flush and close every sink; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _step.remove_step_listener(self._on_step)
        while self in _active:
            _active.remove(self)
        self.timing.emit()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown(timeout_millis=timeout_s * 1e3)
        if self.gpu is not None:
            self.gpu.close()
