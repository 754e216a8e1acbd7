"""The collector service: decode OTLP, translate, reduce across ranks, fan out to sinks.

Shaped like an OTel Collector component: :func:`create` (factory from a validated config),
:meth:`Collector.start`, :meth:`Collector.shutdown`. The receivers (HTTP, gRPC) only move
bytes; every decision lives in :meth:`Collector.ingest`.
"""

from __future__ import annotations

import hmac
import logging
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb

from otel_rl.delivery import SinkWorker
from otel_rl.pipeline import open_spool
from otel_rl.exporters import registry
from otel_rl.exporters.records import Batch, RunParams
from otel_rl.exporters.translate import Translator, proto_attributes, rank_of, run_of
from otel_rl.semconv import RANK, WORLD_SIZE

from otel_rl_collector import wire
from otel_rl_collector.config import CollectorConfig, load_collector_config
from otel_rl_collector.reduce import Reducer

_log = logging.getLogger(__name__)
_WORLD = "\x00world"  # ingress records carry the world sizes in a params entry of this run name


class RequestError(Exception):
    """A request the collector refuses; ``status`` is the HTTP code (mapped to gRPC codes)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass
class CollectorStats:
    requests: int = 0
    rejected_requests: int = 0
    received_points: int = 0
    rejected_points: int = 0
    received_spans: int = 0
    forwarded_spans: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected_requests += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.stats = CollectorStats()
        self._token = config.auth.token()
        self._translator = Translator()
        self._translate_lock = threading.Lock()
        limits = config.limits
        self.reducer = Reducer(config.reduce.rules.items(), gauge_op=config.reduce.gauge,
                               counter_op=config.reduce.counter, timeout_s=config.reduce.timeout_s)
        self.workers: list[SinkWorker] = []
        self.trace_sink = None
        for name, cfg in config.enabled_backends().items():
            if name == "mlflow_traces":
                self.trace_sink = registry.create_span_exporter(name, cfg)
            else:
                spool = open_spool(config.spool.dir, name, config.spool.max_bytes, config.spool.fsync)
                self.workers.append(SinkWorker(registry.create(name, cfg), limits.max_queue_points, spool=spool))
        self._world_size: dict[str, int] = {}
        self.ingress = None
        if config.spool.dir:
            from otel_rl.spool import Spool

            # Received, not yet reduced points: durable before the OTLP request is acknowledged.
            self.ingress = Spool(Path(config.spool.dir) / "_ingress", config.spool.max_bytes,
                                 fsync=config.spool.fsync)
            self._ingress_wake = threading.Condition()
            self._ingress_read = self.ingress.cursor  # where the ingress thread reads next
            self._ingress_before: dict[int, tuple[int, int]] = {}  # record number -> its start
            self._ingress_thread = threading.Thread(target=self._ingress_loop, name="otel-rl-ingress", daemon=True)
        self._receivers: list = []
        self._stop = threading.Event()
        self._expiry = threading.Thread(target=self._expire_loop, name="otel-rl-reduce", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Collector":
        from otel_rl_collector.receivers import GrpcReceiver, HttpReceiver

        receivers = self.config.receivers
        if receivers.http.enabled:
            self._receivers.append(HttpReceiver(self, receivers.http, self.config.tls).start())
        if receivers.grpc.enabled:
            self._receivers.append(GrpcReceiver(self, receivers.grpc, self.config.tls).start())
        self._expiry.start()
        if self.ingress is not None:
            self._ingress_thread.start()
        _log.info("otel-rl collector: %s -> %s", ", ".join(r.describe() for r in self._receivers),
                  ", ".join(w.sink.name for w in self.workers) or "no sinks")
        return self

    @property
    def http_port(self) -> int | None:
        return next((r.port for r in self._receivers if r.kind == "http"), None)

    @property
    def grpc_port(self) -> int | None:
        return next((r.port for r in self._receivers if r.kind == "grpc"), None)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop receiving, emit every pending step, deliver what is queued, close the sinks."""
        for receiver in self._receivers:
            receiver.stop()
        self._receivers.clear()
        self._stop.set()
        if self._expiry.is_alive():
            self._expiry.join(5)
        if self.ingress is not None and self._ingress_thread.is_alive():
            with self._ingress_wake:
                self._ingress_wake.notify_all()
            self._ingress_thread.join(30)
        self._submit(self.reducer.expire(everything=True))
        if self.ingress is not None:
            self._ack_ingress()
            self.ingress.close()
        for worker in self.workers:
            worker.stop(timeout_s)
            worker.sink.shutdown()
        if self.trace_sink is not None:
            self.trace_sink.shutdown()

    def _expire_loop(self) -> None:
        while not self._stop.wait(0.2):
            self._submit(self.reducer.expire())

    # -- durable ingress (with a spool): read in order, reduce, spool per sink, then ack -------
    def _ingress_loop(self) -> None:
        record = 0
        while True:
            item = self.ingress.read(self._ingress_read)
            if item is None:
                self._ack_ingress()
                with self._ingress_wake:
                    if self._stop.is_set():
                        return
                    self._ingress_wake.wait(0.2)
                continue
            batch, after = item
            record += 1
            self._ingress_before[record] = self._ingress_read
            world = next((p.params for p in batch.params if p.run == _WORLD), {})
            params = [p for p in batch.params if p.run != _WORLD]
            self._submit(self.reducer.add(batch.points, world, origin=record), params)
            self._ingress_read = after

    def _ack_ingress(self) -> None:
        """Checkpoint the ingress up to the oldest record whose points still wait for ranks."""
        oldest = self.reducer.oldest_origin()
        before = self._ingress_before
        target = before[oldest] if oldest is not None else self._ingress_read
        if target != self.ingress.cursor:
            self.ingress.ack(target)
        for record in [r for r in before if oldest is None or r < oldest]:
            del before[record]

    # -- the request path ---------------------------------------------------------------------
    def check_auth(self, authorization: str | None) -> None:
        if self._token is None:
            return
        expected = f"Bearer {self._token}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):  # constant time
            self.stats.reject("unauthenticated")
            raise RequestError(401, "missing or wrong bearer token")

    def decode_body(self, body: bytes, encoding: str | None) -> bytes:
        limits = self.config.limits
        if len(body) > limits.max_request_bytes:
            self.stats.reject("too_large")
            raise RequestError(413, f"request body {len(body)} bytes exceeds {limits.max_request_bytes}")
        if (encoding or "identity").lower() in ("identity", ""):
            return body
        if encoding.lower() != "gzip":
            self.stats.reject("bad_encoding")
            raise RequestError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
        try:  # bounded: a small gzip bomb must not expand into memory
            d = zlib.decompressobj(wbits=31)
            out = d.decompress(body, limits.max_decompressed_bytes + 1)
        except zlib.error as exc:
            self.stats.reject("bad_gzip")
            raise RequestError(400, f"invalid gzip body: {exc}") from exc
        if len(out) > limits.max_decompressed_bytes or d.unconsumed_tail:
            self.stats.reject("too_large")
            raise RequestError(413, f"decompressed body exceeds {limits.max_decompressed_bytes} bytes")
        return out

    def overloaded(self) -> bool:
        fraction = self.config.limits.overload_fraction
        limit = self.config.limits.max_queue_points * fraction
        spool_limit = self.config.spool.max_bytes * fraction
        return any(w.spooled_bytes >= spool_limit if w.durable else w.stats.queued_points >= limit
                   for w in self.workers)

    def ingest_metrics(self, payload: bytes, content_type: str) -> mpb.ExportMetricsServiceResponse:
        self.stats.requests += 1
        request = self._parse(payload, content_type, mpb.ExportMetricsServiceRequest)
        if self.overloaded():
            self.stats.reject("overloaded")
            raise RequestError(503, "a sink queue is full; retry later", retry_after_s=2.0)
        world = {}
        for rm in request.resource_metrics:
            resource = proto_attributes(rm.resource.attributes)
            size = rank_of({RANK: resource.get(WORLD_SIZE)})  # int or digit string (env)
            if size > 0:
                world[run_of(resource)] = size
        with self._translate_lock:
            self._world_size.update(world)
            batch, rejected, reason = self._translator.translate_proto(request)
            self.stats.received_points += len(batch.points)
            self.stats.rejected_points += rejected
            if self.ingress is None:
                ready = self.reducer.add(batch.points, self._world_size)
        if self.ingress is not None:
            # Durable first, then acknowledged: the ingress thread reduces and spools per sink.
            world_record = RunParams(_WORLD, dict(self._world_size), 0.0)
            if not self.ingress.append(Batch(batch.points, [*batch.params, world_record])):
                raise RequestError(503, "the ingress spool is full; retry later", retry_after_s=5.0)
            with self._ingress_wake:
                self._ingress_wake.notify_all()
        elif not self._submit(ready, batch.params):
            raise RequestError(503, "a sink could not queue the points; retry later", retry_after_s=2.0)
        response = mpb.ExportMetricsServiceResponse()
        if rejected:
            response.partial_success.rejected_data_points = rejected
            response.partial_success.error_message = reason
        return response

    def ingest_traces(self, payload: bytes, content_type: str) -> tpb.ExportTraceServiceResponse:
        self.stats.requests += 1
        request = self._parse(payload, content_type, tpb.ExportTraceServiceRequest)
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.stats.received_spans += spans
        response = tpb.ExportTraceServiceResponse()
        if self.trace_sink is not None and spans:
            if self.trace_sink.export_request(request):
                self.stats.forwarded_spans += spans
            else:
                raise RequestError(503, "the trace sink is unavailable; retry later", retry_after_s=5.0)
        return response

    def _parse(self, payload: bytes, content_type: str, message_cls):
        try:
            return wire.parse(payload, content_type, message_cls)
        except wire.UnsupportedMediaType as exc:
            self.stats.reject("bad_content_type")
            raise RequestError(415, str(exc)) from exc
        except (DecodeError, ValueError, UnicodeDecodeError) as exc:
            self.stats.reject("malformed")
            raise RequestError(400, f"malformed OTLP payload: {str(exc)[:300]}") from exc

    def _submit(self, points, params=()) -> bool:
        """Queue a batch on every sink (durably, with a spool); False when a sink refused it."""
        if not points and not params:
            return True
        batch = self._translator.finish(Batch(list(points), list(params)))
        return all([worker.submit(batch) for worker in self.workers])

    def self_metrics(self) -> dict:
        s = self.stats
        return {"requests": s.requests, "rejected_requests": s.rejected_requests,
                "received_points": s.received_points, "rejected_points": s.rejected_points,
                "received_spans": s.received_spans, "forwarded_spans": s.forwarded_spans,
                "pending_groups": self.reducer.pending, "late_points": self.reducer.late_points,
                "partial_groups": self.reducer.partial_groups, "rejected_by_reason": dict(s.by_reason),
                "sinks": {w.sink.name: w.stats.as_dict() for w in self.workers}}


def create(config: CollectorConfig | Mapping | str | Path | None = None) -> Collector:
    """The collector for ``config`` (a :class:`CollectorConfig`, dict or YAML path), not started."""
    if not isinstance(config, CollectorConfig):
        config = load_collector_config(config)
    return Collector(config)
