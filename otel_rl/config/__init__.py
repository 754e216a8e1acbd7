"""One config (YAML file, dict or env) for the whole pipeline.

Precedence for every field: explicit value, then its env var (``OTEL_RL_*`` or
the standard ``OTEL_*``), then the default; resolved when the config object is
built, never at import. Errors name the field, the bad value and what is
allowed::

    tensorboard:
      enabled: true
      log_dir: runs
    otlp:
      enabled: false          # defaults to true when OTEL_EXPORTER_OTLP_ENDPOINT is set
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from otel_rl.config.dialects import adapt
from otel_rl.errors import ConfigError
from otel_rl.model.tables import SamplesConfig
from otel_rl.route.retry import RetryPolicy
from otel_rl.settings import build, env_default, positive, read_mapping, writable_dir
from otel_rl.sinks import registry
from otel_rl.sources.gpu import GpuConfig
from otel_rl.sources.system import SystemMetricsConfig


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Top-level settings (every backend section is separate, see :func:`load_config`).

    - ``run_name``: the run id on every point (env ``OTEL_RL_RUN_NAME``, else ``otel_rl.run.id`` from
      ``OTEL_RESOURCE_ATTRIBUTES``, else ``run-<time>-<pid>``).
    - ``rank`` / ``world_size``: this process's place in a distributed job (env ``RANK`` /
      ``WORLD_SIZE``, as torchrun sets them); a collector reduces the ranks' values per step.
    - ``service_name``: OTel ``service.name`` (env ``OTEL_SERVICE_NAME``, default ``otel-rl``);
      ``OTEL_RESOURCE_ATTRIBUTES`` is honored too.
    - ``export_interval_s``: seconds between exports (env ``OTEL_METRIC_EXPORT_INTERVAL``, in ms).
    - ``flush_every_steps``: drain the run's tape early once this many new steps are pending.
    - ``max_queue_points``: per-sink queue bound; past it batches are dropped and counted.
    - ``spool_dir``: keep each sink's queue in a durable spool under ``<spool_dir>/<sink>``
      (env ``OTEL_RL_SPOOL_DIR``): a backend outage or a crash loses nothing queued, and a
      restart replays it; ``spool_max_bytes`` bounds each (full: new batches dropped, counted).
      With a rank set, each rank gets ``<spool_dir>/rank-<n>/``; a directory is locked by the
      process using it.
    - ``shutdown_timeout_s``: the deadline for the shutdown that runs at interpreter exit.
    - ``resume``: a ``run_name`` that a backend already holds from an earlier process starts a
      new backend run by default (TensorBoard ``<run>-2``, a new MLflow run, a new W&B run);
      ``true`` continues it. A process restarted on its spool always continues its own run.
    - ``helper``: run the engine (translation, spools, every backend's SDK) in a helper process
      off the training loop's GIL (env ``OTEL_RL_HELPER``; default true); ``false`` runs it on
      threads of the training process. See :mod:`otel_rl.runtime.link`.
    - ``helper_buffer_bytes``: frames handed to the helper and not yet acknowledged, at most;
      past it the tape's own bounds apply (the loop slows, then drops and counts).
    - ``helper_nice``: the helper's scheduling niceness (``os.nice``; 0: as the training
      process). Telemetry never competes with training for a core: on a machine with no core to
      spare the helper runs behind, its spool holds what waits, and nothing is lost.
    """

    run_name: str = env_default("OTEL_RL_RUN_NAME", None)
    rank: Optional[int] = env_default("RANK", None, int)
    world_size: Optional[int] = env_default("WORLD_SIZE", None, int)
    service_name: str = env_default("OTEL_SERVICE_NAME", "otel-rl")
    export_interval_s: float = env_default("OTEL_METRIC_EXPORT_INTERVAL", 1.0, float, scale=1e-3)
    spool_dir: Optional[str] = env_default("OTEL_RL_SPOOL_DIR", None)
    spool_max_bytes: int = 1 << 30
    flush_every_steps: int = 2_000
    max_queue_points: int = 100_000
    shutdown_timeout_s: float = 30.0
    resume: bool = False
    helper: bool = env_default("OTEL_RL_HELPER", True, bool)
    helper_buffer_bytes: int = 16 << 20
    helper_nice: int = 10

    def validate(self, path: str) -> None:
        positive(f"{path}.export_interval_s", self.export_interval_s)
        positive(f"{path}.shutdown_timeout_s", self.shutdown_timeout_s)
        for name in ("flush_every_steps", "max_queue_points", "spool_max_bytes",
                     "helper_buffer_bytes"):
            positive(f"{path}.{name}", getattr(self, name))
        if not 0 <= self.helper_nice <= 19:
            raise ConfigError(f"{path}.helper_nice: must be in 0..19, got {self.helper_nice!r}")


