"""The one adapter from a sink to the OTel SDK's ``MetricExporter`` (STYLE.md #2): SDK metrics
are translated, admitted and written like any other batch (DELTA temporality, ``export`` never
raises, FAILURE after shutdown, a harmless double shutdown)."""

from __future__ import annotations

import logging

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
    _Gauge,  # the SDK's public name for the (still experimental) synchronous Gauge
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult

from otel_rl.errors import PermanentError
from otel_rl.model.decode import translate_sdk
from otel_rl.route.admit import Stream
from otel_rl.sinks.base import Sink

_log = logging.getLogger("otel_rl.sinks.base")


#: Every instrument class under DELTA: each collect exports only what was
#: recorded since the last one, so per-step attribute sets do not pile up.
DELTA_TEMPORALITY = {
    cls: AggregationTemporality.DELTA
    for cls in (Counter, UpDownCounter, Histogram, _Gauge,
                ObservableCounter, ObservableUpDownCounter, ObservableGauge)
}


class SinkExporter(MetricExporter):
    """A sink as an OTel SDK ``MetricExporter``: translate, admit, write; never raises."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(preferred_temporality=DELTA_TEMPORALITY)
        self.sink = sink
        self._stream = Stream()

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        if self.sink.closed:
            _log.warning("%s: export after shutdown; nothing written", self.sink.name)
            return MetricExportResult.FAILURE
        try:
            translation = translate_sdk(metrics_data)
            if translation.rejected:
                _log.warning("%s: %d points not translated: %s", self.sink.name, translation.rejected,
                             translation.reason)
            self.sink.write_batch(self._stream.admit(translation.batch))
        except Exception as exc:  # never into the SDK's thread
            _log.error("%s: export failed: %s", self.sink.name, exc, exc_info=not isinstance(exc, PermanentError))
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.sink.force_flush()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.sink.shutdown()
