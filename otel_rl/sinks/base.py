"""The sink contract every backend implements.

A backend subclasses :class:`Sink` and implements :meth:`Sink.write` (an admitted
:class:`Batch`) and :meth:`Sink.close` (with the run's final status). Everything else (queues,
retries, spools, deadlines) lives once in :mod:`otel_rl.route.delivery`; the one adapter to the
OTel SDK's ``MetricExporter`` is :mod:`otel_rl.route.sdk`. What the sink needs to know of its
run comes in a :class:`SinkContext` at :meth:`Sink.bind`, before the first write.

Errors a write raises are classified by :func:`otel_rl.route.retry.classify`:
:class:`~otel_rl.errors.TransientError` and ``OSError`` (connection refused, timeouts, a full
disk) are retried; :class:`~otel_rl.errors.PermanentError` and errors that mean the data itself
is bad (``TypeError``, ``ValueError``, ...) are not; anything else is retried a bounded number
of times, then treated as permanent.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_rl.errors import MissingExtraError, SinkClosedError
from otel_rl.model.records import Batch

_log = logging.getLogger(__name__)


#: Run statuses a sink is closed with.
SUCCESS, FAILED, KILLED = "success", "failed", "killed"


@dataclass(frozen=True)
class SinkContext:
    """What a sink is told of its run before the first write (:meth:`Sink.bind`).

    - ``resource``: the sending process's OTel resource attributes (service name, run id, rank,
      world size).
    - ``resume``: a run id that the backend already holds from an earlier process continues that
      backend run (True) or starts a new one (False, the default; docs/guarantees.md, "Runs").
    """

    resource: dict[str, Any] = field(default_factory=dict)
    resume: bool = False


def require(module: str, extra: str):
    """Import an optional dependency, or raise an error that names the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module, extra) from exc


def _missing(module: str, extra: str) -> MissingExtraError:
    return MissingExtraError(f"{module!r} is not installed; install it with: pip install 'otel-rl[{extra}]'")


class LazyModule:
    """An optional dependency checked now (installed, or :class:`MissingExtraError` naming the
    extra) and imported on first use: backend SDKs take seconds to import (MLflow about 2 s, W&B
    about 1 s), so the helper can say it is ready first and import them after (:meth:`Sink.preload`,
    one after the other), while the run already takes values."""

    def __init__(self, module: str, extra: str) -> None:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise _missing(module, extra)
        self.__dict__.update(_name=module, _extra=extra, _module=None)

    @property
    def loaded(self) -> bool:
        return self.__dict__["_module"] is not None

    def load(self):
        """The module, imported now if it is not yet."""
        module = self.__dict__["_module"]
        if module is None:
            module = self.__dict__["_module"] = require(self.__dict__["_name"], self.__dict__["_extra"])
        return module

    def __getattr__(self, attr: str):
        return getattr(self.load(), attr)


class WarnOnce:
    """Log a warning once per key (bounded, so hostile keys cannot grow it without end)."""

    def __init__(self, logger: logging.Logger, limit: int = 10_000) -> None:
        self._log = logger
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, key: str, message: str, *args) -> None:
        if key in self._seen or len(self._seen) >= self._limit:
            return
        self._seen.add(key)
        self._log.warning(message, *args)


class Sink(ABC):
    """Base class for backends: one ``write`` per admitted batch, in order, from one thread."""

    #: The registry name, e.g. ``"tensorboard"``.
    name: str = ""
    #: The port the sink listens on (Prometheus' ``/metrics``), else None.
    port: int | None = None
    #: From :class:`SinkContext`: continue a backend run of the same id instead of a new one.
    resume: bool = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.warn_once = WarnOnce(logging.getLogger(f"otel_rl.sinks.{self.name}"))
        #: Who is writing: the spool id when fed from a spool (so a restarted process finds its
        #: own backend runs again), else a random id of this sink instance.
        self.instance = uuid.uuid4().hex[:12]

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self, run: str) -> str:
        """Where run ``run``'s data goes (a directory, a URL), for the startup log."""
        return self.name

    def bind(self, context: SinkContext) -> None:
        """Learn the run's context before the first write (the engine calls it once)."""
        self.resume = context.resume

    def location(self, run: str) -> str | Path | None:
        """Where run ``run`` can be found (a directory, a URL), or None: :meth:`describe` then says
        where the data goes."""
        return None

    def replay_target(self) -> str | None:
        """This sink as an ``otel-rl replay --to`` target (no secrets in it), or None when replay
        cannot write to it."""
        return None

    def needs_preload(self) -> bool:
        """Whether :meth:`preload` has an SDK to import."""
        return any(isinstance(v, LazyModule) and not v.loaded for v in vars(self).values())

    def preload(self) -> None:
        """Import the backend SDK this sink uses (its :class:`LazyModule` attributes). Called
        for every sink in one thread before their delivery threads start: SDK imports running
        in several threads at once deadlocked (W&B's own lazy numpy import against another
        thread importing numpy)."""
        for value in list(vars(self).values()):
            if isinstance(value, LazyModule):
                value.load()

    def open(self, run: str) -> None:  # noqa: B027 - optional: most backends open at the first write
        """Start the backend's run ``run`` now, at the training's start (so its start time and
        runtime are the training's), instead of at the first write. Default: nothing to do."""

    def open_run(self, run: str) -> None:
        """:meth:`open` under the sink's lock; errors are logged (the first write opens it again)."""
        with self._lock:
            if self._closed:
                return
            try:
                self.open(run)
            except Exception as exc:
                _log.warning("%s: could not open run %r at start (%s); it opens at the first write",
                             self.name, run, exc)

    def write_batch(self, batch: Batch) -> None:
        """:meth:`write` under the sink's lock; raises :class:`SinkClosedError` after shutdown."""
        with self._lock:
            if self._closed:
                raise SinkClosedError(f"{self.name}: write after shutdown ({len(batch)} records not written)")
            if batch:
                self.write(batch)

    def force_flush(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            try:
                self.flush()
            except Exception:
                _log.exception("%s: flush failed", self.name)
                return False
        return True

    def shutdown(self, status: str = SUCCESS) -> None:
        """Close once with the run's final status; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.close(status)
            except Exception:
                _log.exception("%s: close failed", self.name)

    # -- durable state (sinks that can make a replay after a crash exact) ---------------------
    def bind_spool(self, spool_id: str, state: dict | None) -> None:
        """Called once before the first write when this sink is fed from a spool: ``state`` is
        what :meth:`checkpoint_state` returned at the spool's last checkpoint (None: none yet).
        Subclasses that override it call this one."""
        self.instance = spool_id

    def checkpoint_state(self) -> dict | None:
        """JSON-able state saved with the spool checkpoint after each delivered batch."""
        return None

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Write one batch. Raise :class:`PermanentError` for a refusal that retrying cannot
        fix, :class:`TransientError` (or ``OSError``) for one that may pass later. A retried
        batch is passed again as the same object, so a sink that writes in chunks can resume
        where it stopped."""

    def flush(self) -> None:  # noqa: B027 - optional: a sink that writes through has nothing to flush
        """Make everything written so far durable/visible."""

    @abstractmethod
    def close(self, status: str = SUCCESS) -> None:
        """Flush and release the backend (called once); ``status`` is the run's outcome."""




