"""The training process's end of the helper process (:class:`HelperLink`).

``otel_rl.init`` starts a helper process (:func:`otel_rl.runtime.child.main`) where the engine
runs: translation, admission, spools and every backend's SDK, off the training loop's GIL. The
training process keeps the tape and a drain thread that hands records over as numbered frames
(:mod:`otel_rl.runtime.frames`). Frames are kept until the helper acknowledges them (stored in
every sink's spool or in its checkpoint); a helper that dies is restarted and sent every frame
after its last checkpoint; the training loop never waits for it. docs/architecture.md, "The
helper process", has the whole contract.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from otel_rl.runtime.frames import (
    _HEAD,
    ACK,
    HELLO,
    LOG,
    PIPE_BYTES,
    READY,
    RECORDS,
    REPLY,
    SHUTDOWN,
    HelperError,
    _dumps_records,
    _frame,
    _grow_pipe,
    _rebuild_error,
    _relog,
    _write_all,
    read_frame,
)

_log = logging.getLogger("otel_rl.helper")


#: Seconds the training process waits for a helper to start (build its sinks) and say READY.
START_TIMEOUT_S = 120.0
MAX_BACKOFF_S = 10.0


#: The helper's command. It registers the package ``otel_rl`` without running its
#: ``__init__`` (the public API and the OpenTelemetry SDK: about 90 ms of imports the helper
#: never uses, half of its start) and imports the helper's modules from it.
_HELPER_MAIN = ("import sys, types; from importlib.util import find_spec; spec = find_spec('otel_rl'); "
                "package = types.ModuleType('otel_rl'); package.__spec__, package.__file__ = spec, spec.origin; "
                "package.__path__ = list(spec.submodule_search_locations); sys.modules['otel_rl'] = package; "
                "from otel_rl.runtime.child import run; run(sys.argv)")

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
        self._ending = False  # shutting down or abandoned: the helper's exit is expected, not a crash
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
                [sys.executable, "-c", _HELPER_MAIN, str(to_helper_r), str(from_helper_w)],
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
                    if not self._closed and not self._ending:
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
        if self._closed or self._ending or time.monotonic() < self._retry_at:
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
        self._ending = True  # it exits right after its reply
        reply = self.call(SHUTDOWN, {"status": status, "timeout_s": deadline.left()}, deadline.left() + 0.5)
        if reply is not None:
            self.final_stats = reply["stats"]
        elif acked:  # a helper still busy (importing a backend SDK, a hung backend) finishes on its own
            _log.error("otel-rl: the helper (pid %s) did not answer by the shutdown deadline; it goes on "
                       "delivering on its own, and what it cannot deliver is left in the spool %s for the next "
                       "start (or `otel-rl replay`)", self._proc.pid if self._proc else "?", self._hello.get("root"))
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

    def kill(self, ending: bool = False) -> None:
        """End the helper at once (tests, and a training process that gives up on it: ``ending``,
        so its end is not reported as a crash to restart from)."""
        with self._lock:
            proc = self._proc
            self._ending = self._ending or ending
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


_links: weakref.WeakSet[HelperLink] = weakref.WeakSet()


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





















