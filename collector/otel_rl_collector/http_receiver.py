"""The OTLP/HTTP receiver on uvicorn (asyncio): ``POST /v1/metrics``, ``/v1/traces``,
``/v1/logs`` (protobuf or JSON, gzip, ``Content-Length`` or chunked), ``GET /health`` and
``GET /metrics``.

Why uvicorn rather than ``http.server``: what a receiver exposed to a cluster needs at the
connection level is what a maintained asyncio server already does well. TLS handshakes run per
connection in the event loop, so a client that never sends its ClientHello holds one socket, not
the accept loop; idle keep-alive connections are closed (``limits.idle_timeout_s``); past
``limits.max_connections`` concurrent connections new ones get 503; chunked bodies are
decoded by its HTTP parser. What is OTLP-specific stays here:

- the bearer token is checked on the headers, before any of the body is read (a refused client
  costs no memory);
- the body is read as it arrives, and refused with 413 as soon as it passes
  ``limits.max_request_bytes`` (declared or not), with 408 when the client stops sending for
  ``limits.read_timeout_s``;
- the work (decompression, decoding, durable admission) runs on a small thread pool
  (``limits.workers``); past ``limits.max_pending_requests`` requests waiting for it, 503 with
  ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from google.rpc import status_pb2

from otel_rl_collector import wire
from otel_rl_collector.config import ReceiverConfig, TlsConfig
from otel_rl_collector.guard import cap_handshakes, guarded_h11, throttled_exception_handler

_log = logging.getLogger(__name__)
_HTTP_CODES = {400: 3, 401: 16, 404: 5, 408: 4, 411: 3, 413: 8, 415: 3, 500: 13, 503: 14}  # google.rpc.Code
_PATHS = ("/v1/metrics", "/v1/traces", "/v1/logs")


class HttpReceiver:
    kind = "http"

    def __init__(self, collector, config: ReceiverConfig, tls: TlsConfig) -> None:
        import uvicorn

        self.collector = collector
        limits = collector.config.limits
        self._limits = limits
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((config.host, config.port))
        self._sock.listen(1024)
        self._sock.set_inheritable(True)
        self.host, self.port = config.host, self._sock.getsockname()[1]
        self.scheme = "https" if tls.enabled else "http"
        self._executor = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="otel-rl-http")
        self._pending = 0
        kwargs = {}
        if tls.enabled:
            kwargs.update(ssl_certfile=tls.cert_file, ssl_keyfile=tls.key_file)
        self._server = uvicorn.Server(uvicorn.Config(
            self._app, lifespan="off", access_log=False, log_level="warning", server_header=False,
            date_header=False, limit_concurrency=limits.max_connections,
            timeout_keep_alive=int(max(1, limits.idle_timeout_s)), h11_max_incomplete_event_size=64 * 1024,
            http=guarded_h11(limits, collector.stats.reject), loop="asyncio", interface="asgi3",
            proxy_headers=False, **kwargs))
        self._thread = threading.Thread(target=self._run, name="otel-rl-otlp-http", daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(throttled_exception_handler())
        create_server, handshake_s = loop.create_server, self._limits.header_timeout_s

        def create_tls_server(*args, **kwargs):  # uvicorn has no setting for asyncio's 60 s default
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", handshake_s)
            return create_server(*args, **kwargs)

        loop.create_server = create_tls_server  # a silent TLS connect is closed at header_timeout_s
        if self.scheme == "https" and not cap_handshakes(loop, self._limits, self.collector.stats.reject):
            _log.warning("collector: this event loop cannot count TLS handshakes in progress; "
                         "limits.max_pending_handshakes does not apply")
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        except Exception:
            _log.exception("collector: the HTTP receiver stopped")
        finally:
            loop.close()

    def start(self) -> HttpReceiver:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the OTLP/HTTP receiver on {self.host}:{self.port} did not start")
            time.sleep(0.01)
        return self

    def describe(self) -> str:
        return f"OTLP/HTTP {self.scheme}://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._sock.close()

    # -- ASGI --------------------------------------------------------------------------------------
    async def _app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        from otel_rl_collector.wire import RequestError

        headers: dict[str, str] = {}
        for k, v in scope["headers"]:  # a repeated header is joined, as RFC 9110 merges them
            key, value = k.decode("latin-1").lower(), v.decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        method, path = scope["method"], scope["path"]
        content_type = headers.get("content-type")
        try:
            if method == "GET" and path in ("/health", "/ready"):
                ok, details = self.collector.health() if path == "/health" else self.collector.ready()
                if not self.collector.authorized(headers.get("authorization")):
                    details = {"status": details["status"]}  # which sink fails, and why: for the operator
                await _send(send, 200 if ok else 503, json.dumps(details).encode(), "application/json")
            elif method == "GET" and path == "/metrics":
                if self.collector.config.auth.metrics:
                    self.collector.check_auth(headers.get("authorization"))
                body = self.collector.selfmetrics.render().encode()
                await _send(send, 200, body, "text/plain; version=0.0.4")
            elif method != "POST":
                await _send(send, 405 if path in _PATHS else 404, b"OTLP: POST /v1/metrics, /v1/traces, /v1/logs",
                            "text/plain")
            else:
                self.collector.check_auth(headers.get("authorization"))  # before reading the body
                if path not in _PATHS:
                    raise RequestError(404, "OTLP paths: /v1/metrics, /v1/traces, /v1/logs")
                if "transfer-encoding" in headers and "content-length" in headers:  # RFC 9112 6.1: smuggling
                    raise RequestError(400, "a request has Content-Length or Transfer-Encoding, not both")
                body = await self._read_body(receive, headers)
                if body is None:
                    return  # the client went away
                if self._pending >= self._limits.max_pending_requests:
                    self.collector.stats.reject("overloaded")
                    raise RequestError(503, "too many requests waiting; retry later", retry_after_s=1.0)
                self._pending += 1
                try:
                    loop = asyncio.get_running_loop()
                    response = await loop.run_in_executor(self._executor, self._ingest, path, body,
                                                          headers.get("content-encoding"), content_type)
                finally:
                    self._pending -= 1
                out, out_type = wire.encode(response, content_type)
                await _send(send, 200, out, out_type)
        except RequestError as exc:
            await self._refuse(send, exc, content_type)
        except Exception:  # a bug must cost one request, never the server
            _log.exception("collector: request failed")
            await self._refuse(send, RequestError(500, "internal error; the request was not admitted"), content_type)

    def _ingest(self, path: str, body: bytes, encoding: str | None, content_type: str | None):
        payload = self.collector.decode_body(body, encoding)
        if path == "/v1/metrics":
            return self.collector.ingest_metrics(payload, content_type)
        if path == "/v1/traces":
            return self.collector.ingest_traces(payload, content_type)
        return self.collector.ingest_logs(payload, content_type)

    async def _read_body(self, receive, headers: dict) -> bytes | None:
        from otel_rl_collector.wire import RequestError

        limit = self._limits.max_request_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.isascii() or not length.isdigit():
                raise RequestError(400, "bad Content-Length")
            if int(length) > limit:
                self.collector.stats.reject("too_large")
                raise RequestError(413, f"request body {length} bytes exceeds {limit}")
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self._limits.read_timeout_s)
            except asyncio.TimeoutError:
                self.collector.stats.reject("read_timeout")
                raise RequestError(408, f"no body bytes for {self._limits.read_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                self.collector.stats.reject("too_large")
                raise RequestError(413, f"request body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _refuse(self, send, exc, content_type) -> None:
        status = status_pb2.Status(code=_HTTP_CODES.get(exc.status, 3), message=exc.message)
        try:
            body, body_type = wire.encode(status, content_type)
        except wire.UnsupportedMediaType:
            body, body_type = json.dumps({"code": status.code, "message": exc.message}).encode(), wire.JSON
        headers = {"Retry-After": str(max(1, int(exc.retry_after_s)))} if exc.retry_after_s else {}
        if exc.status in (401, 408, 413):
            headers["Connection"] = "close"  # the rest of the body is not read
        try:
            await _send(send, exc.status, body, body_type, headers)
        except Exception:  # the client is gone
            pass


async def _send(send, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
    raw = [(b"Content-Type", content_type.encode()), (b"Content-Length", str(len(body)).encode())]
    raw.extend((k.encode(), v.encode()) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
