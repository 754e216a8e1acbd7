"""Attribute and metric names otel-rl puts on the OTel stream (the wire contract)."""

from otel_rl._step import NONFINITE_ATTRIBUTE, STEP_ATTRIBUTE

#: Resource attribute naming the training run; all ranks of one run share it.
RUN_ID = "otel_rl.run.id"
#: Resource attributes for distributed training.
RANK = "otel_rl.rank"
WORLD_SIZE = "otel_rl.world_size"
#: A gauge whose point attributes are the run's hyperparameters (value 1), like a
#: Prometheus info metric; sinks turn it into their hyperparameter API.
HPARAMS_METRIC = "otel_rl.hparams"
#: NONFINITE_ATTRIBUTE: OTel SDKs drop NaN/inf measurements; a sender may carry them as value 0
#: plus this attribute ("nan", "inf", "-inf"), which translation restores (otel-rl's own
#: recording sends NaN/inf as they are).

#: The SDK's overflow marker: points past the cardinality limit are merged here.
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"

__all__ = ["STEP_ATTRIBUTE", "RUN_ID", "RANK", "WORLD_SIZE", "HPARAMS_METRIC", "NONFINITE_ATTRIBUTE",
           "OVERFLOW_ATTRIBUTE"]
