"""Which process writes a TensorBoard run directory: one writer per directory, decided by a lock.

A run directory's event files appear only at its first write, so two processes that start with
one run name at once both saw an empty directory and wrote into it together (80 interleaved
points for 40 steps). Now the process that chooses a directory holds an ``flock`` on
``<dir>/.otel-rl-writer`` for as long as any of its sinks writes there; another process that
would choose it finds it held and takes ``<run>-2`` (``-3``, ...). The kernel releases the lock
when the holder exits, a SIGKILL included, so a restarted process gets its directory back.
Sinks of one process share a directory as before (reference-counted).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

LOCK_NAME = ".otel-rl-writer"


class RunDirLocks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Path, list] = {}  # resolved directory -> [fd, sinks holding it]

    def claim(self, directory: Path) -> bool:
        """Hold ``directory`` for this process (creating it); False when another live process
        holds it."""
        key = directory.resolve()
        with self._lock:
            entry = self._held.get(key)
            if entry is not None:
                entry[1] += 1
                return True
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            try:
                key.mkdir(parents=True, exist_ok=True)
                fd = os.open(key / LOCK_NAME, flags, 0o644)
            except OSError:  # the log dir cannot be written: the first write reports it, as before
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._held[key] = [fd, 1]
            return True

    def release(self, directory: Path) -> None:
        key = directory.resolve()
        with self._lock:
            entry = self._held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._held[key]
                os.close(entry[0])  # closing the descriptor releases the flock

    def holder(self, directory: Path) -> str:
        """The pid written by the process holding ``directory`` (for messages), or ``?``."""
        try:
            return (directory / LOCK_NAME).read_text().strip() or "?"
        except OSError:
            return "?"


RUN_DIR_LOCKS = RunDirLocks()
