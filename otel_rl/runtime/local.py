"""The route in the training process (``helper: false``): the engine runs on the run's drain
thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otel_rl.route.deadline import Deadline
from otel_rl.route.engine import Engine, spool_root

if TYPE_CHECKING:
    from otel_rl.config import Config


class LocalRoute:
    frame_records = None
    backlogged = False

    def __init__(self, config: Config, run_name: str, rank: int, resource: dict[str, Any]) -> None:
        self.engine = Engine(config, run_name, rank, resource, root=spool_root(config))

    @property
    def sinks(self) -> list:
        return self.engine.sinks

    def pid(self) -> int | None:
        return None

    def send(self, records: list, step: int | None, release: bool, now: float) -> None:
        self.engine.process(records, step, release, now)

    def tick(self, step: int | None, now: float) -> None:
        self.engine.process([], step, False, now)

    def describe(self, wait: bool = True) -> list[str]:
        return self.engine.describe()

    def flush(self, deadline: Deadline) -> bool:
        return self.engine.flush(deadline)

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def close(self, status: str, deadline: Deadline) -> bool:
        return self.engine.shutdown(deadline, status)

    def interrupt(self) -> str:
        """The sinks' threads stop with the process: spooled points stay in the spool."""
        root = self.engine.root
        if root is None:
            return "points still queued for a backend are not delivered (configure a spool to keep them)"
        return f"what was not delivered is kept in {root}; send it with `otel-rl replay {root}`"
