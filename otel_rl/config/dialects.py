"""Logger configs of other frameworks, accepted as they are (docs/integrations.md has the table).

- **NeMo-RL** (``nemo_rl.utils.logger.LoggerConfig``): ``log_dir``, ``wandb_enabled``,
  ``tensorboard_enabled``, ``mlflow_enabled``, ``swanlab_enabled``, ``wandb: {project, name,
  entity}``, ``swanlab: {project, name}``, ``tensorboard: {log_dir}``, ``mlflow: {experiment_name,
  run_name, tracking_uri}``, ``monitor_gpus``, ``gpu_monitoring: {collection_interval,
  flush_interval}``, ``num_val_samples_to_print``. Backends write under ``log_dir`` as NeMo-RL's
  do (``<log_dir>/tensorboard``, ``/wandb``, ``/swanlab``).
- **RLinf** (``runner.logger``): ``log_path``, ``project_name``, ``experiment_name``,
  ``logger_backends`` (``tensorboard``, ``wandb``, ``swanlab``, and ``mlflow`` here),
  ``wandb_entity``, ``wandb_proxy``, ``swanlab_mode``.

A whole training config works too: its ``logger:`` (NeMo-RL) or ``runner.logger`` (RLinf)
section is used and the other sections are the trainer's business. Unknown keys inside a
logger section are refused with the allowed list, like otel-rl's own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from otel_rl.errors import ConfigError

_log = logging.getLogger(__name__)

NEMO_RL_KEYS = {"log_dir", "wandb_enabled", "tensorboard_enabled", "mlflow_enabled", "swanlab_enabled", "wandb",
                "tensorboard", "swanlab", "mlflow", "monitor_gpus", "gpu_monitoring", "num_val_samples_to_print"}
_NEMO_MARKERS = {"wandb_enabled", "tensorboard_enabled", "mlflow_enabled", "swanlab_enabled", "monitor_gpus"}
_NEMO_SECTIONS = {
    "wandb": {"project", "name", "entity", "log_nemo_gym_full_result_tables"},
    "swanlab": {"project", "name"},
    "tensorboard": {"log_dir"},
    "mlflow": {"experiment_name", "run_name", "tracking_uri", "run_id", "artifact_location"},
    "gpu_monitoring": {"collection_interval", "flush_interval"},
}
RLINF_KEYS = {"log_path", "project_name", "experiment_name", "logger_backends", "wandb_entity", "wandb_proxy",
              "swanlab_mode"}
_RLINF_BACKENDS = ("tensorboard", "wandb", "swanlab", "mlflow")


def adapt(source: dict) -> tuple[dict, str | None, str | None]:
    """``(otel-rl config, framework, its base log dir)``; ``(source, None, None)`` for otel-rl's own."""
    framework = None
    section = source
    if isinstance(source.get("runner"), Mapping) and isinstance(source["runner"].get("logger"), Mapping):
        section, framework = dict(source["runner"]["logger"]), "rlinf"
    elif isinstance(source.get("logger"), Mapping):
        section = dict(source["logger"])
        framework = "rlinf" if "logger_backends" in section or "log_path" in section else "nemo-rl"
    elif _NEMO_MARKERS & set(source):
        framework = "nemo-rl"
    elif {"logger_backends", "log_path"} & set(source):
        framework = "rlinf"
    if framework is None:
        return source, None, None
    allowed = NEMO_RL_KEYS if framework == "nemo-rl" else RLINF_KEYS
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{framework} logger config: {unknown[0]!r} is not a {framework} logger key; "
                          f"allowed: {', '.join(sorted(allowed))}")
    if framework == "nemo-rl":
        return _nemo_rl(section), framework, str(section.get("log_dir") or "logs")
    return _rlinf(section), framework, str(section.get("log_path") or "logs")


def _nemo_rl(cfg: dict) -> dict:
    for name, keys in _NEMO_SECTIONS.items():
        sub = cfg.get(name) or {}
        if not isinstance(sub, Mapping):
            raise ConfigError(f"nemo-rl logger config: {name!r} must be a mapping, got {sub!r}")
        unknown = sorted(set(sub) - keys)
        if unknown:
            raise ConfigError(f"nemo-rl logger config: {name}.{unknown[0]} is not a key of NeMo-RL's {name} "
                              f"config; allowed: {', '.join(sorted(keys))}")
    base = str(cfg.get("log_dir") or "logs")
    wandb, swanlab, mlflow = cfg.get("wandb") or {}, cfg.get("swanlab") or {}, cfg.get("mlflow") or {}
    out: dict[str, Any] = {
        # NeMo-RL's TensorboardLogger writes to <log_dir>/tensorboard and ignores tensorboard.log_dir
        "tensorboard": {"enabled": bool(cfg.get("tensorboard_enabled", False)), "log_dir": f"{base}/tensorboard"},
        "wandb": {"enabled": bool(cfg.get("wandb_enabled", False)), "dir": f"{base}/wandb",
                  **{k: wandb[k] for k in ("project", "entity") if wandb.get(k)}},
        "swanlab": {"enabled": bool(cfg.get("swanlab_enabled", False)), "logdir": f"{base}/swanlab",
                    **({"project": swanlab["project"]} if swanlab.get("project") else {})},
        "mlflow": {"enabled": bool(cfg.get("mlflow_enabled", False)),
                   **({"experiment": mlflow["experiment_name"]} if mlflow.get("experiment_name") else {}),
                   **({"tracking_uri": mlflow["tracking_uri"]} if mlflow.get("tracking_uri") else {})},
        "gpu": {"enabled": bool(cfg.get("monitor_gpus", False))},
    }
    if cfg.get("num_val_samples_to_print"):  # Logger.log_samples prints that many rows of each table
        out["samples"] = {"print_rows": int(cfg["num_val_samples_to_print"])}
    interval = (cfg.get("gpu_monitoring") or {}).get("collection_interval")
    if interval:
        out["gpu"]["interval_s"] = float(interval)
    name = wandb.get("name") or mlflow.get("run_name") or swanlab.get("name")
    if name:
        out["run_name"] = str(name)
    return out


def _rlinf(cfg: dict) -> dict:
    backends = cfg.get("logger_backends", ["tensorboard"])
    backends = [backends] if isinstance(backends, str) else list(backends or [])
    unknown = [b for b in backends if b not in _RLINF_BACKENDS]
    if unknown:
        raise ConfigError(f"rlinf logger config: logger_backends: {unknown[0]!r} is not supported; allowed: "
                          f"{', '.join(_RLINF_BACKENDS)}")
    base = str(cfg.get("log_path") or "logs")
    project = str(cfg.get("project_name") or "rlinf")
    out: dict[str, Any] = {
        "run_name": str(cfg.get("experiment_name") or "default"),
        "tensorboard": {"enabled": "tensorboard" in backends, "log_dir": f"{base}/tensorboard"},
        "wandb": {"enabled": "wandb" in backends, "dir": f"{base}/wandb", "project": project,
                  **({"entity": cfg["wandb_entity"]} if cfg.get("wandb_entity") else {})},
        "swanlab": {"enabled": "swanlab" in backends, "logdir": f"{base}/swanlab", "project": project,
                    **({"mode": cfg["swanlab_mode"]} if cfg.get("swanlab_mode") else {})},
        "mlflow": {"enabled": "mlflow" in backends, "experiment": project},
    }
    if cfg.get("wandb_proxy"):
        import os

        os.environ.setdefault("HTTPS_PROXY", str(cfg["wandb_proxy"]))  # what wandb.Settings(https_proxy) sets
    return out
