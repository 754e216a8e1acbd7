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
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from otel_rl.errors import PermanentError
from otel_rl.model.naming import path_component

_log = logging.getLogger("otel_rl.sinks.tensorboard")

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


def choose(log_dir: Path, run: str, resume: bool, taken: Callable[[Path], bool]) -> str:
    """A directory name under ``log_dir`` for ``run`` that this process now holds: ``<run>``, or
    ``<run>-2`` (``-3``, ...) past the directories another live process holds (their lock) or an
    earlier process wrote (``taken``: event files of another writer); with ``resume`` the latest
    earlier one that no live process holds."""
    base = path_component(run)
    root = log_dir.resolve()
    if (root / base).resolve().parent != root:  # belt and braces: never outside log_dir
        raise PermanentError(f"tensorboard: run {run!r} would resolve outside {root}")
    latest, busy, n = None, [], 1
    while True:
        chosen = base if n == 1 else f"{base}-{n}"
        directory = log_dir / chosen
        if resume and latest is not None and not directory.exists() \
                and RUN_DIR_LOCKS.claim(log_dir / latest):
            return latest  # continue the latest earlier run of that name
        if not RUN_DIR_LOCKS.claim(directory):
            busy.append(str(directory))
        elif taken(directory):
            RUN_DIR_LOCKS.release(directory)
            latest = chosen
        else:
            break
        n += 1
    if busy:
        _log.warning("tensorboard: run %r is being written by another live process at %s; this "
                     "process writes to %s", run, ", ".join(busy), log_dir / chosen)
    elif chosen != base:
        _log.warning("tensorboard: %s already holds run %r from an earlier process; this run "
                     "writes to %s (set resume: true to continue it)", log_dir / base, run,
                     log_dir / chosen)
    return chosen
