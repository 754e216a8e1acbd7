"""OTLP receivers: HTTP (``/v1/metrics``, ``/v1/traces``, ``/v1/logs``; protobuf or JSON; gzip)
and gRPC (``MetricsService/Export``, ``TraceService/Export``, ``LogsService/Export``). They move bytes and map
:class:`~otel_rl_collector.service.RequestError` to the OTLP status rules:

| refusal | HTTP | gRPC |
|---|---|---|
| malformed payload | 400 | INVALID_ARGUMENT |
| wrong or missing token | 401 | UNAUTHENTICATED |
| body over the size limit | 413 | RESOURCE_EXHAUSTED |
| wrong content type / encoding | 415 | INVALID_ARGUMENT |
| overloaded (a sink queue is full) | 503 + ``Retry-After`` | UNAVAILABLE (retryable) |

HTTP error bodies are ``google.rpc.Status`` in the request's encoding. ``GET /health`` (503
while a sink's worker reports an error) and ``GET /metrics`` (self-metrics, see
:mod:`otel_rl_collector.selfmetrics`) are served on the HTTP port.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.rpc import status_pb2

from otel_rl_collector import wire
from otel_rl_collector.config import ReceiverConfig, TlsConfig

_log = logging.getLogger(__name__)

_GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
               413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
               500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}
_HTTP_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 500: 13, 503: 14}  # google.rpc.Code values


class HttpReceiver:
    kind = "http"

    def __init__(self, collector, config: ReceiverConfig, tls: TlsConfig) -> None:
        from otel_rl_collector.service import RequestError

        self.collector = collector
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                if self.path == "/health":
                    ok, details = owner.collector.health()
                    self._send(200 if ok else 503, json.dumps(details).encode(), "application/json")
                elif self.path == "/metrics":
                    body = owner.collector.selfmetrics.render().encode()
                    self._send(200, body, "text/plain; version=0.0.4")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self):  # noqa: N802
                content_type = self.headers.get("Content-Type")
                try:
                    body = self._read_body()
                    owner.collector.check_auth(self.headers.get("Authorization"))
                    payload = owner.collector.decode_body(body, self.headers.get("Content-Encoding"))
                    if self.path == "/v1/metrics":
                        response = owner.collector.ingest_metrics(payload, content_type)
                    elif self.path == "/v1/traces":
                        response = owner.collector.ingest_traces(payload, content_type)
                    elif self.path == "/v1/logs":
                        response = owner.collector.ingest_logs(payload, content_type)
                    else:
                        self._send(404, b"OTLP paths: /v1/metrics, /v1/traces, /v1/logs", "text/plain")
                        return
                    out, out_type = wire.encode(response, content_type)
                    self._send(200, out, out_type)
                except RequestError as exc:
                    self._refuse(exc, content_type)
                except Exception:  # a bug must cost one request, never the server
                    _log.exception("collector: request failed")
                    self._refuse(RequestError(500, "internal error; the request was not admitted"), content_type)

            def _read_body(self) -> bytes:
                limit = owner.collector.config.limits.max_request_bytes
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    self.close_connection = True
                    raise RequestError(411 if length is None else 400, "Content-Length required")
                if int(length) > limit:
                    self.close_connection = True  # do not read a huge body
                    owner.collector.stats.reject("too_large")
                    raise RequestError(413, f"request body {length} bytes exceeds {limit}")
                return self.rfile.read(int(length))

            def _refuse(self, exc, content_type) -> None:
                status = status_pb2.Status(code=_HTTP_CODES.get(exc.status, 3), message=exc.message)
                try:
                    body, body_type = wire.encode(status, content_type)
                except wire.UnsupportedMediaType:
                    body, body_type = json.dumps({"code": status.code, "message": exc.message}).encode(), wire.JSON
                headers = {"Retry-After": str(int(exc.retry_after_s))} if exc.retry_after_s else {}
                self._send(exc.status, body, body_type, headers)

            def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((config.host, config.port), Handler)
        self._server.daemon_threads = True
        if tls.enabled:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.host, self.port = config.host, self._server.server_address[1]
        self.scheme = "https" if tls.enabled else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otel-rl-otlp-http", daemon=True)

    def start(self) -> "HttpReceiver":
        self._thread.start()
        return self

    def describe(self) -> str:
        return f"OTLP/HTTP {self.scheme}://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GrpcReceiver:
    kind = "grpc"

    def __init__(self, collector, config: ReceiverConfig, tls: TlsConfig) -> None:
        self.collector = collector
        limit = collector.config.limits.max_request_bytes
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otel-rl-grpc"),
                                   options=[("grpc.max_receive_message_length", limit)])
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
        from otel_rl_collector.service import RequestError

        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = dict(context.invocation_metadata())
            try:
                self.collector.check_auth(metadata.get("authorization"))
                return ingest(request, wire.PROTOBUF).SerializeToString()
            except RequestError as exc:
                context.abort(_GRPC_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message)
            except Exception:
                _log.exception("collector: gRPC request failed")
                context.abort(grpc.StatusCode.INTERNAL, "request could not be processed")

        return export

    def start(self) -> "GrpcReceiver":
        self._server.start()
        return self

    def describe(self) -> str:
        return f"OTLP/gRPC {self.host}:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=2).wait(5)
