"""The run's helper process: where the engine runs, off the training process's GIL.

A thread in the training process that converts values, talks to four backend SDKs and writes
files still takes the training loop's GIL: measured here, that cost the loop more than the
logging call ever did (README, "What the training loop pays"). So ``otel_rl.init`` starts a
helper process (:func:`main`, in a new interpreter), as W&B runs ``wandb-core``, and the training
process keeps only the recording tape and a drain thread that pickles the tape's tuples into
*frames* and writes them to a pipe. Translation, admission, spools and every backend's Python
run in the helper (:class:`~otel_rl.engine.Engine`).

The link (:class:`HelperLink`, in the training process):

- **Frames are numbered and kept until acknowledged.** The helper acknowledges frame ``n``
  once everything in it is in every sink's spool or in its checkpointed state (the engine's
  held records and running totals, :meth:`~otel_rl.engine.Engine.checkpoint`). The helper
  always has spools: the run's ``spool_dir`` when set, else a private directory of its own
  (removed when the run ends delivered).
- **A helper that dies is restarted** (backoff 0.5 s doubling to 10 s): it restores its
  state, says which frame it had last checkpointed, and is sent every frame after that. Sinks
  skip emissions their spool already holds, so nothing handed over is lost or doubled.
- **The training loop never waits for it.** Writes go out from the drain thread, never more
  than a short wait at a time. Past ``helper_buffer_bytes`` of frames not yet acknowledged
  the drain thread stops taking records, and the tape's own bounds apply (the loop yields,
  then slows, then drops and counts: :class:`~otel_rl.recording.Recorder`).
- **Its log lines are the run's**: records of ``INFO`` and above come back over the pipe and
  are logged in the training process under the same logger name.
- **When the training process dies**, the helper sees the pipe close, emits what it holds,
  delivers what it can within ``shutdown_timeout_s`` (status ``killed``) and exits; a killed
  trainer loses nothing it had handed over.
- The helper ignores SIGINT and SIGTERM: a Ctrl-C or a scheduler's SIGTERM reaches the whole
  process group, and the training process's shutdown (or its death) is what ends the helper.

Wire format, both directions: ``<u32 length><u8 type><u64 number>`` then ``length`` bytes of
pickle. The helper is a child of the training process, started from the same interpreter.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections import deque
from pathlib import Path
from typing import Any

_log = logging.getLogger("otel_rl.helper")
_HEAD = struct.Struct("<IBQ")

# training process -> helper
HELLO, RECORDS, FLUSH, STATS, SHUTDOWN = range(5)
# helper -> training process
READY, ACK, REPLY, LOG = range(4)

#: The helper's exit status when it could not store a frame (a full disk): restart and resume.
DISK_EXIT = 3
#: Seconds the training process waits for a helper to start (build its sinks) and say READY.
START_TIMEOUT_S = 120.0
MAX_BACKOFF_S = 10.0


class HelperError(RuntimeError):
    """The helper process could not start, or failed in a way that stops the run."""


#: The pipe to the helper is grown to this (Linux's default unprivileged maximum), so a frame
#: of a second's records usually goes in one write; best effort elsewhere.
PIPE_BYTES = 1 << 20


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (OSError, ImportError):
        pass  # the default size (64 KiB): more writes per frame, nothing else changes


def _dumps_records(body: tuple) -> bytes:
    """A records frame's pickle, without the memo (about half the drain thread's pickling time:
    records share no objects that need it, and a cyclic value raises, which falls back here)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        pickler.fast = True
        pickler.dump(body)
    except (ValueError, RecursionError, AttributeError):
        return pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL)
    return buffer.getvalue()


def _frame(kind: int, number: int, payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), kind, number) + payload


