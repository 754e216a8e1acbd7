"""The pipe between the training process and its helper: numbered frames.

Wire format, both directions: ``<u32 length><u8 type><u64 number>`` then ``length`` bytes of
pickle. Frame types: :data:`HELLO`, :data:`RECORDS`, :data:`FLUSH`, :data:`STATS`,
:data:`SHUTDOWN` from the training process; :data:`READY`, :data:`ACK`, :data:`REPLY`,
:data:`LOG` from the helper.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import struct

_HEAD = struct.Struct("<IBQ")


# training process -> helper
HELLO, RECORDS, FLUSH, STATS, SHUTDOWN = range(5)


# helper -> training process
READY, ACK, REPLY, LOG = range(4)


#: The helper's exit status when it could not store a frame (a full disk): restart and resume.
DISK_EXIT = 3


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


class HelperError(RuntimeError):
    """The helper process could not start, or failed in a way that stops the run."""


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
