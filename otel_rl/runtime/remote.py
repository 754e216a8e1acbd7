"""The route in the helper process (the default): a :class:`~otel_rl.runtime.link.HelperLink`
seen as a :class:`~otel_rl.runtime.route.Route`."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_rl.route.deadline import Deadline
from otel_rl.route.engine import spool_root
from otel_rl.runtime.frames import FLUSH, STATS
from otel_rl.runtime.link import HelperLink

if TYPE_CHECKING:
    from otel_rl.config import Config

#: Records per frame handed to the helper (a bigger burst goes in several frames).
FRAME_RECORDS = 50_000
class RemoteSink:
    """What the training process knows of a sink that lives in the helper."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.name: str = info["name"]
        self.port: int | None = info.get("port")
        self._describe: str = info.get("describe", self.name)

    def describe(self, run: str = "") -> str:
        return self._describe

    def __repr__(self) -> str:
        return f"RemoteSink({self.name!r})"


def private_spool(run_name: str = "run") -> str:
    """A spool directory of the helper's own, for a run without ``spool_dir``: under
    ``OTEL_RL_HELPER_DIR``, else ``$XDG_STATE_HOME/otel-rl/spool`` (``~/.local/state/otel-rl/spool``),
    a folder that outlives a reboot, so what a backend refused or never took can be replayed. It
    is removed when the run ends with everything delivered."""
    base = os.environ.get("OTEL_RL_HELPER_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state"),
        "otel-rl", "spool")
    os.makedirs(base, mode=0o700, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_name)[:64].lstrip(".") or "run"
    return tempfile.mkdtemp(prefix=f"{safe}-{os.getpid()}-", dir=base)


def new_session() -> str:
    return uuid.uuid4().hex


class RemoteRoute:
    frame_records = FRAME_RECORDS

    def __init__(self, link: HelperLink, root: Path) -> None:
        self.link = link
        self.root = root  # the helper's spool
        self._sinks = [RemoteSink(info) for info in link.ready["sinks"]]
        self._closed = False

    @classmethod
    def start(cls, config: Config, run_name: str, rank: int, resource: dict[str, Any]) -> RemoteRoute:
        """Start the helper and wait until its sinks are built; raises what building them raised."""
        pcfg = config.pipeline
        root = spool_root(config)
        private = root is None
        if private:
            root = Path(private_spool(run_name))
        hello = {"config": config, "run_name": run_name, "rank": rank, "resource": resource,
                 "root": str(root), "private": private, "fsync": not private, "session": new_session(),
                 "shutdown_timeout_s": pcfg.shutdown_timeout_s}
        link = HelperLink(hello, pcfg.helper_buffer_bytes)
        try:
            link.start()
        except BaseException:
            if private:
                shutil.rmtree(root, ignore_errors=True)
            raise
        return cls(link, root)

    @property
    def backlogged(self) -> bool:
        return self.link.backlogged

    @property
    def sinks(self) -> list:
        return list(self._sinks)

    def pid(self) -> int | None:
        return self.link.pid()

    def send(self, records: list, step: int | None, release: bool, now: float) -> None:
        self.link.send(records, step, release, now)

    def tick(self, step: int | None, now: float) -> None:
        self.link.pump(0.1)

    def handed_over(self, deadline: Deadline) -> bool:
        """Wait until the helper acknowledged every frame (stored, so a killed trainer loses
        none of it); False at the deadline."""
        return self.link.wait_acked(deadline)

    def describe(self, wait: bool = True) -> list[str]:
        latest = (None if self._closed or not wait else self.link.call(STATS, None, 10.0)) or self.link.final_stats
        if latest and latest.get("describe"):  # backends that name their run folder once it exists
            return list(latest["describe"])
        return [s.describe() for s in self._sinks]

    def flush(self, deadline: Deadline) -> bool:
        if not self.link.wait_acked(deadline):
            return False
        return self.link.call(FLUSH, {"timeout_s": deadline.left()}, deadline.left() + 0.5) is True

    def stats(self) -> dict[str, Any]:
        out = dict(self.link.call(STATS, None, 10.0) or self.link.final_stats or {})
        out.pop("describe", None)
        out.update(self.link.stats())
        return out

    def close(self, status: str, deadline: Deadline) -> bool:
        self._closed = True
        return self.link.close(status, deadline)

    def interrupt(self) -> str:
        """End the helper at once: every frame it acknowledged is in its spool (the state a
        SIGKILL leaves, which replay resumes), and it writes nothing more to the terminal."""
        self._closed = True
        unacked = self.link.stats()["helper_unacknowledged_frames"]
        self.link.kill(ending=True)
        root = self.root
        lost = f"; {unacked} frames never reached it" if unacked else ""
        return f"what was not delivered is kept in {root}{lost}; send it with `otel-rl replay {root}`"
