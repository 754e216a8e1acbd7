"""Collector configuration: receivers, auth, TLS, limits, reduction, and the same backend
sections as the in-process pipeline (``tensorboard:``, ``mlflow:``, ``prometheus:``...).

::

    receivers:
      http: {enabled: true, host: 127.0.0.1, port: 4318}
      grpc: {enabled: true, host: 127.0.0.1, port: 4317}
    auth: {token_file: /var/run/secrets/otel-rl/token}   # or env OTEL_RL_COLLECTOR_TOKEN
    tls: {cert_file: tls.crt, key_file: tls.key}
    limits: {max_request_bytes: 8388608, max_decompressed_bytes: 67108864}
    reduce: {gauge: mean, counter: sum, timeout_s: 5, rules: {"timing/*": max}}
    spool: {dir: /data/spool, checkpoint_interval_s: 1}
    retry: {initial_backoff_s: 0.25, max_backoff_s: 8, max_elapsed_s: null, unknown_attempts: 5}
    tensorboard: {enabled: true, log_dir: /data/runs}
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from otel_rl.errors import ConfigError
from otel_rl.route.retry import RetryPolicy
from otel_rl.settings import build, env_default, positive, read_mapping, readable_file
from otel_rl_collector.reduce import OPS

Op = Literal["mean", "max", "min", "sum", "none"]


@dataclass(frozen=True)
class ReceiverConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0

    def validate(self, path: str) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port: {self.port} is not a port (0-65535; 0 picks a free one)")


@dataclass(frozen=True)
class ReceiversConfig:
    http: ReceiverConfig = field(default_factory=lambda: ReceiverConfig(port=4318))
    grpc: ReceiverConfig = field(default_factory=lambda: ReceiverConfig(port=4317))
    #: ``GET /health`` and ``/ready`` on a listener of their own (the probes), so that a full
    #: OTLP port does not make the liveness probe fail and restart the pod.
    health: ReceiverConfig = field(default_factory=lambda: ReceiverConfig(enabled=False, port=13133))


@dataclass(frozen=True)
class AuthConfig:
    """Bearer token: ``token_file`` or env ``OTEL_RL_COLLECTOR_TOKEN``; none means no auth. A
    token file that is empty or unreadable is a start-up error (never auth silently off).
    ``metrics: true`` asks for the token on ``GET /metrics`` too."""

    token_file: Optional[str] = env_default("OTEL_RL_COLLECTOR_TOKEN_FILE", None)
    metrics: bool = False

    def token(self) -> str | None:
        if self.token_file:
            token = Path(self.token_file).read_text().strip()
            if not token:
                raise ConfigError(f"auth.token_file: {self.token_file!r} is empty; auth would be off. Put the "
                                  "token in it, or remove auth.token_file to run without auth")
            return token
        return os.environ.get("OTEL_RL_COLLECTOR_TOKEN") or None

    def validate(self, path: str) -> None:
        readable_file(f"{path}.token_file", self.token_file)
        if self.token_file:
            try:
                self.token()
            except OSError as exc:
                raise ConfigError(f"{path}.token_file: {self.token_file!r} cannot be read: {exc.strerror}") from exc


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Optional[str] = None
    key_file: Optional[str] = None

    def validate(self, path: str) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{path}: cert_file and key_file go together; set both or neither")
        for name in ("cert_file", "key_file"):
            readable_file(f"{path}.{name}", getattr(self, name))

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True)
class LimitsConfig:
    """Bytes per request (compressed, as sent) and after gzip; sink queue bound in points."""

    max_request_bytes: int = 8 * 2**20
    max_decompressed_bytes: int = 64 * 2**20
    max_queue_points: int = 1_000_000
    #: Answer 503 / UNAVAILABLE (retry later) once a sink queue is this full.
    overload_fraction: float = 0.9
    #: OTLP/HTTP: concurrent connections (past it: 503), seconds an idle keep-alive connection
    #: stays open, seconds a request body may stall, threads doing the work, requests waiting
    #: for them (past it: 503 with Retry-After).
    max_connections: int = 256
    idle_timeout_s: float = 30.0
    read_timeout_s: float = 30.0
    workers: int = 4
    max_pending_requests: int = 64
    #: Seconds from accepting a connection (or the end of its last response) to a complete
    #: request head; a connection that sends nothing, or a head byte by byte, is closed then.
    header_timeout_s: float = 5.0
    #: Concurrent connections from one client address (OTLP/HTTP), so one client cannot take
    #: every slot of ``max_connections``; past it the new connection is closed.
    max_connections_per_client: int = 64
    #: TLS handshakes in progress (about 300 KB each); past it the oldest is aborted (a real
    #: client's takes milliseconds). Per client address, ``max_connections_per_client`` applies.
    max_pending_handshakes: int = 256
    #: OTLP logs (samples, texts) per request: records, and per table its distinct columns and
    #: cells (rows x columns); what is past a limit is refused in the partial success.
    max_log_records: int = 10_000
    max_table_columns: int = 64
    max_table_cells: int = 100_000
    #: One image, video or audio item (the encoded bytes; the request is bounded by
    #: ``max_request_bytes`` too): past it that item is refused in the partial success.
    max_media_bytes: int = 16 * 2**20
    #: What one request may decode into: resource blocks, and metrics + points + records +
    #: spans in all (a batch of 500 steps x 100 metrics is 50,100); OTLP/JSON bodies (verbose,
    #: and 30x their size once parsed) at most this many bytes after gzip.
    max_resource_blocks: int = 10_000
    max_request_objects: int = 200_000
    max_json_bytes: int = 8 * 2**20

    def validate(self, path: str) -> None:
        for name in ("max_request_bytes", "max_decompressed_bytes", "max_queue_points", "max_connections",
                     "idle_timeout_s", "read_timeout_s", "workers", "max_pending_requests", "header_timeout_s",
                     "max_connections_per_client", "max_pending_handshakes", "max_log_records", "max_table_columns",
                     "max_table_cells", "max_media_bytes",
                     "max_resource_blocks", "max_request_objects", "max_json_bytes"):
            positive(f"{path}.{name}", getattr(self, name))
        if not 0 < self.overload_fraction <= 1:
            raise ConfigError(f"{path}.overload_fraction: must be in (0, 1], got {self.overload_fraction}")


@dataclass(frozen=True)
class SpoolConfig:
    """Durable per-sink queues under ``dir/<sink>``: the collector answers an OTLP request with
    success only once its points are in every sink's spool (fsynced); a restart replays them."""

    dir: Optional[str] = env_default("OTEL_RL_SPOOL_DIR", None)
    max_bytes: int = 1 << 30
    fsync: bool = True
    #: Seconds between checkpoints of the router state (and every 2,000 requests): what a
    #: restart replays from the ingress. Replay is exact either way; shorter means faster restarts.
    checkpoint_interval_s: float = 1.0

    def validate(self, path: str) -> None:
        positive(f"{path}.max_bytes", self.max_bytes)
        positive(f"{path}.checkpoint_interval_s", self.checkpoint_interval_s)


