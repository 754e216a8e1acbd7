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
    """``otlp:`` section. ``endpoint`` None means the exporter's own env/default resolution."""

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


def OtlpExporter(config: OtlpConfig | None = None):
    """The upstream ``OTLPMetricExporter`` for ``config.protocol``, with DELTA temporality."""
    config = config or OtlpConfig()
    if config.protocol == "grpc":
        mod = require("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "otlp")
    else:
        mod = require("opentelemetry.exporter.otlp.proto.http.metric_exporter", "otlp")
    kwargs = {"preferred_temporality": DELTA_TEMPORALITY, "timeout": config.timeout_s}
    if config.endpoint:
        kwargs["endpoint"] = config.endpoint
    return mod.OTLPMetricExporter(**kwargs)
