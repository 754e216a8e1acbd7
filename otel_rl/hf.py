"""``import otel_rl.hf`` registers ``report_to="otel_rl"`` with the Hugging Face ``Trainer``: the
public name of :mod:`otel_rl.integrations.hf`."""

from otel_rl.integrations.hf import REPORT_TO, OtelRLCallback, rewrite

__all__ = ["REPORT_TO", "OtelRLCallback", "rewrite"]
