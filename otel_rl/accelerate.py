"""``Accelerator(log_with=OtelRLTracker())``: the public name of :mod:`otel_rl.integrations.accelerate`."""

from otel_rl.integrations.accelerate import OtelRLTracker

__all__ = ["OtelRLTracker"]