@dataclasses.dataclass(frozen=True)
class Config:
    """A validated config: pipeline settings plus one config object per backend section."""

    pipeline: PipelineConfig
    backends: dict[str, Any]
    #: Sections that are not backends: ``gpu`` and ``system_metrics`` (telemetry sources),
    #: ``samples`` (limits of ``log_samples``), ``retry`` (the delivery layer's
    #: :class:`~otel_rl.route.delivery.RetryPolicy`).
    sources: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The framework whose logger config this was read from (``nemo-rl``, ``rlinf``), or None.
    framework: Optional[str] = None
    #: That config's base log directory (NeMo-RL ``log_dir``, RLinf ``log_path``), or None.
    log_dir: Optional[str] = None

    def enabled(self) -> dict[str, Any]:
        return {name: cfg for name, cfg in self.backends.items() if getattr(cfg, "enabled", False)}

    def check_local_dirs(self) -> None:
        """Create every directory an enabled backend writes on this machine and check it takes a
        file (a section declares them with ``local_dirs()``): a typo or a read-only path fails
        at start with the path and the OS error."""
        for name, cfg in self.enabled().items():
            local_dirs = getattr(cfg, "local_dirs", None)  # optional for third-party sections
            for key, directory in (local_dirs() if local_dirs else {}).items():
                writable_dir(f"{name}.{key}", directory)


def load_config(source: Config | Mapping[str, Any] | str | Path | None = None) -> Config:
    """Build a :class:`Config` from a dict, a YAML file path, or nothing (all defaults).

    Top-level keys are the pipeline fields plus one section per backend name. With OTLP export
    on (a section, or ``OTEL_EXPORTER_OTLP_ENDPOINT``), the default TensorBoard sink is off unless
    the config has a ``tensorboard`` section: the collector writes the run, reduced across ranks.
    """
    # sections that are not backends
    source_classes = {"gpu": GpuConfig, "retry": RetryPolicy, "samples": SamplesConfig,
                      "system_metrics": SystemMetricsConfig}

    if isinstance(source, Config):
        return source
    if source is None and os.environ.get("OTEL_RL_CONFIG"):
        source = os.environ["OTEL_RL_CONFIG"]
    source, framework, log_dir = adapt(read_mapping(source, "config"))
    known = registry.names()
    pipeline_fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(source) - pipeline_fields - set(known) - set(source_classes))
    if unknown:
        raise ConfigError(
            f"config.{unknown[0]}: unknown key; backends: {', '.join(known)}; sources: "
            f"{', '.join(source_classes)}; settings: {', '.join(sorted(pipeline_fields))}")
    pipeline = build(PipelineConfig, {k: v for k, v in source.items() if k in pipeline_fields}, "config")
    backends = {name: build(registry.config_class(name), source.get(name), name) for name in known}
    if backends["otlp"].enabled and "tensorboard" not in source and not os.environ.get("OTEL_RL_TENSORBOARD_LOG_DIR"):
        # a rank that exports to a collector does not also write its own partial view of the run
        # into runs/<run> (every rank into one directory, beside the collector's reduced one)
        backends["tensorboard"] = dataclasses.replace(backends["tensorboard"], enabled=False)
    sources = {name: build(cls, source.get(name), name) for name, cls in source_classes.items()}
    return Config(pipeline, backends, sources, framework, log_dir)
