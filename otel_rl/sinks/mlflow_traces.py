"""Spans to MLflow traces: MLflow 3.17's server ingests OTLP traces at ``POST /v1/traces``
with the header ``x-mlflow-experiment-id`` (it has no OTLP metrics endpoint).

The experiment id is resolved (created if missing) on the first export, on the span
processor's thread, so a server that is down at start delays nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_rl.errors import ConfigError
from otel_rl.settings import env_default
from otel_rl.sinks.base import require

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MlflowTracesConfig:
    """``mlflow_traces:`` section: a tracking *server* URI (env ``MLFLOW_TRACKING_URI``)."""

    enabled: bool = False
    tracking_uri: str = env_default("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    experiment: str = env_default("MLFLOW_EXPERIMENT_NAME", "otel-rl")
    timeout_s: float = 10.0

    def validate(self, path: str) -> None:
        if not self.tracking_uri.startswith(("http://", "https://")):
            raise ConfigError(f"{path}.tracking_uri: {self.tracking_uri!r} is not allowed; MLflow "
                              "ingests traces only on a tracking server: use http:// or https://")


class MlflowTraceExporter(SpanExporter):
    """OTLP/HTTP span exporter aimed at an MLflow server's ``/v1/traces``."""

    def __init__(self, config: MlflowTracesConfig | None = None) -> None:
        require("mlflow", "mlflow")
        self.config = config or MlflowTracesConfig()
        # MLflow's client: no retries of its own (ours are bounded), its timeout is ours
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(self.config.timeout_s))))
        self._inner = None
        self._lock = threading.Lock()
        self._closed = False

    def experiment_id(self) -> str:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.config.tracking_uri)
        exp = client.get_experiment_by_name(self.config.experiment)
        return exp.experiment_id if exp else client.create_experiment(self.config.experiment)

    def _exporter(self):
        if self._inner is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self._inner = OTLPSpanExporter(
                endpoint=self.config.tracking_uri.rstrip("/") + "/v1/traces",
                headers={"x-mlflow-experiment-id": self.experiment_id()}, timeout=self.config.timeout_s)
        return self._inner

    def export(self, spans: Sequence) -> SpanExportResult:
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            try:
                return self._exporter().export(spans)
            except Exception as exc:  # server down or refusing: report, never raise into the SDK
                _log.warning("mlflow_traces: export of %d spans failed: %s", len(spans), exc)
                return SpanExportResult.FAILURE

    def export_request(self, request) -> bool:
        """Forward an already encoded ``ExportTraceServiceRequest`` (the collector's path)."""
        import urllib.request

        if self._closed:
            return False
        try:
            with self._lock:
                if not hasattr(self, "_experiment"):
                    self._experiment = self.experiment_id()
            req = urllib.request.Request(
                self.config.tracking_uri.rstrip("/") + "/v1/traces", data=request.SerializeToString(),
                headers={"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": self._experiment},
                method="POST")
            with urllib.request.urlopen(req, timeout=self.config.timeout_s) as response:
                return 200 <= response.status < 300
        except Exception as exc:
            _log.warning("mlflow_traces: forwarding spans failed: %s", exc)
            return False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        """Never waits long on an export in flight to a hung server (its own timeout ends it)."""
        self._closed = True
        if not self._lock.acquire(timeout=1.0):
            return
        try:
            if self._inner is not None:
                self._inner.shutdown()
                self._inner = None
        finally:
            self._lock.release()