def _read_exact(fd: int, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        try:
            chunk = os.read(fd, min(left, 1 << 20))
        except InterruptedError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_frame(fd: int) -> tuple[int, int, bytes] | None:
    head = _read_exact(fd, _HEAD.size)
    if head is None:
        return None
    length, kind, number = _HEAD.unpack(head)
    payload = _read_exact(fd, length) if length else b""
    if payload is None:
        return None
    return kind, number, payload


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# =========================================================================================
# the training process's side
# =========================================================================================
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


class HelperLink:
    """The training process's end: starts, feeds, watches and restarts the helper."""

    def __init__(self, hello: dict[str, Any], buffer_bytes: int) -> None:
        self._hello = hello
        self._buffer_bytes = buffer_bytes
        self._lock = threading.Lock()  # frames, replies, the process
        self._write_lock = threading.Lock()  # one writer on the pipe at a time
        self._replied = threading.Condition(self._lock)
        self._unacked: deque[tuple[int, bytes]] = deque()  # (number, frame bytes) in order
        self._unacked_bytes = 0
        self._out = bytearray()  # bytes not yet written to the current helper
        self._next = 1
        self._requests = 0
        self._replies: dict[int, Any] = {}
        self._proc: subprocess.Popen | None = None
        self._to_helper = -1
        self._generation = 0
        self._dead = True
        self._retry_at = 0.0
        self._backoff = 0.5
        self.ready: dict[str, Any] = {}
        self.restarts = 0
        self.frames_sent = 0
        self.records_sent = 0
        self.lost_records = 0
        #: The helper's last :data:`STATS` (sent with its reply to :data:`SHUTDOWN`).
        self.final_stats: dict[str, Any] | None = None
        self._closed = False
        self._from_helper = -1
        _links.add(self)

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start the helper and wait until its sinks are built; raises what building them raised."""
        with self._lock:
            self._spawn_locked()
        return self.ready

    def _spawn_locked(self) -> None:
        to_helper_r, to_helper_w = os.pipe()
        from_helper_r, from_helper_w = os.pipe()
        _grow_pipe(to_helper_w)
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([package_root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from otel_rl.helper import main; sys.exit(main(sys.argv))",
                 str(to_helper_r), str(from_helper_w)],
                pass_fds=(to_helper_r, from_helper_w), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(to_helper_r)
            os.close(from_helper_w)
        try:
            _write_all(to_helper_w, _frame(HELLO, 0, pickle.dumps(self._hello, protocol=pickle.HIGHEST_PROTOCOL)))
            ready = self._await_ready(from_helper_r, proc)
        except BaseException:
            os.close(to_helper_w)
            os.close(from_helper_r)
            _end(proc, 5.0)
            raise
        os.set_blocking(to_helper_w, False)
        self._proc, self._to_helper, self._from_helper = proc, to_helper_w, from_helper_r
        self._generation += 1
        self._dead = False
        self.ready = ready
        last = int(ready.get("emission", 0))
        if self._next <= last:  # a new run on an existing spool: go on from its numbering
            self._next = last + 1
        while self._unacked and self._unacked[0][0] <= last:
            self._pop_acked()
        self._out = bytearray(b"".join(data for _, data in self._unacked))
        threading.Thread(target=self._read_loop, args=(from_helper_r, proc, self._generation),
                         name="otel-rl-helper-reader", daemon=True).start()

    def _await_ready(self, fd: int, proc: subprocess.Popen) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HelperError(f"otel-rl helper (pid {proc.pid}) did not start within {START_TIMEOUT_S:.0f} s")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                if proc.poll() is not None:
                    raise HelperError(f"otel-rl helper exited with {proc.returncode} before it started "
                                      "(its error is on stderr)")
                continue
            frame = read_frame(fd)
            if frame is None:
                raise HelperError(f"otel-rl helper exited with {proc.wait()} before it started "
                                  "(its error is on stderr)")
            kind, _, payload = frame
            body = pickle.loads(payload)
            if kind == LOG:
                _relog(body)
                continue
            if kind != READY:
                raise HelperError(f"otel-rl helper: unexpected frame {kind} before READY")
            if "error" in body:
                raise _rebuild_error(body["error"])
            return body

    def _read_loop(self, fd: int, proc: subprocess.Popen, generation: int) -> None:
        try:
            while True:
                frame = read_frame(fd)
                if frame is None:
                    break
                kind, number, payload = frame
                if kind == ACK:
                    with self._lock:
                        if generation == self._generation:
                            while self._unacked and self._unacked[0][0] <= number:
                                self._pop_acked()
                elif kind == REPLY:
                    with self._lock:
                        self._replies[number] = pickle.loads(payload)
                        self._replied.notify_all()
                elif kind == LOG:
                    _relog(pickle.loads(payload))
        finally:
            with self._lock:
                if self._from_helper == fd:
                    self._from_helper = -1
                os.close(fd)
                if generation == self._generation and not self._dead:
                    self._dead = True
                    self._retry_at = time.monotonic() + self._backoff
                    if not self._closed:
                        _log.error("otel-rl: the helper process (pid %d) ended (exit %s); restarting it in "
                                   "%.1f s, nothing handed over is lost", proc.pid, proc.poll(), self._backoff)
                self._replied.notify_all()

    def _pop_acked(self) -> None:
        _, data = self._unacked.popleft()
        self._unacked_bytes -= len(data)
        self._backoff = 0.5  # it works again

    def _ensure_alive_locked(self) -> bool:
        if not self._dead:
            return True
        if self._closed or time.monotonic() < self._retry_at:
            return False
        old = self._proc
        if self._to_helper >= 0:
            try:
                os.close(self._to_helper)
            except OSError:
                pass
            self._to_helper = -1
        if old is not None:
            _end(old, 2.0)
        try:
            self._spawn_locked()
        except Exception as exc:
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            _log.error("otel-rl: restarting the helper failed (%s); next try in %.1f s", exc, self._backoff)
            return False
        self.restarts += 1
        _log.warning("otel-rl: helper restarted (pid %d); resending %d frames not acknowledged",
                     self._proc.pid, len(self._unacked))
        return True

    # -- frames ---------------------------------------------------------------------------------
    @property
    def backlogged(self) -> bool:
        """True when the frames not yet acknowledged reach ``helper_buffer_bytes``."""
        return self._unacked_bytes >= self._buffer_bytes

    def send(self, records: list, step: int | None, release: bool, now: float, wait_s: float = 0.5) -> None:
        """Hand one frame over (the drain thread); writes what the pipe takes within ``wait_s``."""
        payload = _dumps_records((records, step, release, now))
        with self._lock:
            number = self._next
            self._next += 1
            data = _frame(RECORDS, number, payload)
            self._unacked.append((number, data))
            self._unacked_bytes += len(data)
            self._out += data
            self.frames_sent += 1
            self.records_sent += len(records)
        self.pump(wait_s)

    def pump(self, wait_s: float = 0.5) -> bool:
        """Write pending bytes for at most ``wait_s``; True when nothing is left to write. The
        state lock is not held while waiting on the pipe (the reader thread needs it for acks)."""
        deadline = time.monotonic() + wait_s
        with self._write_lock:
            with self._lock:
                if not self._ensure_alive_locked():
                    return False
                fd = self._to_helper
            while True:
                with self._lock:
                    if not self._out:
                        return True
                    if fd != self._to_helper or self._dead:
                        return False
                    chunk = bytes(self._out[:PIPE_BYTES])
                try:
                    _, writable, _ = select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
                    if not writable:
                        return False
                    n = os.write(fd, chunk)  # non-blocking: what the pipe takes
                except BlockingIOError:
                    continue
                except (OSError, ValueError):  # the helper is gone; the reader thread notices
                    with self._lock:
                        if fd == self._to_helper and not self._dead:
                            self._dead = True
                            self._retry_at = time.monotonic() + self._backoff
                    return False
                with self._lock:
                    if fd == self._to_helper:
                        del self._out[:n]

    def call(self, kind: int, payload: Any, timeout_s: float) -> Any:
        """Send a request and wait for its reply (None on timeout, or when the helper is gone
        or shut down)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._closed:
                return None
            self._requests += 1
            number = self._requests
            self._out += _frame(kind, number, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        while not self.pump(min(0.2, max(0.0, deadline - time.monotonic()))):
            with self._lock:
                if self._closed:
                    return None
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)
        with self._lock:
            while number not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self._dead:
                    return None
                self._replied.wait(min(left, 0.2))
            return self._replies.pop(number)

    def wait_acked(self, deadline) -> bool:
        """Wait (pumping) until every frame is acknowledged; False at the deadline."""
        while True:
            self.pump(min(0.2, deadline.left()))
            with self._lock:
                if not self._unacked:
                    return True
            if deadline.expired:
                return False
            time.sleep(0.005)

    def stats(self) -> dict[str, Any]:
        """The link's counters, as ``stats()`` reports them (``helper_*``)."""
        with self._lock:
            return {"helper_pid": self._proc.pid if self._proc else None, "helper_restarts": self.restarts,
                    "helper_frames": self.frames_sent, "helper_records": self.records_sent,
                    "helper_unacknowledged_frames": len(self._unacked),
                    "helper_unacknowledged_bytes": self._unacked_bytes, "helper_lost_records": self.lost_records}

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self, status: str, deadline) -> bool:
        """Shut the helper down with the run's ``status``: every frame first, then the sinks; by
        the deadline, whatever it does. A helper still delivering then finishes on its own."""
        acked = self.wait_acked(deadline)
        reply = self.call(SHUTDOWN, {"status": status, "timeout_s": deadline.left()}, deadline.left() + 0.5)
        if reply is not None:
            self.final_stats = reply["stats"]
        with self._lock:
            self._closed = True
            unacked = len(self._unacked)
            proc, fd = self._proc, self._to_helper
            self._to_helper = -1
        if unacked:
            records = sum(len(pickle.loads(d[_HEAD.size:])[0]) for _, d in self._unacked)
            self.lost_records += records
            _log.error("otel-rl: %d records (%d frames) were never acknowledged by the helper: not delivered",
                       records, unacked)
        if fd >= 0:
            os.close(fd)  # the helper's last signal: nothing more comes
        if proc is not None and reply is not None:
            try:
                proc.wait(max(0.5, deadline.left()))
            except subprocess.TimeoutExpired:
                pass
        return bool(acked and reply and reply["delivered"])

    def kill(self) -> None:
        """End the helper at once (tests, and a training process that gives up on it)."""
        with self._lock:
            proc = self._proc
        if proc is not None:
            proc.kill()

    def _forget_in_child(self) -> None:
        """A fork of the training process (a DataLoader worker) must not hold the helper's pipe
        open, or the helper would not notice the training process's end."""
        for fd in (self._to_helper, self._from_helper):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to_helper = self._from_helper = -1
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._replied = threading.Condition(self._lock)
        self._closed = True
        self._dead = True


