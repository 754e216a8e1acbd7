"""The embedded (in-process) pipeline: the same path the collector runs, fed by the run's tape.

::

    OTel API instruments / Logger --> Recorder tape (one append per call, see otel_rl.recording)
        --> Drainer (own thread) --> translate_records (stateless) --> Stream.admit (steps,
        increments, running totals) --> SinkSet: a worker (and optional spool) per sink
            --> TensorBoard | W&B | SwanLab | MLflow | Prometheus | OTLP (to a collector)

One drain feeds every sink, so recording cost does not grow with the number of backends, and
each batch is translated and admitted once. The OTLP exporter to a collector is a sink of the
set: with ``spool_dir`` a collector outage loses nothing and training never waits for it.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_rl import _step, recording, samples
from otel_rl.config import Config, ConfigError, default_run_name, load_config
from otel_rl.delivery import Deadline, SinkSet
from otel_rl.exporters import registry
from otel_rl.exporters.accumulate import Stream
from otel_rl.exporters.records import Batch
from otel_rl.exporters.base import FAILED, KILLED, SUCCESS, Sink
from otel_rl.exporters.translate import record_step, translate_records
from otel_rl.semconv import RANK, RUN_ID, WORLD_SIZE
from otel_rl.timing import PhaseTimer

_log = logging.getLogger(__name__)
_live: "weakref.WeakSet[Pipeline]" = weakref.WeakSet()  # shut down at interpreter exit
_crashed: list[BaseException] = []  # an exception no one caught: the run's status is "failed"


def active_pipeline() -> "Pipeline | None":
    """The pipeline of the current run (see :func:`otel_rl.recording.current`)."""
    recorder = recording.current()
    return getattr(recorder, "owner", None) if recorder is not None else None


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


class Drainer:
    """The pipeline's own thread: drains the run's tape every ``interval_s``, or sooner when
    woken (a step boundary every ``flush_every_steps`` steps, a burst filling the tape), and
    hands the records to ``on_records`` (with the observable instruments' observations on the
    timer cycles only, so sampling NVML does not follow the step rate)."""

    def __init__(self, on_records, interval_s: float) -> None:
        self._on_records = on_records
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-rl-drain", daemon=True)

    def start(self) -> "Drainer":
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        next_observe = time.monotonic() + self._interval_s
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_observe - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            observe = time.monotonic() >= next_observe
            if observe:
                next_observe = time.monotonic() + self._interval_s
            try:
                self._on_records(observe)
            except Exception:  # keep draining; one bad cycle must not end telemetry
                _log.exception("otel-rl: drain failed")

    def stop(self, deadline: Deadline) -> None:
        """End the thread (the caller drains one last time)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(deadline.left())


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


def _build_sinks(config: Config, tracer_provider: TracerProvider) -> list[Sink]:
    """A sink for every enabled backend; span exporters go on the tracer provider."""
    sinks = []
    for name, backend_config in config.enabled().items():
        spec = registry.spec(name)
        span_exporter = registry.create_span_exporter(name, backend_config)
        if span_exporter is not None:
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        if spec.exporter is None:
            continue
        exporter = registry.create(name, backend_config)
        if not isinstance(exporter, Sink):
            raise ConfigError(f"backend {name!r}: {type(exporter).__name__} is not an otel_rl Sink "
                              "(otel_rl.exporters.base.Sink: write/flush/close); plugins must implement it")
        sinks.append(exporter)
    return sinks


#: Records of the step still being recorded are held back at most this long (or this many).
HOLD_MAX_S = 60.0
HOLD_MAX_RECORDS = 200_000


