"""The OTLP/gRPC receiver (``MetricsService/Export``, ``TraceService/Export``,
``LogsService/Export``); OTLP/HTTP is :mod:`otel_rl_collector.http_receiver`. They move bytes and map
:class:`~otel_rl_collector.service.RequestError` to the OTLP status rules:

| refusal | HTTP | gRPC |
|---|---|---|
| malformed payload | 400 | INVALID_ARGUMENT |
| wrong or missing token | 401 | UNAUTHENTICATED |
| body over the size limit | 413 | RESOURCE_EXHAUSTED |
| wrong content type / encoding | 415 | INVALID_ARGUMENT |
| a body that stalls | 408 | (grpcio's deadlines) |
| overloaded (a full sink queue, too many connections or waits) | 503 + ``Retry-After`` | UNAVAILABLE (retryable) |

HTTP error bodies are ``google.rpc.Status`` in the request's encoding. ``GET /health`` (503
while a sink's worker reports an error) and ``GET /metrics`` (self-metrics, see
:mod:`otel_rl_collector.selfmetrics`) are served on the HTTP port.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc

from otel_rl_collector import wire
from otel_rl_collector.config import ReceiverConfig, TlsConfig

_log = logging.getLogger(__name__)

_GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
               413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
               500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}


class _TokenInterceptor(grpc.ServerInterceptor):
    """Refuse a call without the bearer token on its metadata, before the server reads its
    message or gives it a worker: four token-less calls that never sent their message held all
    four workers and stopped OTLP/gRPC ingestion."""

    def __init__(self, collector) -> None:
        self._collector = collector

        def deny(requests, context):  # never reads the message: the worker is free at once
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.stream_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        values = [v for k, v in (handler_call_details.invocation_metadata or ()) if k == "authorization"]
        if len(values) == 1 and self._collector.authorized(values[0]):
            return continuation(handler_call_details)
        if self._collector.gate.token is None:
            return continuation(handler_call_details)
        self._collector.stats.reject("unauthenticated")
        return self._deny


class GrpcReceiver:
    kind = "grpc"

    def __init__(self, collector, config: ReceiverConfig, tls: TlsConfig) -> None:
        self.collector = collector
        limits = collector.config.limits
        # the token is checked on the call's metadata before its message is read
        # (_TokenInterceptor); maximum_concurrent_rpcs bounds the calls in progress (past it:
        # RESOURCE_EXHAUSTED at once), each with a thread, so slow senders never starve the rest
        workers = limits.max_pending_requests
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otel-rl-grpc"),
            interceptors=[_TokenInterceptor(collector)], maximum_concurrent_rpcs=limits.max_pending_requests,
            options=[("grpc.max_receive_message_length", limits.max_request_bytes),
                     ("grpc.max_concurrent_streams", 16),
                     ("grpc.http2.max_pings_without_data", 2)])
        handlers = [
            ("opentelemetry.proto.collector.metrics.v1.MetricsService", collector.ingest_metrics),
            ("opentelemetry.proto.collector.trace.v1.TraceService", collector.ingest_traces),
            ("opentelemetry.proto.collector.logs.v1.LogsService", collector.ingest_logs),
        ]
        for service, ingest in handlers:  # raw bytes in and out: decoding errors are ours to map
            self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {
                "Export": grpc.unary_unary_rpc_method_handler(self._handler(ingest))}),))
        address = f"{config.host}:{config.port}"
        if tls.enabled:
            with open(tls.key_file, "rb") as key, open(tls.cert_file, "rb") as cert:
                creds = grpc.ssl_server_credentials([(key.read(), cert.read())])
            self.port = self._server.add_secure_port(address, creds)
        else:
            self.port = self._server.add_insecure_port(address)
        self.host = config.host

    def _handler(self, ingest):
        from otel_rl_collector.wire import RequestError

        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = dict(context.invocation_metadata())
            try:
                self.collector.check_auth(metadata.get("authorization"))  # the interceptor checked it first
                return ingest(request, wire.PROTOBUF).SerializeToString()
            except RequestError as exc:
                context.abort(_GRPC_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message)
            except Exception:
                _log.exception("collector: gRPC request failed")
                context.abort(grpc.StatusCode.INTERNAL, "request could not be processed")

        return export

    def start(self) -> GrpcReceiver:
        self._server.start()
        return self

    def describe(self) -> str:
        return f"OTLP/gRPC {self.host}:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=2).wait(5)


def start_receivers(collector) -> list:
    """Start the enabled receivers; a port that cannot be bound is an ``OSError`` that names the
    receiver, the address and its setting."""
    from otel_rl_collector.guard import HealthListener
    from otel_rl_collector.http_receiver import HttpReceiver

    receivers, started = collector.config.receivers, []
    for kind, key, make in (("OTLP/HTTP", "http", HttpReceiver), ("OTLP/gRPC", "grpc", GrpcReceiver),
                            ("probes", "health", HealthListener)):
        cfg = getattr(receivers, key)
        if not cfg.enabled:
            continue
        try:
            started.append(make(collector, cfg, collector.config.tls).start())
        except (OSError, RuntimeError) as exc:  # grpcio says RuntimeError("Failed to bind")
            for receiver in started:
                receiver.stop()
            reason = getattr(exc, "strerror", None) or str(exc)
            raise OSError(getattr(exc, "errno", None) or 0, f"the {kind} receiver cannot listen on "
                          f"{cfg.host}:{cfg.port}: {reason} (receivers.{key}.port)") from exc
    return started
