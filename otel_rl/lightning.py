"""``Trainer(logger=OtelRLLogger())``: the public name of :mod:`otel_rl.integrations.lightning`."""

from otel_rl.integrations.lightning import OtelRLLogger

__all__ = ["OtelRLLogger"]
