"""The embedded (in-process) pipeline: the same path the collector runs, fed by the SDK.

::

    instruments (step attribute) --> MeterProvider --> StepReader (DELTA, own thread)
        --> translate (stateless) --> Stream.admit (steps, increments, running totals)
        --> SinkSet: a worker (and optional spool) per sink
            --> TensorBoard | W&B | SwanLab | MLflow | Prometheus | OTLP (to a collector)

One reader feeds every sink, so recording cost does not grow with the number of backends, and
each batch is translated and admitted once. The OTLP exporter to a collector is a sink of the
set: with ``spool_dir`` a collector outage loses nothing and training never waits for it.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_rl import _step
from otel_rl.config import Config, default_run_name, load_config
from otel_rl.delivery import Deadline, SinkSet
from otel_rl.exporters import registry
from otel_rl.exporters.accumulate import Stream, coalesce
from otel_rl.exporters.records import Batch
from otel_rl.exporters.base import DELTA_TEMPORALITY, FAILED, KILLED, SUCCESS, Sink
from otel_rl.exporters.translate import translate_sdk
from otel_rl.semconv import RANK, RUN_ID, WORLD_SIZE
from otel_rl.timing import PhaseTimer

_log = logging.getLogger(__name__)
_active: list["Pipeline"] = []  # the pipeline otel_rl.span() and friends use: the last activated
_live: "weakref.WeakSet[Pipeline]" = weakref.WeakSet()  # shut down at interpreter exit
_crashed: list[BaseException] = []  # an exception no one caught: the run's status is "failed"


def active_pipeline() -> "Pipeline | None":
    return _active[-1] if _active else None


def open_spools(spool_dir: str | None, names: list[str], max_bytes: int, fsync: bool = True,
                rank: int | None = None) -> dict:
    """A durable spool per sink under ``spool_dir`` (``rank-<n>/`` when the rank is known, so
    ranks sharing one directory never share a spool), or {} (in-memory queues)."""
    if not spool_dir:
        return {}
    from otel_rl.spool import Spool

    root = Path(spool_dir) / f"rank-{rank}" if rank is not None else Path(spool_dir)
    spools = {}
    try:
        for name in names:
            spools[name] = Spool(root / name, max_bytes=max_bytes, fsync=fsync)
    except BaseException:
        for spool in spools.values():
            spool.close()
        raise
    return spools


class StepReader(MetricReader):
    """Collects every ``interval_s``, or sooner when :meth:`request_collect` is called, and
    hands each collect to ``on_collect`` (on the collecting thread)."""

    def __init__(self, on_collect, interval_s: float, cardinality_limit: int) -> None:
        super().__init__(preferred_temporality=DELTA_TEMPORALITY,
                         cardinality_limits={cls: cardinality_limit for cls in DELTA_TEMPORALITY})
        self._on_collect = on_collect
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-rl-reader", daemon=True)

    def start(self) -> "StepReader":
        self._thread.start()
        return self

    def _receive_metrics(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> None:
        self._on_collect(metrics_data)

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

    def stop(self, deadline: Deadline) -> None:
        """End the thread, then collect one last time (what was recorded since the last cycle)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(deadline.left())
        try:
            self.collect(timeout_millis=deadline.left() * 1e3)
        except Exception:
            _log.exception("final collect failed")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.collect(timeout_millis=timeout_millis)
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        """The SDK's shutdown: the pipeline already stopped the thread and collected."""
        self._stop.set()
        self._wake.set()


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


def _build_sinks(config: Config, tracer_provider: TracerProvider):
    """(sinks, extra SDK readers) for every enabled backend; span exporters go on the tracer."""
    sinks, readers = [], []
    pcfg = config.pipeline
    for name, backend_config in config.enabled().items():
        spec = registry.spec(name)
        span_exporter = registry.create_span_exporter(name, backend_config)
        if span_exporter is not None:
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        if spec.exporter is None:
            continue
        exporter = registry.create(name, backend_config)
        if isinstance(exporter, Sink):
            sinks.append(exporter)
        else:  # a third-party SDK MetricExporter: its own periodic reader
            readers.append(PeriodicExportingMetricReader(
                exporter, export_interval_millis=pcfg.export_interval_s * 1e3,
                cardinality_limits={cls: pcfg.cardinality_limit for cls in DELTA_TEMPORALITY}))
    return sinks, readers


