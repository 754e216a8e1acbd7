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
import weakref

from otel_rl.api import globals as _globals
from otel_rl.api import propagation
from otel_rl.api.current import current_run as _current_pipeline
from otel_rl.api.logger import Logger
from otel_rl.api.run import Pipeline
from otel_rl.api.step import get_step, set_step
from otel_rl.api.summary import SummaryWriter
from otel_rl.api.timing import span
from otel_rl.config import Config, load_config
from otel_rl.errors import ConfigError, MissingExtraError
from otel_rl.model.semconv import STEP_ATTRIBUTE
from otel_rl.model.tables import DEFAULT_NAME as _DEFAULT_SAMPLES
from otel_rl.sources import gpu

__all__ = [
    "STEP_ATTRIBUTE", "Config", "ConfigError", "Logger", "MissingExtraError", "Pipeline", "SummaryWriter",
    "get_pipeline", "get_step", "init", "load_config", "log_audio", "log_hyperparams", "log_image", "log_samples",
    "log_video", "patch_tensorboard", "set_step", "shutdown",
    "span", "propagation", "gpu",
]
__version__ = "0.1.0"

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_active: Pipeline | None = None
_ended: weakref.ref[Pipeline] | None = None  # the run the last shutdown() ended


def init(config: Config | dict | str | None = None, *, set_global: bool = True) -> Pipeline:
    """Start a run: build the embedded pipeline from ``config`` (dict, YAML path or
    :class:`Config`) and make it the current run.

    The OTel global meter and tracer providers (set once per process, on the first ``init``)
    record into the *current* run: the last ``init`` of this thread/context, else the last one in
    the process (the global logger provider too: a log record with an ``event_name`` is a row of
    samples, see :mod:`otel_rl.api.samples`). So a notebook can ``init`` again after ``shutdown``,
    and a sweep can run one run per thread; each run is complete and separate. ``set_global=False`` leaves the OTel
    globals alone (use ``pipeline.get_meter``/``get_tracer``).
    """
    global _active
    if set_global:
        _globals.check_no_foreign_meter_provider()
    pipeline = Pipeline(config)
    pipeline.activate()
    with _lock:
        _active = pipeline
    if set_global:
        _globals.install("otel_rl.init", strict=True)
    return pipeline


def log_hyperparams(params: dict) -> None:
    """Record the current run's hyperparameters (nested dicts flattened with ``/``): the HParams
    plugin in TensorBoard, the run config in W&B and SwanLab, params in MLflow."""
    _run_for("log_hyperparams").log_hyperparams(params)


def log_samples(rows, step: int | None = None, name: str = _DEFAULT_SAMPLES) -> None:
    """Record rows of samples (generations: prompt, response, reward, ...) as one table at
    ``step`` (default: the current step) in the current run: a W&B Table, a markdown table in
    TensorBoard's text plugin, a growing MLflow table, SwanLab Text; over OTLP one log record
    per row. ``rows``: a list of dicts, a dict of equal-length columns, or a DataFrame. Limits:
    ``samples.max_rows`` per call, ``samples.max_chars`` per cell (see :mod:`otel_rl.api.samples`)."""
    _run_for("log_samples").log_samples(rows, step, name)


def log_image(name: str, image, step: int | None = None, dataformats: str = "HWC", caption: str | None = None) -> None:
    """An image at ``step`` (default: the current step) in the current run: an array in
    ``dataformats`` (float in [0, 1] or uint8; ``NHWC``/``NCHW``: a grid) or a PNG/JPEG path.
    Encoded off the training thread; TensorBoard's image tab, W&B and SwanLab images, MLflow's
    ``log_image``."""
    _media("log_image", "image", name, image, step, dataformats=dataformats, caption=caption)


def log_video(name: str, video, step: int | None = None, fps: float = 4, caption: str | None = None) -> None:
    """A video at ``step``: ``(T, C, H, W)`` or ``(N, T, C, H, W)`` frames (an animated GIF), or a
    GIF/MP4 file (gymnasium's ``RecordVideo``; TensorBoard shows GIFs only)."""
    _media("log_video", "video", name, video, step, fps=fps, caption=caption)


def log_audio(name: str, audio, step: int | None = None, sample_rate: int = 44100, caption: str | None = None) -> None:
    """Audio samples in [-1, 1] (or a WAV file) at ``step``, as 16-bit WAV."""
    _media("log_audio", "audio", name, audio, step, sample_rate=sample_rate, caption=caption)


def _media(function: str, kind: str, name: str, value, step: int | None, **options) -> None:
    from otel_rl.api.media import put_media
    from otel_rl.model.steps import check_step

    recorder = _run_for(function).recorder
    put_media(recorder, kind, name, value, recorder.step if step is None else check_step(step), **options)


def patch_tensorboard(config: dict | str | None = None) -> None:
    """Record every ``SummaryWriter`` call (tensorboardX's and ``torch.utils.tensorboard``'s) into
    otel-rl too, like ``wandb.tensorboard.patch()``; the writers keep writing their own files. The
    same as running the script under ``otel-rl run``: see :mod:`otel_rl.integrations.tensorboard`."""
    from otel_rl.integrations.tensorboard import patch_tensorboard as patch

    patch(config)


def _run_for(function: str) -> Pipeline:
    """The current run; after it ended, the run that ended (which counts and warns about what
    comes too late, as every API does); an error only when no run was ever started."""
    pipeline = _current_pipeline() or _active or (_ended() if _ended is not None else None)
    if pipeline is None:
        raise RuntimeError(f"otel_rl.{function}: no run; call otel_rl.init() first")
    return pipeline


def get_pipeline() -> Pipeline | None:
    """The pipeline of the current run, if any."""
    return _current_pipeline() or _active


def shutdown(timeout_s: float | None = None, status: str | None = None) -> bool:
    """Flush and close the current run's pipeline, returning within ``timeout_s`` (default: the
    run's ``shutdown_timeout_s``) (+ a little) whatever the backends do; ``status``
    (``success``, ``failed``, ``killed``; default: ``failed`` after an uncaught exception) is the
    run's final state in the backends.
    Runs at interpreter exit for every pipeline not shut down. True when everything was delivered."""
    global _active, _ended
    pipeline = _current_pipeline() or _active
    with _lock:
        if _active is pipeline:
            _active = None
    if pipeline is None:
        return True
    _ended = weakref.ref(pipeline)
    return pipeline.shutdown(timeout_s, status)
