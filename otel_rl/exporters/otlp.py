"""OTLP sink: the standard OTel exporter, sending to a collector (ours or upstream).

Temporality is DELTA so per-step points are sent once (DESIGN.md). The
standard env vars (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``..._HEADERS``,
``..._PROTOCOL``, ...) are honored; setting the endpoint turns this sink on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Optional

from otel_rl.config import ConfigError, env_default
from otel_rl.exporters.base import DELTA_TEMPORALITY, require


def _endpoint_set() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


@dataclass(frozen=True)
class OtlpConfig:
    """``otlp:`` section: metrics and spans. ``endpoint`` is the base URL (as
    ``OTEL_EXPORTER_OTLP_ENDPOINT``): over HTTP ``/v1/metrics`` and ``/v1/traces`` are
    appended; None means the exporters' own env/default resolution."""

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


def _kwargs(config: OtlpConfig, path: str) -> dict:
    kwargs: dict = {"timeout": config.timeout_s}
    if config.endpoint:
        base = config.endpoint.rstrip("/")
        kwargs["endpoint"] = base if config.protocol == "grpc" else base + path
    return kwargs


def _module(config: OtlpConfig, signal: str):
    transport = "grpc" if config.protocol == "grpc" else "http"
    return require(f"opentelemetry.exporter.otlp.proto.{transport}.{signal}_exporter", "otlp")


def OtlpExporter(config: OtlpConfig | None = None):
    """The upstream ``OTLPMetricExporter`` for ``config.protocol``, with DELTA temporality."""
    config = config or OtlpConfig()
    return _module(config, "metric").OTLPMetricExporter(
        preferred_temporality=DELTA_TEMPORALITY, **_kwargs(config, "/v1/metrics"))


def OtlpSpanExporter(config: OtlpConfig | None = None):
    """The upstream ``OTLPSpanExporter`` for ``config.protocol``."""
    config = config or OtlpConfig()
    return _module(config, "trace").OTLPSpanExporter(**_kwargs(config, "/v1/traces"))
