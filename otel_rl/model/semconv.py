"""Attribute and metric names otel-rl puts on the OTel stream (the wire contract)."""

#: The point attribute that carries the training step. Prometheus sinks strip it.
STEP_ATTRIBUTE = "step"
#: Steps are int64 in every backend (TensorBoard events, MLflow, the OTLP int attribute).
MAX_STEP = 2**63 - 1

#: Resource attribute naming the training run; all ranks of one run share it.
RUN_ID = "otel_rl.run.id"
#: Resource attributes for distributed training.
RANK = "otel_rl.rank"
WORLD_SIZE = "otel_rl.world_size"
#: A gauge whose point attributes are the run's hyperparameters (value 1), like a
#: Prometheus info metric; sinks turn it into their hyperparameter API.
HPARAMS_METRIC = "otel_rl.hparams"
#: OTel SDKs drop NaN/inf measurements; a sender may carry them as value 0 plus this attribute
#: ("nan", "inf", "-inf"), which translation restores (otel-rl's own recording sends NaN/inf as
#: they are).
NONFINITE_ATTRIBUTE = "otel_rl.nonfinite"
#: The SDK's overflow marker: points past the cardinality limit are merged here.
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"

#: Resource attributes of otel-rl's OTLP sink: which process sent a request, and the id of the
#: batch, so a collector recognises a request sent again after a timeout.
SENDER_ID = "otel_rl.sender.id"
BATCH_ID = "otel_rl.batch.id"
#: Log-record attributes of samples and texts (see :mod:`otel_rl.model.tables`).
KIND_ATTRIBUTE, INDEX_ATTRIBUTE, ROWS_ATTRIBUTE = "otel_rl.kind", "otel_rl.sample.index", "otel_rl.sample.rows"
#: Log-record attributes of an image, video or audio item (``otel_rl.kind`` = ``media``; the
#: body is the encoded bytes): its kind, format, and what viewers need without decoding it.
MEDIA_KIND, MEDIA_FORMAT = "otel_rl.media.kind", "otel_rl.media.format"
MEDIA_FIELDS = ("width", "height", "channels", "fps", "sample_rate", "caption")
