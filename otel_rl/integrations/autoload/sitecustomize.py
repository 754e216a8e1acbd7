"""Loaded by Python at start-up in every process under ``otel-rl run`` (this folder is first on
``PYTHONPATH``): captures ``SummaryWriter`` calls, then runs the ``sitecustomize`` that this one
hides, if there is one."""

import importlib.machinery
import importlib.util
import os
import sys

try:
    from otel_rl.integrations.tensorboard import patch_tensorboard

    patch_tensorboard()
except Exception as exc:  # noqa: BLE001 - never stop the user's program from starting
    print(f"otel-rl run: SummaryWriter calls are not captured ({exc})", file=sys.stderr)

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
