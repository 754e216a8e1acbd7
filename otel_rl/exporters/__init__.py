"""Backend exporters. Each backend module imports its SDK lazily; see :mod:`.registry`."""

from otel_rl.exporters import registry
from otel_rl.exporters.base import MissingExtraError, RecordExporter, Sink, SinkExporter
from otel_rl.exporters.records import Batch, HistogramValue, Point, RunParams

__all__ = ["registry", "Sink", "SinkExporter", "RecordExporter", "MissingExtraError", "Batch", "HistogramValue", "Point", "RunParams"]
