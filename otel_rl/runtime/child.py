"""The helper process's main loop (:func:`main`): reads frames, runs the engine, acknowledges
what is stored, answers flush/stats/shutdown requests, and forwards its log records to the
training process (:mod:`otel_rl.runtime.link` describes the link as a whole)."""

from __future__ import annotations

import gc
import logging
import os
import pickle
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from otel_rl.route.deadline import Deadline
from otel_rl.route.engine import Engine
from otel_rl.runtime.frames import (
    ACK,
    DISK_EXIT,
    FLUSH,
    HELLO,
    LOG,
    READY,
    RECORDS,
    REPLY,
    SHUTDOWN,
    STATS,
    _frame,
    _write_all,
    read_frame,
)
from otel_rl.sinks.base import KILLED

_log = logging.getLogger("otel_rl.helper")


# =========================================================================================
# the helper's side
# =========================================================================================
class _Forward(logging.Handler):
    """Send log records to the training process; to stderr when it is gone."""

    def __init__(self, out) -> None:
        super().__init__(logging.INFO)
        self._out = out
        self._fallback = logging.StreamHandler(sys.stderr)
        self._fallback.setFormatter(logging.Formatter("otel-rl helper %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + logging.Formatter().formatException(record.exc_info)
            if not self._out.send(LOG, 0, {"name": record.name, "level": record.levelno, "msg": msg}):
                self._fallback.emit(record)
        except Exception:
            self._fallback.emit(record)


class _Out:
    """The helper's writing end, shared by the main loop and its log handler."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False

    def send(self, kind: int, number: int, body: Any) -> bool:
        data = _frame(kind, number, pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL))
        with self.lock:
            if self.broken:
                return False
            try:
                _write_all(self.fd, data)
                return True
            except OSError:
                self.broken = True
                return False


class _LinesToLog:
    """``sys.stdout`` of the helper: each line a backend SDK prints (SwanLab's banner, a run URL)
    becomes an INFO record of ``otel_rl.backends``, shown by the training process at its log
    level, so banners do not land in the middle of the training output."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, console) -> None:
        self._log = logging.getLogger("otel_rl.backends")
        self._partial = ""
        #: the real standard output, for what otel-rl prints on purpose (the samples preview)
        self.console = console

    def write(self, text: str) -> int:
        lines = (self._partial + str(text)).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._log.info("%s", line.rstrip())
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _route_sdk_logging() -> None:
    """Backend SDKs that print through their own stream handlers (MLflow's ``INFO
    mlflow.store.db.utils``) log through the forwarding root handler instead."""
    for logger in list(logging.root.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger) or logger.name.startswith("otel_rl"):
            continue
        streams = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        if streams:
            for handler in streams:
                logger.removeHandler(handler)
            logger.propagate = True


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    in_fd, out_fd = int(argv[1]), int(argv[2])
    out = _Out(out_fd)
    root_logger = logging.getLogger()
    root_logger.handlers[:] = [_Forward(out)]
    root_logger.setLevel(logging.INFO)
    sys.stdout = _LinesToLog(sys.stdout)
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow's records go through the root handler
    frame = read_frame(in_fd)
    if frame is None or frame[0] != HELLO:
        return 2
    hello = pickle.loads(frame[2])
    nice = hello["config"].pipeline.helper_nice
    if nice:
        try:
            os.nice(nice)
        except OSError as exc:
            _log.warning("otel-rl helper: os.nice(%d) failed (%s); running at the training process's priority",
                         nice, exc)
    try:
        engine = Engine(hello["config"], hello["run_name"], hello["rank"], hello["resource"],
                        root=Path(hello["root"]), fsync=hello["fsync"], numbered=True)
        engine.restore(hello["session"])
        if engine.held and not engine.restored:  # an earlier process's handed-over records
            engine.process([], None, True, time.monotonic(), emission=engine.emission + 1)
            engine.checkpoint(hello["session"])
    except BaseException as exc:  # noqa: BLE001 - reported to the training process, which raises it
        out.send(READY, 0, {"error": (type(exc).__module__, type(exc).__qualname__, str(exc))})
        return 1
    _route_sdk_logging()
    sinks = [{"name": sink.name, "port": sink.port, "describe": line}
             for sink, line in zip(engine.sinks, engine.describe())]
    out.send(READY, 0, {"emission": engine.emission, "sinks": sinks, "pid": os.getpid()})
    # This process is ours and allocates a record object per value, with few reference cycles:
    # the cyclic collector's default (a pass every 700 allocations) cost it a quarter of its CPU.
    # What exists now is kept out of every pass; a pass runs every 50,000 allocations.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    engine.load_sdks()  # on a thread of its own: frames are taken meanwhile, each sink starts when its SDK is in

    session = hello["session"]
    cpu_start = time.process_time()
    points = 0
    status, timeout_s = KILLED, hello["shutdown_timeout_s"]
    while True:
        frame = read_frame(in_fd)
        if frame is None:  # the training process is gone: deliver what it handed over
            _log.warning("otel-rl helper: the training process ended without shutting the run down; "
                         "delivering what it handed over (status %s)", status)
            engine.process([], None, True, time.monotonic(), emission=engine.emission + 1)
            engine.checkpoint(session)
            break
        kind, number, payload = frame
        if kind == RECORDS:
            if number > engine.emission:
                records, step, release, now = pickle.loads(payload)
                points += len(records)
                try:
                    engine.process(records, step, release, now, emission=number)
                    engine.checkpoint(session)
                except OSError as exc:
                    # a spool or the checkpoint could not be written (a full disk): the frame is
                    # not acknowledged, and a restarted helper resumes from the last checkpoint
                    # (the torn tail is cut, spooled emissions are skipped); the training
                    # process keeps the frames meanwhile
                    _log.error("otel-rl helper: frame %d could not be stored under %s (%s); the training "
                               "process keeps it and the helper restarts", number, hello.get("root"), exc)
                    return DISK_EXIT
            out.send(ACK, number, None)
        elif kind == FLUSH:
            body = pickle.loads(payload)
            out.send(REPLY, number, engine.flush(Deadline(body["timeout_s"])))
        elif kind == STATS:
            out.send(REPLY, number, _stats(engine, cpu_start, points))
        elif kind == SHUTDOWN:
            body = pickle.loads(payload)
            status, timeout_s = body["status"], body["timeout_s"]
            engine.process([], None, True, time.monotonic(), emission=engine.emission + 1)
            engine.checkpoint(session)
            ok = engine.shutdown(Deadline(timeout_s), status)
            done = _finish(hello, ok)
            out.send(REPLY, number, {"delivered": ok, "stats": _stats(engine, cpu_start, points)})
            return 0 if done else 1
    ok = engine.shutdown(Deadline(timeout_s), status)
    _finish(hello, ok)
    return 0


def _stats(engine, cpu_start: float, records: int) -> dict[str, Any]:
    stats = engine.stats()
    stats.update(helper_cpu_s=time.process_time() - cpu_start, helper_points=engine.admitted_points,
                 helper_rss_bytes=_rss_bytes(), helper_held_records=engine.held, describe=engine.describe())
    return stats


def _finish(hello: dict, delivered: bool) -> bool:
    """Remove a private spool that holds nothing more; else say where the rest is."""
    if not hello.get("private"):
        return delivered
    if delivered:
        shutil.rmtree(hello["root"], ignore_errors=True)
        return True
    _log.error("otel-rl: not everything was delivered; what is left is kept in %s (once the cause is "
               "fixed, send it with `otel-rl replay %s`)", hello["root"], hello["root"])
    return False


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def run(argv: list[str]) -> None:
    """The helper's entry point: ``main``, then out at once. Its work is done and checkpointed by
    then; what is left is a backend SDK's exit hooks and threads (a hung MLflow call kept an
    orphaned helper, and its spool's lock, for a minute after its deadline)."""
    code = main(argv)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the terminal may be gone
            pass
    os._exit(code)


if __name__ == "__main__":
    run(sys.argv)
