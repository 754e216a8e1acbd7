"""The one contract between a run and the place its route runs (:class:`Route`), and the
choice of that place (:func:`start_route`).

A run hands its tape's records to a route; the route translates, admits and delivers them
(:class:`~otel_rl.route.engine.Engine`). Two places implement it: the training process itself
(:class:`~otel_rl.runtime.local.LocalRoute`, ``helper: false``) and the helper process
(:class:`~otel_rl.runtime.remote.RemoteRoute`, the default), so the run has no branch on the
mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from otel_rl.route.deadline import Deadline
from otel_rl.sinks import registry

if TYPE_CHECKING:
    from otel_rl.config import Config


class Route(Protocol):
    #: Records per :meth:`send` at most (a bigger burst goes in several), or None: any number.
    frame_records: int | None

    @property
    def backlogged(self) -> bool:
        """True while the route cannot take more records (the tape's own bounds apply)."""

    @property
    def sinks(self) -> list:
        """The run's sinks (descriptions of them where they live in another process)."""

    def pid(self) -> int | None:
        """The process the route runs in, when it is not this one."""

    def send(self, records: list, step: int | None, release: bool, now: float) -> None:
        """Hand records over; ``release``: the step now is complete too (a flush, the end)."""

    def tick(self, step: int | None, now: float) -> None:
        """Nothing new was recorded: do what waits on time (release held steps, write on)."""

    def describe(self, wait: bool = True) -> list[str]:
        """Where the data goes, one line per sink; ``wait=False``: what is known now, without
        asking the helper (busy importing backend SDKs right after start)."""

    def flush(self, deadline: Deadline) -> bool:
        """Wait until every record handed over is written by every sink."""

    def stats(self) -> dict[str, Any]:
        """The route's self-metrics (per-sink counts, the helper's counters)."""

    def close(self, status: str, deadline: Deadline) -> bool:
        """Deliver what is held and close every sink with the run's ``status``; True when
        everything was delivered."""

    def interrupt(self) -> str:
        """Stop delivering now (Ctrl-C during the exit flush): what was handed over stays where
        it is durable; returns one sentence saying where, and how to send it later."""


def start_route(config: Config, run_name: str, rank: int, resource: dict[str, Any]) -> Route:
    """The helper process when ``helper`` is set and a metric sink is enabled, else this one."""
    if config.pipeline.helper and any(registry.spec(name).exporter is not None for name in config.enabled()):
        from otel_rl.runtime.remote import RemoteRoute

        return RemoteRoute.start(config, run_name, rank, resource)
    from otel_rl.runtime.local import LocalRoute

    return LocalRoute(config, run_name, rank, resource)
