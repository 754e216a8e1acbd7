"""What the framework integrations share: the otel-rl config of a framework's run."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from otel_rl.config import Config, load_config
from otel_rl.config.dialects import adapt
from otel_rl.settings import read_mapping

#: Where a framework's project name goes, unless the config names one.
PROJECT_KEYS = (("wandb", "project"), ("swanlab", "project"), ("mlflow", "experiment"))


def run_config(config: Config | dict | str | None = None, *, run_name: Any = None, project: Any = None) -> Config:
    """``config`` (a :class:`Config`, a dict or a YAML path), else the file in ``OTEL_RL_CONFIG``,
    else the defaults. ``run_name`` and ``project`` are the framework's own names: the run is
    named ``run_name`` and ``project`` is the W&B/SwanLab project and MLflow experiment of the
    backends the config turns on, unless the config names them itself."""
    if not isinstance(config, Config):
        mapping = read_mapping(config if config is not None else os.environ.get("OTEL_RL_CONFIG"), "otel-rl config")
        if project and adapt(dict(mapping))[1] is None:  # otel-rl's own form (not a NeMo-RL/RLinf one)
            for section, key in PROJECT_KEYS:
                if isinstance(mapping.get(section), dict):
                    mapping[section] = {key: str(project), **mapping[section]}
        config = load_config(mapping)
    if run_name and config.pipeline.run_name is None:
        config = dataclasses.replace(config, pipeline=dataclasses.replace(config.pipeline, run_name=str(run_name)))
    return config


def numbers_and_texts(values: dict, prefix: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """A framework's ``log`` dict split into values to plot (numbers, numpy and torch scalars;
    nested dicts flattened with ``/``) and texts (strings)."""
    numbers: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            inner_numbers, inner_texts = numbers_and_texts(value, name + "/")
            numbers.update(inner_numbers)
            texts.update(inner_texts)
        elif isinstance(value, str):
            texts[name] = value
        else:
            numbers[name] = value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value
    return numbers, texts
