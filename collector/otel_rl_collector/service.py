"""The collector service: decode OTLP, translate, admit, reduce across ranks, fan out to sinks.

Shaped like an OTel Collector component: :func:`create` (factory from a validated config),
:meth:`Collector.start`, :meth:`Collector.shutdown`. The receivers (HTTP, gRPC) only move
bytes; every decision lives in :meth:`Collector.ingest_metrics`.

The path is the embedded pipeline's (translate, :class:`~otel_rl_collector.router.Router`,
:class:`~otel_rl.route.delivery.SinkSet`), with two additions:

- **Admission.** A request is admitted once: a batch already seen (``otel_rl.sender.id`` +
  ``otel_rl.batch.id``, sent by otel-rl's OTLP sink) is acknowledged and not counted again.
  Nothing is counted before admission, so a request refused with 503 leaves no trace.
- **Durable ingress** (with ``spool.dir``): an admitted request is fsynced to ``_ingress``
  before it is acknowledged. One thread feeds it through the router in order and hands each
  numbered emission to every sink's spool; the router's state is checkpointed with the ingress
  position. After a crash the router is restored and the ingress replayed from the checkpoint;
  sinks skip emissions they already hold. Acknowledged data is delivered exactly once.
"""

from __future__ import annotations

import base64
import errno
import logging
import operator
import pickle
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb

from otel_rl.model.codec import load_state
from otel_rl.model.decode import proto_attributes, translate_logs, translate_proto
from otel_rl.model.records import Batch
from otel_rl.model.semconv import RANK, WORLD_SIZE
from otel_rl.model.translate import rank_of, run_of
from otel_rl.route.deadline import Deadline
from otel_rl.route.delivery import SinkSet
from otel_rl.route.engine import open_spools
from otel_rl.sinks import registry
from otel_rl_collector.config import CollectorConfig, load_collector_config
from otel_rl_collector.gate import CollectorStats, Gate
from otel_rl_collector.reduce import Reducer
from otel_rl_collector.router import Router
from otel_rl_collector.traces import TraceForwarder
from otel_rl_collector.wire import RequestError

