"""Which process writes a TensorBoard run directory: one writer per directory, decided by a lock.

A run directory's event files appear only at its first write, so two processes that started
with one run name at once both saw an empty directory and wrote into it together (80
interleaved points for 40 steps). Now the process that chooses ``<log_dir>/<dir>`` holds a lock
on it for as long as any of its sinks writes there; another process that would choose it finds
it held and takes ``<run>-2`` (``-3``, ...). The kernel releases the lock when the holder exits,
a SIGKILL included, so a restarted process gets its directory back.

The locks are POSIX record locks on one byte per directory (at an offset hashed from its name)
of ``<log_dir>/.otel-rl-writers``: one descriptor per log dir, however many runs a collector
writes (a file per run directory would cost a descriptor per run). Record locks belong to the
process, so sinks of one process share a directory as before (counted here).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from pathlib import Path

LOCK_NAME = ".otel-rl-writers"


def _offset(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=7).digest(), "big")


class RunDirLocks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[Path, list] = {}  # resolved log dir -> [fd, {directory name: sinks holding it}]

    def claim(self, directory: Path) -> bool:
        """Hold ``directory`` for this process; False when another live process holds it."""
        log_dir, name = directory.parent.resolve(), directory.name
        with self._lock:
            entry = self._files.get(log_dir)
            if entry is None:
                flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                try:
                    log_dir.mkdir(parents=True, exist_ok=True)
                    fd = os.open(log_dir / LOCK_NAME, flags, 0o644)
                except OSError:  # the log dir cannot be written: the first write reports it, as before
                    return True
                entry = self._files[log_dir] = [fd, {}]
            fd, held = entry
            if name in held:
                held[name] += 1
                return True
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(name))
            except OSError:
                self._close_if_unused(log_dir)
                return False
            held[name] = 1
            return True

    def release(self, directory: Path) -> None:
        log_dir, name = directory.parent.resolve(), directory.name
        with self._lock:
            entry = self._files.get(log_dir)
            if entry is None or name not in entry[1]:
                return
            entry[1][name] -= 1
            if entry[1][name] <= 0:
                del entry[1][name]
                fcntl.lockf(entry[0], fcntl.LOCK_UN, 1, _offset(name))
                self._close_if_unused(log_dir)

    def _close_if_unused(self, log_dir: Path) -> None:
        fd, held = self._files[log_dir]
        if not held:
            del self._files[log_dir]
            os.close(fd)


RUN_DIR_LOCKS = RunDirLocks()
