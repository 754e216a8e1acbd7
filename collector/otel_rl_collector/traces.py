"""Span forwarding to the trace backend (MLflow traces), off the request path: a hung trace
backend never holds a receiver thread, and what waits is bounded in requests and in bytes (a
parsed request holds several times its wire size: 60 requests took the collector from 182 to
607 MB with MLflow slow). Each request is retried a few times with backoff; what still fails is
dropped and counted (``dropped_spans``). Spans are not spooled."""

from __future__ import annotations

import queue
import threading

from otel_rl_collector.wire import RequestError

#: Span requests queued, and their wire bytes, before new ones get 503.
TRACE_QUEUE, TRACE_QUEUE_BYTES = 1_000, 32 * 2**20
TRACE_ATTEMPTS = 4


class TraceForwarder:
    def __init__(self, sink, stats, stop: threading.Event) -> None:
        self.sink, self._stats, self._stop = sink, stats, stop
        self._queue: queue.Queue = queue.Queue(maxsize=TRACE_QUEUE)
        self._bytes, self._lock = 0, threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="otel-rl-traces", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, request, spans: int, size: int) -> None:
        """Queue one request of ``spans`` spans, ``size`` bytes on the wire; 503 when full."""
        with self._lock:
            full = self._bytes + size > TRACE_QUEUE_BYTES
            if not full:
                try:
                    self._queue.put_nowait((request, spans, size))
                    self._bytes += size
                except queue.Full:
                    full = True
        if full:
            self._stats.reject("traces_backlog")
            raise RequestError(503, "the trace backend is behind; retry later", retry_after_s=5.0)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, spans, size = item
            with self._lock:
                self._bytes -= size
            for attempt in range(TRACE_ATTEMPTS):
                if self.sink.export_request(request):
                    self._stats.forwarded_spans += spans
                    break
                if self._stop.wait(min(8.0, 0.5 * 2**attempt)) and attempt >= 1:
                    self._stats.dropped_spans += spans
                    break
            else:
                self._stats.dropped_spans += spans

    def shutdown(self, wait_s: float) -> None:
        self._queue.put(None)
        self._thread.join(max(0.0, wait_s))
        self.sink.shutdown()