class Pipeline:
    """Owns one run: its recorder (tape and step), tracer provider, admission state and sinks."""

    def __init__(self, config: Config | dict | str | None = None) -> None:
        self.config = load_config(config)
        pcfg = self.config.pipeline
        self.resource = resolve_resource(self.config)
        self.run_name = str(self.resource.attributes[RUN_ID])
        self.rank = pcfg.rank if pcfg.rank is not None else -1
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        sinks = _build_sinks(self.config, self.tracer_provider)
        for sink in sinks:
            sink.resume = pcfg.resume
            bind = getattr(sink, "bind_resource", None)
            if bind is not None:
                bind(dict(self.resource.attributes))
        spools = open_spools(pcfg.spool_dir, [s.name for s in sinks], pcfg.spool_max_bytes, rank=pcfg.rank)
        self.sinkset = SinkSet(sinks, pcfg.max_queue_points, self.config.sources["retry"],
                               spools=spools).start(open_runs=(self.run_name,))
        self._stream = Stream()
        self._drain_lock = threading.Lock()
        self._held: list[tuple] = []  # records of the step still being recorded (see _drain)
        self._held_since = 0.0
        self.rejected_points = 0
        self.rejected_reasons: dict[str, str] = {}
        self.overflow_points = 0
        self.drainer = Drainer(self._drain, pcfg.export_interval_s)
        self.recorder = recording.Recorder(wake=self.drainer.wake, on_step=self._on_step,
                                           max_records=max(pcfg.max_queue_points * 10, 1_000_000))
        self.recorder.owner = self
        self.recorder.step = _step.take_unbound_step()
        self.meter_provider = recording.MeterProvider(self.recorder)
        self.drainer.start()
        self.timing = PhaseTimer(self.recorder, self.tracer_provider.get_tracer("otel_rl"))
        self.gpu = None
        if self.config.sources["gpu"].enabled:
            from otel_rl.gpu import GpuSampler

            sampler = GpuSampler(self.get_meter("otel_rl.gpu"), self.config.sources["gpu"])
            self.gpu = sampler if sampler.start() else None
        self.system = None
        if self.config.sources["system_metrics"].enabled:
            from otel_rl.system import SystemMetrics

            system = SystemMetrics(self.meter_provider, self.config.sources["system_metrics"])
            self.system = system if system.start() else None
        self.logger_provider = samples.LoggerProvider(self.recorder)
        self.dropped_sample_rows = 0
        self._pending_steps = 0
        self._closed = False
        self._shutdown_lock = threading.Lock()
        self._warned: set[str] = set()
        self.activate()  # the newest run is the current one (otel_rl.set_step, spans, global meters)
        _live.add(self)
        _install_exit_hooks()
        _log.info("otel-rl: run %r -> %s", self.run_name, "; ".join(self.describe()) or "no sinks")

    # -- the path ----------------------------------------------------------------------------
    def _drain(self, observe: bool = False, release: bool = False) -> None:
        """Tape -> points -> admission -> sinks. The step the loop is still at may get more
        values (a histogram's samples, a counter's increments): its records are held back and
        sent whole with a later drain (at most ``HOLD_MAX_S``), or at flush/shutdown."""
        with self._drain_lock:
            records = self.recorder.drain()
            if observe:
                records.extend(self.recorder.observe())
            if self._held:
                records = self._held + records
                self._held = []
            current = self.recorder.step
            if current is not None and not release and records:
                held, rest = [], []
                for r in records:
                    (held if record_step(r) == current else rest).append(r)
                if held and (len(held) < HOLD_MAX_RECORDS and (
                        not self._held_since or time.monotonic() - self._held_since < HOLD_MAX_S)):
                    self._held = held
                    self._held_since = self._held_since or time.monotonic()
                    records = rest
                else:
                    self._held_since = 0.0
            else:
                self._held_since = 0.0
            if not records:
                return
            translation = translate_records(records, self.run_name, self.rank)
            if translation.rejected or translation.reasons:
                self._report(translation)
            batch = translation.batch
            batch = self._stream.admit(Batch(batch.points, batch.params))
            print_rows = self.config.sources["samples"].print_rows
            if print_rows:
                for p in batch.points:
                    if p.kind == "table":
                        samples.print_table(p.run, p.name, p.step, p.value, print_rows)
            if batch:
                self.sinkset.submit(batch)

    def _report(self, translation) -> None:
        self.rejected_points += translation.rejected
        for kind, reason in translation.reasons.items():
            if kind not in self._warned and len(self._warned) < 10_000:
                self._warned.add(kind)
                self.rejected_reasons.setdefault(kind, reason)
                _log.warning("otel-rl: %s (reported once; counted in stats()['rejected_points'])", reason)

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
        """A meter of this run: its instruments record at this run's step, whatever is current."""
        return self.meter_provider.get_meter(name, version)

    def activate(self, only_if_none: bool = False, context_only: bool = False) -> None:
        """Make this the current run here (see :func:`otel_rl.recording.current`): the global
        meter provider, :func:`otel_rl.set_step` and :func:`otel_rl.span` use it."""
        if self._closed or (only_if_none and recording.current() is not None):
            return
        recording.activate(self.recorder, context_only=context_only)

    def get_tracer(self, name: str = "otel_rl"):
        return self.tracer_provider.get_tracer(name)

    def set_step(self, step: int) -> None:
        """Set this run's step (``otel_rl.set_step`` sets the current run's)."""
        self.recorder.set_step(_step.check_step(step))

    @property
    def step(self) -> int | None:
        return self.recorder.step

    def log_hyperparams(self, params) -> None:
        """Record the run's hyperparameters (nested dicts flattened with ``/``)."""
        self.recorder.put(("p", None, dict(params), None, time.time_ns()))

    def log_samples(self, rows: Any, step: int | None = None, name: str = samples.DEFAULT_NAME) -> None:
        """Record ``rows`` (a list of row dicts, a dict of equal-length columns, a DataFrame) as
        one table at ``step`` (default: the current step); see :mod:`otel_rl.samples`."""
        if step is not None:
            step = _step.check_step(step)
        cfg = self.config.sources["samples"]
        table, dropped = samples.to_table(rows, cfg.max_rows, cfg.max_chars)
        if dropped:
            self.dropped_sample_rows += dropped
            if "sample_rows" not in self._warned:
                self._warned.add("sample_rows")
                _log.warning("otel-rl: log_samples(%r): %d rows past samples.max_rows=%d dropped (warned "
                             "once; counted in stats()['dropped_sample_rows'])", name, dropped, cfg.max_rows)
        self.recorder.put((samples.ROWS, str(name), table, self.recorder.step if step is None else step,
                           time.time_ns(), None))

    def _on_step(self, step: int) -> None:
        self.timing.on_step(step)
        self._pending_steps += 1
        if self._pending_steps >= self.config.pipeline.flush_every_steps:
            self._pending_steps = 0
            self.drainer.wake()

    def collect_now(self) -> None:
        """Drain and queue everything recorded so far (on the calling thread)."""
        self._pending_steps = 0
        self._drain()

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Export everything recorded so far (timing of finished steps included) and wait until
        every sink wrote it."""
        deadline = Deadline(timeout_s)
        step = self.recorder.step
        if step is not None:
            self.timing.on_step(step)
        self._drain(observe=True, release=True)
        spans_ok = _bounded(lambda: self.tracer_provider.force_flush(int(deadline.left() * 1e3)), deadline)
        return self.sinkset.flush(deadline) and bool(spans_ok)

    def stats(self) -> dict[str, Any]:
        """Self-metrics: per-sink point counts, plus what could not be recorded or placed."""
        out: dict[str, Any] = self.sinkset.stats()
        out["overflow_points"] = self.overflow_points
        out["rejected_points"] = self.rejected_points
        out["dropped_records"] = self.recorder.dropped
        out["throttled_records"] = self.recorder.throttled
        out["dropped_sample_rows"] = self.dropped_sample_rows
        return out

    def shutdown(self, timeout_s: float = 30.0, status: str | None = None) -> bool:
        """Emit the last step's timing, drain, deliver and close every sink with the run's
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
        self.timing.emit()
        self.drainer.stop(deadline)
        recording.deactivate(self.recorder)
        self._drain(observe=True, release=True)
        if self.gpu is not None:
            self.gpu.close()
        if self.system is not None:
            self.system.close()
        _bounded(lambda: self.tracer_provider.shutdown(), deadline)
        return self.sinkset.shutdown(deadline, status)


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
