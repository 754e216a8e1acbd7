"""OTLP sink: admitted records back onto the wire, to a collector (ours or upstream).

It is a sink like any other, so it shares the delivery layer: the same queue, retry policy and
spool. A collector that is down for minutes loses nothing from a trainer with ``spool_dir``,
and training never waits for it.

- **Wire shape**: gauges as OTLP gauges with the ``step`` attribute; counters and sums as DELTA
  sums carrying the increment (the collector reduces the ranks' increments and keeps the running
  total); histograms as DELTA explicit-bucket histograms; hyperparameters as the
  ``otel_rl.hparams`` gauge; texts and samples (``log_samples``) as OTLP log records on
  ``/v1/logs`` (gRPC ``LogsService``): see :func:`encode_logs_request`. The resource carries the
  run, rank and world size.
- **Exactly once over the hop**: every request's resources carry ``otel_rl.sender.id`` and
  ``otel_rl.batch.id`` (a content hash of the batch plus the chunk number), so a batch resent
  after a timeout or replayed from the spool after a crash is recognized and acknowledged by
  the collector without being counted twice.
- **Errors**: 429/502/503/504 and gRPC UNAVAILABLE/RESOURCE_EXHAUSTED/DEADLINE_EXCEEDED are
  transient (``Retry-After`` honored); other 4xx and gRPC codes are permanent.

The standard env vars are honored: ``OTEL_EXPORTER_OTLP_[METRICS_|LOGS_]ENDPOINT``, ``..._HEADERS``,
``..._PROTOCOL``, ``..._COMPRESSION``, ``..._CERTIFICATE``; setting an endpoint turns the sink on.
Spans go through the upstream ``OTLPSpanExporter`` (:func:`OtlpSpanExporter`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Literal, Optional

from otel_rl.errors import ConfigError, PermanentError, TransientError
from otel_rl.model.records import Batch, Point
from otel_rl.model.semconv import RANK, RUN_ID
from otel_rl.settings import env_default
from otel_rl.sinks.base import Sink, SinkContext, require
from otel_rl.sinks.otlp_encode import LOGGED_KINDS, MAX_MEDIA_REQUEST_BYTES, encode_logs_request, encode_request

#: Points per request: well under the collector's default 8 MiB body limit.
MAX_POINTS_PER_REQUEST = 5_000
_TRANSIENT_HTTP = (429, 502, 503, 504)
_TRANSIENT_GRPC = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED")


def _env(name: str) -> str | None:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_METRICS_{name}") or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")


def _endpoint_set() -> bool:
    return bool(_env("ENDPOINT"))


@dataclass(frozen=True)
class OtlpConfig:
    """``otlp:`` section: metrics and spans. ``endpoint`` is the base URL (as
    ``OTEL_EXPORTER_OTLP_ENDPOINT``): over HTTP ``/v1/metrics`` and ``/v1/traces`` are
    appended; None means the env vars, then ``http://localhost:4318`` (HTTP) or
    ``localhost:4317`` (gRPC)."""

    enabled: bool = env_default("OTEL_RL_OTLP_ENABLED", None, bool)
    endpoint: Optional[str] = None
    protocol: Literal["grpc", "http/protobuf"] = env_default(
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.enabled is None:
            object.__setattr__(self, "enabled", _endpoint_set())

    def validate(self, path: str) -> None:
        if self.protocol not in ("grpc", "http/protobuf"):
            raise ConfigError(f"{path}.protocol: {self.protocol!r} is not allowed; "
                              "allowed: 'grpc', 'http/protobuf'")


def parse_headers(raw: str | None) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``k1=v1,k2=v2``, values URL-encoded."""
    headers = {}
    for item in (raw or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers[urllib.parse.unquote(key.strip()).lower()] = urllib.parse.unquote(value.strip())
    return headers


# -- records -> OTLP protobuf ---------------------------------------------------------------------
class OtlpSink(Sink):
    """Sends admitted records to an OTLP endpoint (HTTP/protobuf or gRPC)."""

    name = "otlp"

    def __init__(self, config: OtlpConfig | None = None) -> None:
        require("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2", "otlp")
        super().__init__()
        self.config = config or OtlpConfig()
        self._resource: dict[str, Any] = {}
        self._sender = uuid.uuid4().hex[:16]
        self._headers = parse_headers(_env("HEADERS"))
        self._gzip = (_env("COMPRESSION") or "").lower() == "gzip"
        self._url = self._endpoint()
        self._logs_url = self._endpoint("logs")
        self._channel = None
        self._info: dict[str, tuple] = {}  # metric name -> (unit, description, scope)
        self.rejected_points = 0
        self.rejected_log_records = 0

    def _endpoint(self, signal: str = "metrics") -> str:
        """The URL for ``signal`` (``metrics``; ``logs``: texts and samples)."""
        cfg = self.config
        grpc = cfg.protocol == "grpc"
        if cfg.endpoint:
            base = cfg.endpoint.rstrip("/")
            return base if grpc else f"{base}/v1/{signal}"
        full = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        if full:
            return full
        metrics = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "")
        if signal == "logs" and metrics.rstrip("/").endswith("/v1/metrics") and not grpc:
            return metrics.rstrip("/")[:-len("metrics")] + "logs"  # next to the metrics endpoint
        base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if base:
            return base.rstrip("/") if grpc else f"{base.rstrip('/')}/v1/{signal}"
        return "localhost:4317" if grpc else f"http://localhost:4318/v1/{signal}"

    def describe(self, run: str) -> str:
        return f"otlp: {self._url} ({self.config.protocol})"

    def replay_target(self) -> str:
        base = self._url[: -len("/v1/metrics")] if self._url.endswith("/v1/metrics") else self._url
        return f"otlp:{base}"

    def bind(self, context: SinkContext) -> None:
        """The sending process's resource (service name, world size, ...) goes on every request."""
        super().bind(context)
        self._resource = {k: v for k, v in context.resource.items() if k not in (RUN_ID, RANK)}

    def bind_spool(self, spool_id: str, state: dict | None) -> None:
        self._sender = spool_id  # stable across restarts: a replayed batch keeps its identity

    def write(self, batch: Batch) -> None:
        from otel_rl.model.codec import fingerprint_bytes

        digest = hashlib.blake2b(fingerprint_bytes(Batch(batch.points, batch.params)), digest_size=12).hexdigest()
        if batch.info and len(self._info) < 10_000:  # remembered: the info comes once per instrument
            self._info.update(batch.info)
        chunk = 0
        groups = {}
        logged = [p for p in batch.points if p.kind in LOGGED_KINDS]
        # a corrected total (a sum without an increment) adds nothing: the collector, which gets
        # every increment, corrects its own totals
        corrections = any(p.increment is None for p in batch.points if p.kind in ("counter", "sum"))
        metrics_points = batch.points
        if logged or corrections:
            metrics_points = [p for p in batch.points if p.kind not in LOGGED_KINDS
                              and not (p.increment is None and p.kind in ("counter", "sum"))]
        for (run, rank), points in groupby(sorted(metrics_points, key=lambda p: (p.run, p.rank, p.step)),
                                           key=lambda p: (p.run, p.rank)):
            groups.setdefault((run, rank), []).extend(points)
        for rp in batch.params:
            groups.setdefault((rp.run, -1), [])
        params_sent: set[str] = set()
        for (run, rank), points in groups.items():
            params = [] if run in params_sent else [rp for rp in batch.params if rp.run == run]
            params_sent.add(run)
            resource = {**self._resource, RUN_ID: run}
            if rank >= 0:
                resource[RANK] = rank
            for start in range(0, max(1, len(points)), MAX_POINTS_PER_REQUEST):
                part = points[start:start + MAX_POINTS_PER_REQUEST]
                request = encode_request(part, params if start == 0 else [], resource, f"{digest}-{chunk}",
                                         self._sender, self._info)
                chunk += 1
                self._send(request.SerializeToString())
        # texts and samples as OTLP log records; one table never spans two requests
        for (run, rank), points in groupby(sorted(logged, key=lambda p: (p.run, p.rank, p.step)),
                                           key=lambda p: (p.run, p.rank)):
            resource = {**self._resource, RUN_ID: run}
            if rank >= 0:
                resource[RANK] = rank
            part: list[Point] = []
            rows = 0
            for p in [*points, None]:
                size = len(p.value.rows) if p is not None and p.kind == "table" else 1
                if p is not None and p.kind == "media":  # in rows' units: a request stays under 4 MiB
                    size = max(1, len(p.value.data) * MAX_POINTS_PER_REQUEST // MAX_MEDIA_REQUEST_BYTES)
                if part and (p is None or rows + size > MAX_POINTS_PER_REQUEST):
                    request = encode_logs_request(part, resource, f"{digest}-L{chunk}", self._sender)
                    chunk += 1
                    self._send(request.SerializeToString(), "logs")
                    part, rows = [], 0
                if p is not None:
                    part.append(p)
                    rows += size

    def _send(self, body: bytes, signal: str = "metrics") -> None:
        if self.config.protocol == "grpc":
            self._send_grpc(body, signal)
        else:
            self._send_http(body, signal)

    def _send_http(self, body: bytes, signal: str = "metrics") -> None:
        headers = {"Content-Type": "application/x-protobuf", **self._headers}
        if self._gzip:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        url = self._url if signal == "metrics" else self._logs_url
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        context = None
        if url.startswith("https"):
            context = ssl.create_default_context(cafile=_env("CERTIFICATE"))
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s, context=context) as response:
                self._check_partial(response.read(), signal)
        except urllib.error.HTTPError as exc:
            detail = status_message(exc.read(64 * 1024), exc.headers.get("Content-Type", ""))
            if exc.code in _TRANSIENT_HTTP:
                retry = exc.headers.get("Retry-After")
                raise TransientError(f"HTTP {exc.code} from {url}: {detail}",
                                     float(retry) if retry and retry.isdigit() else None) from None
            raise PermanentError(f"HTTP {exc.code} from {url}: {detail}") from None

    def _send_grpc(self, body: bytes, signal: str = "metrics") -> None:
        grpc = require("grpc", "otlp")
        if self._channel is None:
            target = self._url.split("://", 1)[-1]
            if self._url.startswith("https://"):
                cafile = _env("CERTIFICATE")
                roots = open(cafile, "rb").read() if cafile else None
                self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(roots))
            else:
                self._channel = grpc.insecure_channel(target)
            self._exports = {
                name: self._channel.unary_unary(f"/opentelemetry.proto.collector.{name}.v1.{service}/Export",
                                                request_serializer=None, response_deserializer=None)
                for name, service in (("metrics", "MetricsService"), ("logs", "LogsService"))}
        metadata = list(self._headers.items())
        try:
            response = self._exports[signal](body, timeout=self.config.timeout_s, metadata=metadata,
                                             compression=grpc.Compression.Gzip if self._gzip else None)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "UNKNOWN"
            message = f"gRPC {code} from {self._url}: {exc.details()}"
            if code in _TRANSIENT_GRPC:
                raise TransientError(message) from None
            raise PermanentError(message) from None
        self._check_partial(response, signal)

    def _check_partial(self, payload: bytes, signal: str = "metrics") -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

        response = mpb.ExportMetricsServiceResponse() if signal == "metrics" else lpb.ExportLogsServiceResponse()
        try:
            response.ParseFromString(payload)
        except Exception:  # an answer we cannot read is still an acknowledgement
            return
        if signal == "metrics":
            rejected = response.partial_success.rejected_data_points
            self.rejected_points += rejected
        else:
            rejected = response.partial_success.rejected_log_records
            self.rejected_log_records += rejected
        if rejected:
            self.warn_once(f"partial:{response.partial_success.error_message[:80]}",
                           "otlp: the receiver rejected %d points: %s", rejected,
                           response.partial_success.error_message)

    def close(self, status: str = "success") -> None:
        if self._channel is not None:
            self._channel.close()


