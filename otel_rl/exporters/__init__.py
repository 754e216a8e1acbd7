"""Backend exporters. Each backend module imports its SDK lazily; see :mod:`.registry`."""

from otel_rl.exporters import registry
from otel_rl.exporters.base import MissingExtraError, RecordExporter
from otel_rl.exporters.records import Batch, HistogramValue, Point, RunParams

__all__ = ["registry", "RecordExporter", "MissingExtraError", "Batch", "HistogramValue", "Point", "RunParams"]
