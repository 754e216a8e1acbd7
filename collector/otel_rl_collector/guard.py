"""Connection-level guards of a collector any pod can reach.

- :func:`guarded_h11`: uvicorn's HTTP/1.1 protocol with a deadline from accept (or the end of the
  last response) to a complete request head, ``limits.header_timeout_s``. uvicorn arms its
  keep-alive timer only after a first response, so a connection that never completes a request
  would stay open for good and hold one of ``limits.max_connections`` slots: 256 silent sockets
  took OTLP/HTTP and ``/health`` down. Also a cap per client address,
  ``limits.max_connections_per_client``.
- :func:`cap_handshakes`: TLS connections still in their handshake, at most
  ``limits.max_pending_handshakes`` in all (the oldest is aborted) and
  ``limits.max_connections_per_client`` per address.
  A handshake comes before the HTTP protocol sees the connection, so the caps above cannot count
  it, and each costs about 300 KB: 7,000 silent TLS connects OOM-killed the collector.
- :func:`throttled_exception_handler`: the event loop's error log, at most one line per kind
  every 10 s (an accept loop out of file descriptors logged a traceback in a tight loop).
- :class:`HealthListener`: ``/health`` and ``/ready`` on a port of their own for the probes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler

from otel_rl.sinks.prometheus import BoundedHTTPServer

_log = logging.getLogger(__name__)


def guarded_h11(limits, on_refuse):
    """A uvicorn ``http`` protocol class bound to ``limits``; ``on_refuse(reason)`` counts what it
    closes (``idle_connection``, ``too_many_connections``)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    per_client: dict[str, int] = {}  # client address -> open connections (the event loop's thread only)

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None
        _host = None
        _cycle = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._host = self.client[0] if self.client else ""
            per_client[self._host] = per_client.get(self._host, 0) + 1
            if per_client[self._host] > limits.max_connections_per_client:
                on_refuse("too_many_connections")
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._cycle = self.cycle
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if self.cycle is self._cycle and not self.transport.is_closing():  # no new request head
                on_refuse("idle_connection")
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self._head_timer is not None and self.cycle is not self._cycle:
                self._disarm()  # a request head arrived: the body has limits.read_timeout_s

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head has the same deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            if self._host is not None:
                left = per_client.get(self._host, 1) - 1
                if left > 0:
                    per_client[self._host] = left
                else:
                    per_client.pop(self._host, None)
                self._host = None
            super().connection_lost(exc)

    return GuardedH11Protocol


def cap_handshakes(loop, limits, on_refuse) -> bool:
    """Count TLS handshakes in progress on ``loop``. Past ``max_pending_handshakes`` the *oldest*
    is aborted: a client's handshake takes milliseconds, so a flood of silent connects evicts its
    own and a legitimate client gets through. Past ``max_connections_per_client`` from one address,
    that client's new connection is aborted. asyncio has no public hook between accept and
    handshake: this wraps the event loop's ``_make_ssl_transport`` (CPython selector loops) and
    returns False, capping nothing, where it is missing."""
    make = getattr(loop, "_make_ssl_transport", None)
    if make is None:
        return False
    from collections import OrderedDict

    pending: OrderedDict = OrderedDict()  # transport -> client address, oldest first (loop thread only)
    per_client: dict[str, int] = {}

    def forget(transport) -> None:
        host = pending.pop(transport, None)
        if host is not None:
            left = per_client.get(host, 1) - 1
            if left > 0:
                per_client[host] = left
            else:
                per_client.pop(host, None)

    def make_ssl_transport(rawsock, protocol, sslcontext, waiter=None, **kwargs):
        transport = make(rawsock, protocol, sslcontext, waiter, **kwargs)
        if waiter is None:
            return transport
        try:
            host = rawsock.getpeername()[0]
        except OSError:
            host = ""
        if per_client.get(host, 0) >= limits.max_connections_per_client:
            on_refuse("too_many_handshakes")
            loop.call_soon(transport.abort)
            return transport
        while len(pending) >= limits.max_pending_handshakes:
            oldest = next(iter(pending))
            forget(oldest)
            on_refuse("too_many_handshakes")
            loop.call_soon(oldest.abort)  # after its connection_made (scheduled before): else a no-op
        pending[transport] = host
        per_client[host] = per_client.get(host, 0) + 1
        waiter.add_done_callback(lambda _: forget(transport))
        return transport

    loop._make_ssl_transport = make_ssl_transport
    return True


def throttled_exception_handler(interval_s: float = 10.0):
    """An asyncio exception handler that logs each kind of error at most every ``interval_s``,
    with a count of the repeats it held back."""
    last: dict[str, list] = {}  # message -> [time logged, repeats since]

    def handle(loop, context) -> None:
        message = str(context.get("message") or "event loop error")
        now = time.monotonic()
        seen = last.get(message)
        if seen is not None and now - seen[0] < interval_s:
            seen[1] += 1
            return
        repeats = seen[1] if seen else 0
        last[message] = [now, 0]
        if len(last) > 100:
            last.clear()
        exc = context.get("exception")
        _log.error("collector: %s%s%s", message, f": {exc!r}" if exc else "",
                   f" (and {repeats} more like it in the last {interval_s:g} s)" if repeats else "")

    return handle


class HealthListener:
    """``GET /health`` (liveness) and ``GET /ready`` (readiness) on their own port; each
    connection has 5 s to send its request; at most 64 are served at once, 8 per client."""

    kind = "health"

    def __init__(self, collector, config, tls=None) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                if path not in ("/health", "/ready"):
                    self.send_error(404, "GET /health or /ready")
                    return
                ok, details = collector.health() if path == "/health" else collector.ready()
                body = json.dumps({"status": details.get("status", "ok" if ok else "unavailable")}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = BoundedHTTPServer((config.host, config.port), Handler, max_connections=64, per_client=8)
        self.host, self.port = config.host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="otel-rl-health", daemon=True)

    def start(self) -> HealthListener:
        self._thread.start()
        return self

    def describe(self) -> str:
        return f"probes http://{self.host}:{self.port}/health"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
