"""What the framework integrations share: the otel-rl config of a framework's run."""

from __future__ import annotations

import dataclasses
import importlib.abc
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from otel_rl.config import Config, load_config
from otel_rl.config.dialects import adapt
from otel_rl.model.tape import flatten
from otel_rl.settings import read_mapping

_log = logging.getLogger(__name__)

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


def numbers_and_texts(values: dict) -> tuple[dict[str, Any], dict[str, str]]:
    """A framework's ``log`` dict split into values to plot (numbers; numpy and torch 0-d values
    as numbers) and texts (strings), nested dicts flattened with ``/`` as ``Logger`` does."""
    flat = flatten(values)
    texts = {name: value for name, value in flat.items() if isinstance(value, str)}
    numbers = {name: value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value
               for name, value in flat.items() if name not in texts}
    return numbers, texts


def after_import(names: Iterable[str], patch: Callable[[Any], None]) -> None:
    """Call ``patch(module)`` for each module of ``names``: at once for those already imported,
    else right after the module's own code has run (an import hook). A failing patch is logged;
    the import itself always succeeds."""
    names = tuple(names)
    for name in names:
        if name in sys.modules:
            _patched(patch, sys.modules[name])
    for finder in sys.meta_path:
        if isinstance(finder, _PatchFinder) and finder.patch is patch:
            return
    sys.meta_path.insert(0, _PatchFinder(names, patch))


def _patched(patch: Callable[[Any], None], module: Any) -> None:
    try:
        patch(module)
    except Exception as exc:  # noqa: BLE001 - never break the user's import
        _log.warning("otel-rl: could not patch %s (%s); it is not captured", module.__name__, exc)


class _PatchFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the modules it watches so that ``patch`` runs after them."""

    def __init__(self, names: tuple[str, ...], patch: Callable[[Any], None]) -> None:
        self.names, self.patch = names, patch

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, self.patch)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, patch: Callable[[Any], None]) -> None:
        self._loader, self._patch = loader, patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _patched(self._patch, module)