_log = logging.getLogger(__name__)
_RUN_RANK = operator.attrgetter("run", "rank")
#: Span requests waiting to be forwarded (past it: 503), and tries per request.
#: Checkpoint the router state at least every this many ingress records.
CHECKPOINT_RECORDS = 2_000


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.stats = CollectorStats()
        self.gate = Gate(config.auth.token(), config.limits, self.stats)
        self.check_auth, self.decode_body = self.gate.check_auth, self.gate.decode_body
        self.authorized = self.gate.authorized
        self.reducer = Reducer(config.reduce.rules.items(), gauge_op=config.reduce.gauge,
                               counter_op=config.reduce.counter, timeout_s=config.reduce.timeout_s,
                               max_pending=config.reduce.max_pending)
        self.router = Router(self.reducer)
        self.traces: TraceForwarder | None = None
        self._stop = threading.Event()
        sinks = []
        for name, cfg in config.enabled_backends().items():
            if name == "mlflow_traces":
                self.traces = TraceForwarder(registry.create_span_exporter(name, cfg), self.stats, self._stop)
            else:
                sinks.append(registry.create(name, cfg))
        spool = config.spool
        spools = open_spools(spool.dir, [s.name for s in sinks], spool.max_bytes, spool.fsync)
        self.sinkset = SinkSet(sinks, config.limits.max_queue_points, config.retry, spools=spools)
        self._lock = threading.Lock()  # admission (and, without a spool, the whole router)
        self.ingress = None
        if spool.dir:
            from otel_rl.route.spool import Spool

            self.ingress = Spool(Path(spool.dir) / "_ingress", spool.max_bytes, fsync=spool.fsync)
        self._receivers: list = []
        from otel_rl_collector.selfmetrics import SelfMetrics

        self.selfmetrics = SelfMetrics(self)
        if not self.config.auth.metrics:  # one scrape of the metrics port gets the collector's health too
            for worker in self.sinkset.workers:
                if worker.sink.name == "prometheus":
                    worker.sink.also_serve = self.selfmetrics.render
        self._abort = threading.Event()  # the shutdown deadline passed: the router thread stops now
        self._drained = threading.Event()
        self._thread = threading.Thread(target=self._ingress_loop if self.ingress else self._expire_loop,
                                        name="otel-rl-router", daemon=True)

    @property
    def workers(self):
        return self.sinkset.workers

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Collector:
        from otel_rl_collector.receivers import start_receivers

        if self.ingress is not None:
            self._recover()
        self.sinkset.start()
        self._thread.start()
        if self.traces is not None:
            self.traces.start()
        self._receivers.extend(start_receivers(self))
        _log.info("otel-rl collector: %s -> %s", ", ".join(r.describe() for r in self._receivers),
                  ", ".join(w.sink.name for w in self.workers) or "no sinks")
        return self

    @property
    def http_port(self) -> int | None:
        return next((r.port for r in self._receivers if r.kind == "http"), None)

    @property
    def grpc_port(self) -> int | None:
        return next((r.port for r in self._receivers if r.kind == "grpc"), None)

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Stop receiving, emit every pending step, deliver what is queued and close the sinks,
        all within ``timeout_s`` (what is left stays in the spools). True when all was delivered."""
        deadline = Deadline(timeout_s)
        queued = sum(w.stats.queued_points for w in self.workers)
        _log.info("collector: shutting down; delivering %d queued points within %.0f s", queued, timeout_s)
        for receiver in self._receivers:
            receiver.stop()
        self._receivers.clear()
        self._stop.set()
        if self._thread.is_alive() and not self._drained.wait(deadline.left()):
            self._abort.set()
            _log.error("collector: shutdown deadline reached while processing the ingress; the rest "
                       "is replayed at the next start")
        if self.ingress is None:
            with self._lock:
                self._emit(self.router.process(Batch(meta={"tick": time.time(), "all": True})))
        delivered = self.sinkset.shutdown(deadline)
        if self.traces is not None:
            self.traces.shutdown(min(deadline.left(), 10.0))
        self.selfmetrics.shutdown()
        if self.ingress is not None:
            self._thread.join(1.0)
            if self.ingress.read(self.ingress.cursor) is not None:  # admitted, never processed
                delivered = False
                _log.warning("collector: stopped with acknowledged requests not yet processed; they are kept "
                             "in %s and replayed at the next start", self.ingress.dir)
            self.ingress.close()
        self._report_left(delivered)
        return delivered

    def _report_left(self, delivered: bool) -> None:
        """One line on what the shutdown left: nothing, or where each sink's rest is."""
        if delivered:
            _log.info("collector: stopped; everything acknowledged was delivered")
            return
        for w in self.workers:
            left = w.stats.queued_points
            if not left:
                continue
            if w.durable:
                _log.warning("collector: stopped; %s: %d acknowledged points kept in its spool %s, sent at "
                             "the next start", w.sink.name, left, w.spool.dir)
            else:
                _log.error("collector: stopped; %s: %d acknowledged points NOT delivered (no spool: set "
                           "spool.dir to keep them across a restart)", w.sink.name, left)

    def _expire_loop(self) -> None:
        """Without a spool: expire waiting groups on a timer."""
        while not self._stop.wait(0.2):
            now = time.time()
            with self._lock:
                if self.reducer.due(now):
                    self._emit(self.router.process(Batch(meta={"tick": now})))
        self._drained.set()

    # -- durable ingress: one thread, in order, checkpointed with the router state ----------------
    def _recover(self) -> None:
        state = (self.ingress.state or {}).get("router")
        if state:
            try:
                self.router.restore(load_state(base64.b64decode(state)))
            except Exception:
                _log.exception("collector: could not restore the router checkpoint; starting empty")
        replay = 0
        for record in self.ingress:  # admitted but not yet checkpointed: their ids are taken
            self.router.remember(tuple(i) for i in record.meta.get("ids", ()))
            replay += 1
        if replay:
            _log.info("collector: replaying %d admitted requests from %s", replay, self.ingress.dir)
        if self.reducer.pending or replay:  # downtime does not count against the ranks' timeout
            self.ingress.append(Batch(meta={"resume": time.time()}))

    def _ingress_loop(self) -> None:
        cursor, since, last = self.ingress.cursor, 0, time.monotonic()
        interval = self.config.spool.checkpoint_interval_s
        while not self._abort.is_set():
            try:
                item = self.ingress.read(cursor)
                if item is None:
                    if since and time.monotonic() - last >= interval:
                        self._checkpoint(cursor)
                        since, last = 0, time.monotonic()
                    now = time.time()
                    if self._stop.is_set():
                        # Everything admitted is processed. Groups still waiting for ranks stay
                        # in the checkpoint and complete after the next start.
                        self._checkpoint(cursor)
                        break
                    if self.reducer.due(now):
                        self._append_tick(now)
                    else:
                        self._stop.wait(0.2)
                    continue
                batch, after = item
                out = self.router.process(batch)
                if not self._emit(out):
                    break  # stopping with a sink refusing: the checkpoint stays before this record
                cursor, since = after, since + 1
                if since >= CHECKPOINT_RECORDS or time.monotonic() - last >= interval:
                    took = self._checkpoint(cursor)
                    # a big router state is not snapshotted more than ~5% of the time
                    since, last = 0, time.monotonic() + max(0.0, 20 * took - interval)
            except Exception:  # a bug or a full disk: report and retry, never die silently
                self.stats.ingress_errors += 1
                _log.exception("collector: ingress error (retrying)")
                if self._stop.wait(1.0):
                    break
        self._drained.set()

    def _append_tick(self, now: float) -> None:
        if not self.ingress.append(Batch(meta={"tick": now})):
            _log.error("collector: ingress spool full; cannot record a timeout tick")
            self._stop.wait(0.5)

    def _checkpoint(self, cursor) -> float:
        """Checkpoint the ingress position with the router state; the seconds it took."""
        started = time.monotonic()
        state = base64.b64encode(pickle.dumps(self.router.state(), protocol=pickle.HIGHEST_PROTOCOL)).decode()
        self.ingress.ack(cursor, {"router": state})
        return time.monotonic() - started

    def _emit(self, out: Batch) -> bool:
        """Hand one emission to every sink. With a spool, a sink whose spool is full is retried
        until it takes it (the ingress holds the rest); False when the shutdown deadline passed
        first. Without one, a refusal is a counted drop."""
        if not out:
            return True
        durable = self.ingress is not None
        refused = self.sinkset.submit_each(out, full_disk_refuses=durable)
        while refused and durable:
            if self._abort.is_set():
                return False
            time.sleep(0.2)
            refused = self.sinkset.submit_each(out, refused, full_disk_refuses=True)
        return not refused

    # -- the request path ---------------------------------------------------------------------
    def overloaded(self) -> str | None:
        """Why new data is refused right now (None: it is not)."""
        limits = self.config.limits
        for w in self.workers:
            if w.broken:
                return f"sink {w.sink.name} is failing ({w.broken})"
            if w.durable and w.spooled_bytes >= self.config.spool.max_bytes * limits.overload_fraction:
                return f"sink {w.sink.name}'s spool is full"
            if not w.durable and w.stats.queued_points >= limits.max_queue_points * limits.overload_fraction:
                return f"sink {w.sink.name}'s queue is full"
        ingress_full = self.config.spool.max_bytes * limits.overload_fraction
        if self.ingress is not None and self.ingress.pending_bytes >= ingress_full:
            return "the ingress spool is full"
        return None

    def ready(self) -> tuple[bool, dict]:
        """(ready, details) for ``/ready``: not ready while a sink cannot write (retrying or
        broken) or the router is down, so a load balancer sends new data elsewhere."""
        ok, details = self.health()
        failing = details["failing_sinks"]
        ready = ok and not failing
        details["status"] = "ready" if ready else "not ready"
        return ready, details

    def health(self) -> tuple[bool, dict]:
        """(healthy, details) for ``/health``: unhealthy while a sink or the ingress is broken."""
        broken = {w.sink.name: w.broken for w in self.workers if w.broken}
        alive = self._thread.is_alive() or self._stop.is_set()
        ok = not broken and alive
        return ok, {"status": "ok" if ok else "degraded", "broken_sinks": broken,
                    "failing_sinks": {w.sink.name: w.failing for w in self.workers if w.failing},
                    "router_alive": alive}

    def _new_resources(self, request, field: str = "resource_metrics") -> list[tuple[str, str]]:
        """Drop resource blocks already admitted (a resend); the ids of the new ones."""
        ids, duplicates = self.router.new_resources(request, field)
        self.stats.duplicate_batches += duplicates
        return ids

    def _admissible(self, payload: bytes, content_type: str, message_cls):
        """A data request, counted and parsed; refused with 503 while the collector is overloaded."""
        self.stats.requests += 1
        request = self.gate.parse(payload, content_type, message_cls)
        why = self.overloaded()
        if why:
            self.stats.reject("overloaded")
            raise RequestError(503, f"{why}; retry later", retry_after_s=2.0)
        return request

    def ingest_metrics(self, payload: bytes, content_type: str) -> mpb.ExportMetricsServiceResponse:
        request = self._admissible(payload, content_type, mpb.ExportMetricsServiceRequest)
        world = {}
        for rm in request.resource_metrics:
            resource = proto_attributes(rm.resource.attributes)
            size = rank_of({RANK: resource.get(WORLD_SIZE)})  # int or digit string (env)
            if size > 0:
                world[run_of(resource)] = size
        # translated outside the admission lock (translation is stateless): one client's big
        # request does not hold every other client for its whole translation
        translation = translate_proto(request)
        with self._lock:
            before = len(request.resource_metrics)
            ids = self._new_resources(request)
            if len(request.resource_metrics) != before:  # a resend: blocks dropped, translate what is left
                translation = translate_proto(request)
            self._check_ranks(translation, world)
            self._admit(translation, world, ids)
            self.stats.received_points += translation.batch.point_count()
            self.stats.rejected_points += translation.rejected
        response = mpb.ExportMetricsServiceResponse()
        if translation.reasons:  # rejected points, or warnings (a bad step placed at the latest)
            response.partial_success.rejected_data_points = translation.rejected
            response.partial_success.error_message = translation.reason
        return response

    def _check_ranks(self, translation, world: dict) -> None:
        """Points of a rank outside its run's world size are refused (a client claiming ranks
        0..K-1 of a world of 2 would otherwise make every late step re-reduced K times)."""
        columns = translation.batch.gauge_columns()  # one sender: kept or refused whole
        points = [] if columns is not None else translation.batch.points
        senders = {(columns.run, columns.rank)} if columns is not None else set(map(_RUN_RANK, points))
        size_of = {run: world.get(run) or self.router.world.get(run) for run, _ in senders}
        if all(rank < 0 or not size_of[run] or rank < size_of[run] for run, rank in senders):
            return
        kept = [p for p in points if p.rank < 0 or not size_of[p.run] or p.rank < size_of[p.run]]
        bad = translation.batch.point_count() - len(kept)
        if bad:
            translation.batch.points = kept
            translation.reject(bad, "rank", f"{bad} points of a rank outside its run's world size "
                               f"({', '.join(f'{r}: {s}' for r, s in list(size_of.items())[:3])})")

    def _admit(self, translation, world: dict, ids: list) -> None:
        """Under the lock: an admitted request, durable first (then acknowledged), or processed."""
        batch = translation.batch
        batch.meta = {"t": time.time(), "world": world, "ids": ids}
        if self.ingress is not None:
            # Durable first, then acknowledged: the router thread takes it from here.
            try:
                stored = self.ingress.append(batch)
            except OSError as exc:  # a full disk is the server's state, not the request's: retry later
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                stored = False
            if not stored:
                self.stats.reject("overloaded")
                raise RequestError(503, "the collector's spool is full or its disk has no room; retry later",
                                   retry_after_s=10.0)
            self.router.remember(ids)
        else:
            self._emit(self.router.process(batch))

    def ingest_logs(self, payload: bytes, content_type: str) -> lpb.ExportLogsServiceResponse:
        """Samples and texts as OTLP log records (see :func:`otel_rl.model.decode.translate_logs`):
        the same admission, durability and sinks as metrics; not reduced across ranks."""
        request = self._admissible(payload, content_type, lpb.ExportLogsServiceRequest)
        limits = self.config.limits

        def translate():
            return translate_logs(request, max_records=limits.max_log_records,
                                  max_columns=limits.max_table_columns, max_cells=limits.max_table_cells,
                                  max_media_bytes=limits.max_media_bytes)

        translation = translate()  # outside the admission lock, as for metrics
        with self._lock:
            before = len(request.resource_logs)
            ids = self._new_resources(request, "resource_logs")
            if len(request.resource_logs) != before:
                translation = translate()
            self._admit(translation, {}, ids)
            self.stats.received_log_records += sum(
                len(p.value.rows) if p.kind == "table" else 1 for p in translation.batch.points)
            self.stats.rejected_log_records += translation.rejected
        response = lpb.ExportLogsServiceResponse()
        if translation.reasons:
            response.partial_success.rejected_log_records = translation.rejected
            response.partial_success.error_message = translation.reason
        return response

    def ingest_traces(self, payload: bytes, content_type: str) -> tpb.ExportTraceServiceResponse:
        self.stats.requests += 1
        request = self.gate.parse(payload, content_type, tpb.ExportTraceServiceRequest)
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.stats.received_spans += spans
        response = tpb.ExportTraceServiceResponse()
        if self.traces is not None and spans:
            self.traces.offer(request, spans, len(payload))  # off the request path (traces.py)
        return response

    def self_metrics(self) -> dict:
        s = self.stats
        return {"requests": s.requests, "rejected_requests": s.rejected_requests,
                "received_points": s.received_points, "rejected_points": s.rejected_points,
                "duplicate_batches": s.duplicate_batches, "ingress_errors": s.ingress_errors,
                "received_spans": s.received_spans, "forwarded_spans": s.forwarded_spans,
                "dropped_spans": s.dropped_spans,
                "received_log_records": s.received_log_records, "rejected_log_records": s.rejected_log_records,
                "pending_groups": self.reducer.pending, "late_points": self.reducer.late_points,
                "partial_groups": self.reducer.partial_groups, "rejected_by_reason": dict(s.by_reason),
                "sinks": self.sinkset.stats()}


def create(config: CollectorConfig | Mapping | str | Path | None = None) -> Collector:
    """The collector for ``config`` (a :class:`CollectorConfig`, dict or YAML path), not started."""
    if not isinstance(config, CollectorConfig):
        config = load_collector_config(config)
    return Collector(config)
