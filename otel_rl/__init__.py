"""otel-rl: instrument training once with OpenTelemetry; every value reaches
TensorBoard, W&B, SwanLab, MLflow and Prometheus at its training step.

Embedded use::

    import otel_rl
    from opentelemetry import metrics

    otel_rl.init({"tensorboard": {"log_dir": "runs"}})
    loss = metrics.get_meter("train").create_gauge("loss")
    for step in range(100):
        otel_rl.set_step(step)
        loss.set(compute_loss())
    otel_rl.shutdown()

``import otel_rl`` imports no backend SDK (they load when a sink is built).
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import metrics as _metrics
from opentelemetry import trace as _trace

from otel_rl._step import STEP_ATTRIBUTE, get_step, set_step
from otel_rl.config import Config, ConfigError, load_config
from otel_rl.exporters.base import MissingExtraError
from otel_rl.logger import Logger
from otel_rl.pipeline import Pipeline
from otel_rl.timing import span

__all__ = [
    "STEP_ATTRIBUTE", "Config", "ConfigError", "Logger", "MissingExtraError", "Pipeline",
    "get_pipeline", "get_step", "init", "load_config", "set_step", "shutdown", "span",
]
__version__ = "0.1.0"

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_active: Pipeline | None = None
_global_set = False


def init(config: Config | dict | str | None = None, *, set_global: bool = True) -> Pipeline:
    """Build the embedded pipeline from ``config`` (dict, YAML path or :class:`Config`).

    With ``set_global`` (default) the OTel global MeterProvider becomes a
    step-stamping wrapper of it and the global TracerProvider its tracer provider, so
    ``opentelemetry.metrics.get_meter()`` and ``trace.get_tracer()`` work unchanged.
    OTel allows the globals to be set once per process; a second ``init`` returns a
    new pipeline whose meters come from ``pipeline.get_meter``. :func:`span` always
    records into the pipeline of the last ``init``.
    """
    global _active, _global_set
    pipeline = Pipeline(config)
    pipeline.activate()
    with _lock:
        _active = pipeline
        if set_global:
            if _global_set:
                _log.warning("otel-rl: the OTel global providers are already set for this process; "
                             "use pipeline.get_meter() / get_tracer() for the new pipeline")
            else:
                _metrics.set_meter_provider(pipeline.step_meter_provider)
                _trace.set_tracer_provider(pipeline.tracer_provider)
                _global_set = True
    return pipeline


def get_pipeline() -> Pipeline | None:
    """The pipeline built by the last :func:`init`, if any."""
    return _active


def shutdown(timeout_s: float = 30.0, status: str | None = None) -> bool:
    """Flush and close the pipeline built by :func:`init`, returning within ``timeout_s``
    (+ a little) whatever the backends do; ``status`` (``success``, ``failed``, ``killed``;
    default: ``failed`` after an uncaught exception) is the run's final state in the backends.
    Runs at interpreter exit for every pipeline not shut down. True when everything was delivered."""
    global _active
    with _lock:
        pipeline, _active = _active, None
    if pipeline is None:
        return True
    return pipeline.shutdown(timeout_s, status)
