"""The embedded (in-process) pipeline: the same path the collector runs, fed by the run's tape.

::

    OTel API instruments / Logger --> Recorder tape (one append per call, see otel_rl.api.recording)
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
import os
import sys
import threading
import time
import weakref
from typing import Any

from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_rl.api import current, meter, recording, samples
from otel_rl.api import step as _step
from otel_rl.api.timing import PhaseTimer
from otel_rl.config import Config, load_config
from otel_rl.model.semconv import RANK, RUN_ID, WORLD_SIZE
from otel_rl.model.steps import check_step
from otel_rl.model.tables import DEFAULT_NAME, to_table
from otel_rl.model.tape import ROWS
from otel_rl.route.deadline import Deadline
from otel_rl.runtime.route import Route, start_route
from otel_rl.settings import default_run_name
from otel_rl.sinks import registry
from otel_rl.sinks.base import FAILED, KILLED, SUCCESS

_log = logging.getLogger(__name__)
_live: weakref.WeakSet[Pipeline] = weakref.WeakSet()  # shut down at interpreter exit
_crashed: list[BaseException] = []  # an exception no one caught: the run's status is "failed"


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

    def start(self) -> Drainer:
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


class Pipeline:
    """Owns one run: its recorder (tape and step), tracer provider, and the engine (in the
    helper process, or in this one with ``pipeline.helper: false``)."""

    def __init__(self, config: Config | dict | str | None = None) -> None:
        self.config = load_config(config)
        self.config.check_local_dirs()
        pcfg = self.config.pipeline
        self.resource = resolve_resource(self.config)
        self.run_name = str(self.resource.attributes[RUN_ID])
        self.rank = pcfg.rank if pcfg.rank is not None else -1
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        enabled = self.config.enabled()
        for name, backend_config in enabled.items():
            span_exporter = registry.create_span_exporter(name, backend_config)
            if span_exporter is not None:
                self.tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        self._route: Route = start_route(self.config, self.run_name, self.rank, dict(self.resource.attributes))
        self._drain_lock = threading.Lock()
        self.drainer = Drainer(self._drain, pcfg.export_interval_s)
        self.recorder = recording.Recorder(wake=self.drainer.wake, on_step=self._on_step,
                                           max_records=max(pcfg.max_queue_points * 10, 1_000_000))
        current.register(self.recorder, self)
        self.recorder.step = _step.take_unbound_step()
        for record in recording.instrument_info():  # instruments created before this run
            self.recorder.put_quiet(record)
        self.meter_provider = meter.MeterProvider(self.recorder)
        self.drainer.start()
        self.timing = PhaseTimer(self.recorder, self.tracer_provider.get_tracer("otel_rl"))
        self.gpu = None
        if self.config.sources["gpu"].enabled:
            from otel_rl.sources.gpu import GpuSampler

            sampler = GpuSampler(self.get_meter("otel_rl.gpu"), self.config.sources["gpu"])
            self.gpu = sampler if sampler.start() else None
        self.system = None
        if self.config.sources["system_metrics"].enabled:
            from otel_rl.sources.system import SystemMetrics

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
        _log.info("otel-rl: run %r -> %s", self.run_name, "; ".join(self._route.describe(wait=False)) or "no sinks")

    # -- the path ----------------------------------------------------------------------------
    def _drain(self, observe: bool = False, release: bool = False) -> None:
        """Tape -> the route (see :mod:`otel_rl.runtime.route`), in frames of the size it takes."""
        with self._drain_lock:
            recorder, route = self.recorder, self._route
            if route.backlogged and not release:
                route.tick(recorder.step, time.monotonic())  # records stay on the tape, whose bounds apply
                return
            limit = route.frame_records
            while True:
                records = recorder.drain(limit)
                if observe:
                    records.extend(recorder.observe())
                    observe = False
                more = limit is not None and len(records) >= limit and len(recorder.tape) > 0
                if records or release:
                    route.send(records, recorder.step, release and not more, time.monotonic())
                else:
                    route.tick(recorder.step, time.monotonic())
                if not more or (route.backlogged and not release):
                    return

    @property
    def helper_pid(self) -> int | None:
        """The helper process's pid (None: the engine runs in this process)."""
        return self._route.pid()

    @property
    def sinks(self) -> list:
        """The run's sinks (in helper mode, :class:`~otel_rl.runtime.remote.RemoteSink` descriptions)."""
        return self._route.sinks

    @property
    def sinkset(self):
        engine = getattr(self._route, "engine", None)
        if engine is None:
            raise AttributeError("the sinks run in the helper process; set pipeline.helper: false to reach them")
        return engine.sinkset

    @property
    def workers(self):
        return self.sinkset.workers

    def describe(self) -> list[str]:
        """Where the data goes, one line per sink."""
        return self._route.describe()

    def get_meter(self, name: str, version: str | None = None):
        """A meter of this run: its instruments record at this run's step, whatever is current."""
        return self.meter_provider.get_meter(name, version)

    def activate(self, only_if_none: bool = False, context_only: bool = False) -> None:
        """Make this the current run here (see :func:`otel_rl.api.recording.current`): the global
        meter provider, :func:`otel_rl.set_step` and :func:`otel_rl.span` use it."""
        if self._closed or (only_if_none and recording.current() is not None):
            return
        recording.activate(self.recorder, context_only=context_only)

    def get_tracer(self, name: str = "otel_rl"):
        return self.tracer_provider.get_tracer(name)

    def set_step(self, step: int) -> None:
        """Set this run's step (``otel_rl.set_step`` sets the current run's)."""
        self.recorder.set_step(check_step(step))

    @property
    def step(self) -> int | None:
        return self.recorder.step

    def log_hyperparams(self, params) -> None:
        """Record the run's hyperparameters (nested dicts flattened with ``/``)."""
        self.recorder.put(("p", None, dict(params), None, time.time_ns()))

    def log_samples(self, rows: Any, step: int | None = None, name: str = DEFAULT_NAME) -> None:
        """Record ``rows`` (a list of row dicts, a dict of equal-length columns, a DataFrame) as
        one table at ``step`` (default: the current step); see :mod:`otel_rl.api.samples`."""
        if step is not None:
            step = check_step(step)
        cfg = self.config.sources["samples"]
        table, dropped = to_table(rows, cfg.max_rows, cfg.max_chars)
        if dropped:
            self.dropped_sample_rows += dropped
            if "sample_rows" not in self._warned:
                self._warned.add("sample_rows")
                _log.warning("otel-rl: log_samples(%r): %d rows past samples.max_rows=%d dropped (warned "
                             "once; counted in otel_rl.get_pipeline().stats()['dropped_sample_rows'])",
                             name, dropped, cfg.max_rows)
        self.recorder.put((ROWS, str(name), table, self.recorder.step if step is None else step,
                           time.time_ns(), None))

    def _on_step(self, step: int) -> None:
        self.timing.on_step(step)
        self._pending_steps += 1
        if self._pending_steps >= self.config.pipeline.flush_every_steps:
            self._pending_steps = 0
            self.drainer.wake()

    def collect_now(self) -> None:
        """Drain and hand over everything recorded so far (on the calling thread)."""
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
        return self._route.flush(deadline) and bool(spans_ok)

    def stats(self) -> dict[str, Any]:
        """Self-metrics: per-sink point counts, plus what could not be recorded or placed."""
        out = self._route.stats()
        out["dropped_records"] = self.recorder.dropped
        out["throttled_records"] = self.recorder.throttled
        out["dropped_sample_rows"] = self.dropped_sample_rows
        out["records_after_close"] = self.recorder.after_close
        out["ignored_log_records"] = self.recorder.ignored_log_records
        out["refused_media"] = self.recorder.refused_media
        return out

    def shutdown(self, timeout_s: float | None = None, status: str | None = None) -> bool:
        """Emit the last step's timing, drain, deliver and close every sink with the run's
        ``status`` (default: ``failed`` after an uncaught exception, else ``success``); returns
        within ``timeout_s`` (+ a little) whatever the sinks do; True when everything was
        delivered. Safe to call twice."""
        with self._shutdown_lock:
            if self._closed:
                return True
            self._closed = True
        deadline = Deadline(self.config.pipeline.shutdown_timeout_s if timeout_s is None else timeout_s)
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
        try:
            _bounded(lambda: self.tracer_provider.shutdown(), deadline)
            return self._route.close(status, deadline)
        except KeyboardInterrupt:  # Ctrl-C during the exit flush: one line, not a traceback
            print(f"otel-rl: interrupted while delivering run {self.run_name!r}; {self._route.interrupt()}",
                  file=sys.stderr, flush=True)
            return False


def _closed_in_child() -> None:
    """A forked child does not run its parent's runs (no drain thread, no helper): closed there,
    so nothing it inherited is emitted or shut down twice (recording explains what it records)."""
    for pipeline in list(_live):
        pipeline._closed = True


os.register_at_fork(after_in_child=_closed_in_child)


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
