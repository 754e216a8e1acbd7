"""The collector's self-metrics as OpenTelemetry instruments (STYLE.md #14).

Requests, points, rejections, duplicates, queue depths, drops, retries and worker errors are
observable instruments of the collector's own ``MeterProvider``. ``GET /metrics`` collects
them and renders them through the same path as any other telemetry: translation, admission
and otel-rl's Prometheus sink (so counters end in ``_total`` and carry ``run="otel-rl-collector"``):

- ``otel_rl_collector_{requests,received_points,rejected_points,duplicate_batches,
  ingress_errors,received_spans,forwarded_spans,received_log_records,rejected_log_records,
  late_points,partial_groups}_total``;
- ``otel_rl_collector_rejected_requests_total{reason}``;
- ``otel_rl_collector_pending_groups`` (gauge);
- ``otel_rl_collector_sink_{exported,dropped,quarantined}_points_total{sink}``,
  ``..._sink_{failed_attempts,worker_errors}_total{sink}``, ``..._sink_queued_points{sink}``
  and ``..._sink_broken{sink}`` (1 while the sink's worker reports an error).
"""

from __future__ import annotations

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from otel_rl.model.decode import translate_sdk
from otel_rl.route.admit import Stream
from otel_rl.sinks.prometheus import PrometheusConfig, PrometheusExporter

_COLLECTOR_COUNTERS = ("requests", "received_points", "rejected_points", "duplicate_batches", "ingress_errors",
                       "received_spans", "forwarded_spans", "dropped_spans", "received_log_records",
                       "rejected_log_records")
_SINK_COUNTERS = ("exported_points", "dropped_points", "quarantined_points", "failed_attempts", "worker_errors")


class SelfMetrics:
    def __init__(self, collector) -> None:
        self._collector = collector
        self._reader = InMemoryMetricReader()
        self._provider = MeterProvider(resource=Resource.create({"service.name": "otel-rl-collector"}),
                                       metric_readers=[self._reader], shutdown_on_exit=False)
        meter = self._provider.get_meter("otel_rl_collector")
        stats = collector.stats
        for name in _COLLECTOR_COUNTERS:
            meter.create_observable_counter(f"otel_rl.collector.{name}",
                                            [lambda o, n=name: [Observation(getattr(stats, n))]])
        reducer = collector.reducer
        meter.create_observable_counter("otel_rl.collector.late_points", [lambda o: [Observation(reducer.late_points)]])
        meter.create_observable_counter("otel_rl.collector.partial_groups",
                                        [lambda o: [Observation(reducer.partial_groups)]])
        meter.create_observable_gauge("otel_rl.collector.pending_groups", [lambda o: [Observation(reducer.pending)]])
        meter.create_observable_counter("otel_rl.collector.rejected_requests", [self._by_reason])
        for name in _SINK_COUNTERS:
            meter.create_observable_counter(f"otel_rl.collector.sink.{name}", [self._per_sink(name)])
        meter.create_observable_gauge("otel_rl.collector.sink.queued_points", [self._per_sink("queued_points")])
        meter.create_observable_gauge("otel_rl.collector.sink.broken", [self._broken])
        self._prometheus = PrometheusExporter(PrometheusConfig(enabled=True), serve=False)

    def _by_reason(self, options: CallbackOptions):
        return [Observation(n, {"reason": reason}) for reason, n in dict(self._collector.stats.by_reason).items()]

    def _per_sink(self, name: str):
        def observe(options: CallbackOptions):
            return [Observation(getattr(w.stats, name), {"sink": w.sink.name}) for w in self._collector.workers]
        return observe

    def _broken(self, options: CallbackOptions):
        return [Observation(1 if w.broken else 0, {"sink": w.sink.name}) for w in self._collector.workers]

    def render(self) -> str:
        """Collect the instruments and render them as Prometheus text."""
        batch = Stream().admit(translate_sdk(self._reader.get_metrics_data()).batch)
        self._prometheus.write_batch(batch)
        return self._prometheus.render()

    def shutdown(self) -> None:
        self._provider.shutdown()
        self._prometheus.shutdown()