@dataclass(frozen=True)
class ReduceConfig:
    """Per-step reduction across ranks. ``rules`` maps a glob on the metric name to an op;
    ``timing/*`` defaults to ``max``; other gauges to ``gauge``, counters to ``counter``."""

    gauge: Op = "mean"
    counter: Op = "sum"
    timeout_s: float = 5.0
    rules: dict = field(default_factory=dict)
    #: Groups waiting for their ranks, all runs together (about 0.4 KB each). Past it, the
    #: oldest of the run with the most waiting are emitted early, as after a timeout.
    max_pending: int = 200_000

    def validate(self, path: str) -> None:
        positive(f"{path}.timeout_s", self.timeout_s)
        positive(f"{path}.max_pending", self.max_pending)
        for pattern, op in self.rules.items():
            if op not in OPS:
                raise ConfigError(f"{path}.rules[{pattern!r}]: {op!r} is not allowed; allowed: {', '.join(OPS)}")


@dataclass(frozen=True)
class CollectorConfig:
    receivers: ReceiversConfig
    auth: AuthConfig
    tls: TlsConfig
    limits: LimitsConfig
    reduce: ReduceConfig
    spool: SpoolConfig
    backends: dict[str, Any]
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def enabled_backends(self) -> dict[str, Any]:
        return {n: c for n, c in self.backends.items() if getattr(c, "enabled", False)}


_SECTIONS = {"auth": AuthConfig, "tls": TlsConfig, "limits": LimitsConfig, "reduce": ReduceConfig,
             "spool": SpoolConfig, "retry": RetryPolicy}


def _receivers(data: Mapping | None) -> ReceiversConfig:
    data = dict(data or {})
    unknown = sorted(set(data) - {"http", "grpc", "health"})
    if unknown:
        raise ConfigError(f"receivers.{unknown[0]}: unknown receiver; allowed: grpc, health, http")
    defaults = ReceiversConfig()
    return ReceiversConfig(**{
        name: build(ReceiverConfig, {**dataclasses.asdict(getattr(defaults, name)), **(data.get(name) or {})},
                    f"receivers.{name}") for name in ("http", "grpc", "health")})


def load_collector_config(source: Mapping | str | Path | None = None) -> CollectorConfig:
    """Build and validate a collector config from a dict or a YAML file path."""
    from otel_rl.sinks import registry

    source = read_mapping(source, "collector config")
    backends = [n for n in registry.names() if n != "otlp"]  # forwarding OTLP onward: use the upstream collector
    allowed = {"receivers", *_SECTIONS, *backends}
    unknown = sorted(set(source) - allowed)
    if unknown:
        raise ConfigError(f"collector config.{unknown[0]}: unknown key; allowed: {', '.join(sorted(allowed))}")
    sections = {name: build(cls, source.get(name), name) for name, cls in _SECTIONS.items()}
    return CollectorConfig(
        receivers=_receivers(source.get("receivers")),
        backends={n: build(registry.config_class(n), source.get(n), n) for n in backends}, **sections)