class Pipeline:
    """Owns the MeterProvider, the reader, the admission state and the sinks of one process."""

    def __init__(self, config: Config | dict | str | None = None) -> None:
        self.config = load_config(config)
        pcfg = self.config.pipeline
        self.resource = resolve_resource(self.config)
        self.run_name = str(self.resource.attributes[RUN_ID])
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        sinks, readers = _build_sinks(self.config, self.tracer_provider)
        for sink in sinks:
            bind = getattr(sink, "bind_resource", None)
            if bind is not None:
                bind(dict(self.resource.attributes))
        spools = open_spools(pcfg.spool_dir, [s.name for s in sinks], pcfg.spool_max_bytes, rank=pcfg.rank)
        self.sinkset = SinkSet(sinks, pcfg.max_queue_points, self.config.sources["retry"], spools=spools).start()
        self._stream = Stream()
        self._admit_lock = threading.Lock()
        self._open_step: list = []  # points of the step still being recorded (see _on_collect)
        self.rejected_points = 0
        self.overflow_points = 0
        self.reader = StepReader(self._on_collect, pcfg.export_interval_s, pcfg.cardinality_limit)
        self.meter_provider = MeterProvider(resource=self.resource, metric_readers=[self.reader, *readers],
                                            shutdown_on_exit=False)
        self.reader.start()
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
        self._shutdown_lock = threading.Lock()
        _step.add_step_listener(self._on_step)
        _live.add(self)
        _install_exit_hooks()
        _log.info("otel-rl: run %r -> %s", self.run_name, "; ".join(self.describe()) or "no sinks")

    # -- the path ----------------------------------------------------------------------------
    def _on_collect(self, metrics_data) -> None:
        translation = translate_sdk(metrics_data)
        if translation.rejected:
            self.rejected_points += translation.rejected
            self.overflow_points += translation.overflow
            _log.warning("otel-rl: %d points could not be placed at a step: %s", translation.rejected,
                         translation.reason)
        with self._admit_lock:
            # The step the loop is still at may get more values after this collect: hold its
            # points back and send the step whole with the next collect (or at flush/shutdown).
            points = translation.batch.points
            if self._open_step:
                points = coalesce([*self._open_step, *points])
            current = _step.get_step()
            self._open_step = [p for p in points if current is not None and p.step == current]
            self._admit([p for p in points if current is None or p.step != current], translation.batch.params)

    def _admit(self, points: list, params: list = ()) -> None:
        """Admit points (in step order) and hand them to the sinks; under ``_admit_lock``."""
        batch = self._stream.admit(Batch(sorted(points, key=lambda p: (p.run, p.step)), list(params)))
        if batch:
            self.sinkset.submit(batch)

    def _release_open_step(self) -> None:
        """Send the held step too (flush and shutdown)."""
        with self._admit_lock:
            held, self._open_step = self._open_step, []
            if held:
                self._admit(held)

    @property
    def sinks(self) -> list[Sink]:
        return [w.sink for w in self.sinkset.workers]

    @property
    def workers(self):
        return self.sinkset.workers

    def describe(self) -> list[str]:
        """Where the data goes, one line per sink."""
        lines = []
        for sink in self.sinks:
            where = getattr(sink, "run_dir", None)
            lines.append(f"{sink.name}: {where(self.run_name)}" if where else sink.describe(self.run_name))
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
        deadline = Deadline(timeout_s)
        step = _step.get_step()
        if step is not None:
            self.timing.on_step(step)
        self.reader.collect(timeout_millis=timeout_s * 1e3)
        self._release_open_step()
        spans_ok = _bounded(lambda: self.tracer_provider.force_flush(int(deadline.left() * 1e3)), deadline)
        return self.sinkset.flush(deadline) and bool(spans_ok)

    def stats(self) -> dict[str, Any]:
        """Self-metrics: per-sink point counts, plus points that could not be placed at a step."""
        out: dict[str, Any] = self.sinkset.stats()
        out["overflow_points"] = self.overflow_points
        out["rejected_points"] = self.rejected_points
        return out

    def shutdown(self, timeout_s: float = 30.0, status: str | None = None) -> bool:
        """Emit the last step's timing, collect, deliver and close every sink with the run's
        ``status`` (default: ``failed`` after an uncaught exception, else ``success``); returns
        within ``timeout_s`` (+ a little) whatever the sinks do; True when everything was
        delivered. Safe to call twice."""
        with self._shutdown_lock:
            if self._closed:
                return True
            self._closed = True
        deadline = Deadline(timeout_s)
        if status is None:
            status = SUCCESS if not _crashed else KILLED if isinstance(_crashed[-1], KeyboardInterrupt) else FAILED
        _step.remove_step_listener(self._on_step)
        while self in _active:
            _active.remove(self)
        if self.gpu is not None:
            self.gpu.close()
        self.timing.emit()
        self.reader.stop(deadline)
        self._release_open_step()
        _bounded(lambda: self.tracer_provider.shutdown(), deadline)
        delivered = self.sinkset.shutdown(deadline, status)
        _bounded(lambda: self.meter_provider.shutdown(timeout_millis=deadline.left() * 1e3), deadline)
        return delivered


def _bounded(fn, deadline: Deadline):
    """Run ``fn`` on a daemon thread, waiting for it no longer than ``deadline``."""
    result: list = []

    def run() -> None:
        try:
            result.append(fn())
        except Exception:
            _log.exception("otel-rl: shutdown step failed")

    thread = threading.Thread(target=run, name="otel-rl-shutdown-step", daemon=True)
    thread.start()
    thread.join(deadline.left())
    if thread.is_alive():
        _log.error("otel-rl: a shutdown step was still running at the deadline; left behind")
        return None
    return result[0] if result else None


_hooks_installed = False


def _install_exit_hooks() -> None:
    """At interpreter exit, shut down every live pipeline (the last step's timing and queued
    spans included); an uncaught exception marks the runs failed."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        _crashed.append(value)
        previous(kind, value, tb)

    sys.excepthook = excepthook
    atexit.register(_shutdown_all)


def _shutdown_all() -> None:
    for pipeline in list(_live):
        pipeline.shutdown(pipeline.config.pipeline.shutdown_timeout_s)