_links: "weakref.WeakSet[HelperLink]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for link in list(_links):
        link._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _end(proc: subprocess.Popen, wait_s: float) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        pass


def _relog(record: dict) -> None:
    logging.getLogger(record["name"]).log(record["level"], "%s", record["msg"])


def _rebuild_error(error: tuple[str, str, str]) -> BaseException:
    """The helper's start-up error as the same exception type here (otel-rl's own and the
    built-in ones), else :class:`HelperError` naming it."""
    import builtins
    import importlib

    module, kind, message = error
    cls = None
    if module == "builtins":
        cls = getattr(builtins, kind, None)
    elif module.startswith("otel_rl"):
        try:
            cls = getattr(importlib.import_module(module), kind, None)
        except ImportError:
            cls = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return HelperError(f"{kind}: {message}")


def private_spool() -> str:
    """A spool directory of the helper's own, for a run without ``spool_dir``."""
    base = os.environ.get("OTEL_RL_HELPER_DIR") or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"otel-rl-{os.getpid()}-", dir=base)


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


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    in_fd, out_fd = int(argv[1]), int(argv[2])
    out = _Out(out_fd)
    root_logger = logging.getLogger()
    root_logger.handlers[:] = [_Forward(out)]
    root_logger.setLevel(logging.INFO)
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
    from otel_rl.delivery import Deadline
    from otel_rl.engine import Engine
    from otel_rl.exporters.base import KILLED

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
    sinks = [{"name": sink.name, "port": getattr(sink, "port", None), "describe": line}
             for sink, line in zip(engine.sinks, engine.describe())]
    out.send(READY, 0, {"emission": engine.emission, "sinks": sinks, "pid": os.getpid()})

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
    _log.error("otel-rl: not everything was delivered; what is left is kept in %s (send it with "
               "`otel-rl replay %s`)", hello["root"], hello["root"])
    return False


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def new_session() -> str:
    return uuid.uuid4().hex


if __name__ == "__main__":
    sys.exit(main(sys.argv))