def _module(config: OtlpConfig, signal: str):
    transport = "grpc" if config.protocol == "grpc" else "http"
    return require(f"opentelemetry.exporter.otlp.proto.{transport}.{signal}_exporter", "otlp")


def OtlpSpanExporter(config: OtlpConfig | None = None):
    """The upstream ``OTLPSpanExporter`` for ``config.protocol``."""
    config = config or OtlpConfig()
    kwargs: dict = {"timeout": config.timeout_s}
    if config.endpoint:
        base = config.endpoint.rstrip("/")
        kwargs["endpoint"] = base if config.protocol == "grpc" else base + "/v1/traces"
    return _module(config, "trace").OTLPSpanExporter(**kwargs)


def status_message(body: bytes, content_type: str = "") -> str:
    """An OTLP/HTTP error body as text: the ``message`` of its ``google.rpc.Status`` (protobuf
    or JSON, as the spec has servers answer), else the body itself, cut to 300 characters."""
    message = None
    if "json" in content_type:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    elif body:
        try:
            from google.rpc import status_pb2

            message = status_pb2.Status.FromString(body).message or None
        except Exception:  # noqa: BLE001 - not a Status: show the bytes as text below
            message = None
    if message is None:
        message = body.decode("utf-8", "replace")
    return message.strip()[:300] or "(no message)"
