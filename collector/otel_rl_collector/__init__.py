"""The otel-rl collector: OTLP in (gRPC, HTTP), cross-rank reduction, ML backends and
Prometheus out. Start it with ``otel-rl collector --config collector.yaml``."""

from otel_rl_collector.config import CollectorConfig, load_collector_config
from otel_rl_collector.service import Collector, create
from otel_rl_collector.wire import RequestError

__all__ = ["Collector", "CollectorConfig", "RequestError", "create", "load_collector_config"]
