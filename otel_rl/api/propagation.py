"""Carry the trace context (and the step) to threads, child processes and Ray-like workers.

The standard W3C ``traceparent`` propagator does the work; these helpers pick the carrier:

- threads: ``pool.submit(otel_rl.api.propagation.bind(fn), ...)`` runs ``fn`` in the caller's
  context (Python threads do not inherit contextvars);
- child processes: ``subprocess.Popen(cmd, env=otel_rl.api.propagation.child_env())``, then in
  the child ``with otel_rl.api.propagation.attached(otel_rl.api.propagation.from_env()):``;
- Ray-like workers: send ``inject()`` (a small dict) with the task, and wrap the task body in
  ``with attached(carrier):``.

``inject`` also carries the current training step (``otel-rl-step``), so workers can
``set_step`` to stay aligned.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, propagate

from otel_rl.api import step as _step

STEP_KEY = "otel-rl-step"
_ENV_KEYS = {"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE", "baggage": "BAGGAGE",
             STEP_KEY: "OTEL_RL_STEP"}


def inject() -> dict[str, str]:
    """The current trace context (and step) as a string dict."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    step = _step.get_step()
    if step is not None:
        carrier[STEP_KEY] = str(step)
    return carrier


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) plus the carrier as ``TRACEPARENT``/... variables."""
    env = dict(os.environ if base is None else base)
    env.update({_ENV_KEYS[k]: v for k, v in inject().items() if k in _ENV_KEYS})
    return env


def from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The carrier that :func:`child_env` put into the environment."""
    env = os.environ if env is None else env
    return {key: env[var] for key, var in _ENV_KEYS.items() if var in env}


@contextmanager
def attached(carrier: Mapping[str, str]) -> Iterator[None]:
    """Run the block in the context of ``carrier`` (spans become children of the sender's)."""
    token = context.attach(propagate.extract(dict(carrier)))
    if STEP_KEY in carrier and carrier[STEP_KEY].isdigit():
        _step.set_step(int(carrier[STEP_KEY]))
    try:
        yield
    finally:
        context.detach(token)


def bind(fn: Callable) -> Callable:
    """``fn`` bound to the caller's context, for running on another thread."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args, **kwargs):
        return ctx.run(fn, *args, **kwargs)

    return bound
