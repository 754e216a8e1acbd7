"""A durable, append-only spool (WAL) of translated batches, one per sink.

Layout: ``<dir>/seg-00000001.log``, ... plus ``checkpoint.json``. Each record is framed as
``<u32 length><u32 crc32><payload>``; the payload is the batch as a pickle of plain values
(:func:`encode_batch`). Appends are flushed (and fsynced when ``fsync``) before
:meth:`Spool.append` returns (``last_append`` then says where the record is), so a caller can
acknowledge data once it is in the spool. :meth:`Spool.ack` checkpoints the sink's progress
atomically (write, fsync, rename); after a restart, reading resumes at the checkpoint, so an
acknowledged batch is neither lost nor delivered twice by the spool (at most the one batch in
flight at a crash is offered again; sinks make that idempotent per (run, metric, step)).

A torn record at the end of the last segment (a crash mid-write) is detected by its length and
checksum, logged and cut off. A corrupt record elsewhere is *quarantined*: the bytes from it
to the end of its segment move to ``quarantine/`` (reported, never blocking a start or the
reader). Fully consumed segments are deleted. ``max_bytes`` bounds the spool: :meth:`append`
returns False when the batch does not fit, and the caller applies its policy (the collector
answers 503 so the sender retries; the in-process pipeline drops the batch and counts it:
training is never blocked).

A spool directory belongs to one process at a time (an exclusive ``flock`` on ``lock``): a second
process gets :class:`SpoolLockedError`. The checkpoint also carries the consumer's state (:meth:`ack`).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import logging
import os
import stat
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path

from otel_rl.errors import ConfigError, SpoolLockedError
from otel_rl.model.codec import decode_batch, encode_batch
from otel_rl.model.records import Batch

_log = logging.getLogger(__name__)
_FRAME = struct.Struct("<II")


_last_encoded: tuple = (None, b"")

#: Never follow a symlink planted where a spool file goes; close on exec.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def private_opener(path, flags: int) -> int:
    """``open(..., opener=private_opener)``: the file is this user's only (0600), and a symlink
    at ``path`` is refused, not followed (a planted one truncated a victim file)."""
    return os.open(path, flags | _NOFOLLOW, 0o600)


def secure_dir(directory: Path) -> None:
    """Create ``directory`` 0700, or accept an existing one only when this user owns it, it is
    not a symlink, and no one else can write it: whoever can write a spool directory could
    plant state that this process then reads (prompts and generations are in it too)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"spool directory {str(directory)!r} is a symlink; give its real path")
    if st.st_uid != os.geteuid():
        raise ConfigError(f"spool directory {str(directory)!r} belongs to uid {st.st_uid}, not to this "
                          f"process (uid {os.geteuid()}); use a directory of your own")
    if st.st_mode & 0o022:
        raise ConfigError(f"spool directory {str(directory)!r} is writable by others (mode "
                          f"{stat.S_IMODE(st.st_mode):o}); run `chmod go-w {directory}` or use another one")


def _next_frame(data: bytes) -> int:
    """Where the first valid frame after ``data[0]`` begins (``len(data)`` if none)."""
    for i in range(1, len(data) - _FRAME.size + 1):
        length, crc = _FRAME.unpack_from(data, i)
        end = i + _FRAME.size + length
        if length and end <= len(data) and zlib.crc32(data[i + _FRAME.size:end]) == crc:
            return i  # (no record is empty: eight zero bytes are not one)
    return len(data)


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace ``path`` with ``data``: a private temp file, fsynced before the rename (a crash
    leaves the old content or the new, never a torn file), then the directory fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        os.unlink(tmp)  # a leftover of a crash, or something planted: a link is removed, not followed
    except FileNotFoundError:
        pass
    with open(tmp, "xb", opener=private_opener) as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Spool:
    """One sink's spool. Thread-safe: one appender and one reader may run concurrently."""

    def __init__(self, directory: str | Path, max_bytes: int = 1 << 30, segment_bytes: int = 16 << 20,
                 fsync: bool = True, parent: int | None = None, lock_wait_s: float = 0.0) -> None:
        self.dir = Path(directory)
        secure_dir(self.dir)
        self._lock_file = _lock_dir(self.dir, parent, lock_wait_s)
        self.id = _spool_id(self.dir)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        for path in sorted(self.dir.glob("seg-*.log")):
            self._sizes[int(path.stem[4:])] = path.stat().st_size
        self.cursor, self.state = self._load_checkpoint()
        #: The highest ``emission`` (batch meta) appended or acknowledged; -1 when none.
        self.last_emission = int((self.state or {}).get("emission", -1))
        if self._sizes:
            self._repair_tail(max(self._sizes))
        self._segment = max(self._sizes, default=self.cursor[0])
        self._file = open(self._path(self._segment), "ab", opener=private_opener)
        self._sizes.setdefault(self._segment, self._file.tell())
        self.quarantined_records = 0
        self._reserve = self.dir / "reserve"
        self._reserve_ok, self.last_append = self._make_reserve(), None
        self._skips: dict[tuple[int, int], int] = {}  # corrupt stretches: start -> where reading goes on

    def _path(self, segment: int) -> Path:
        return self.dir / f"seg-{segment:08d}.log"

    def _load_checkpoint(self) -> tuple[tuple[int, int], dict | None]:
        path = self.dir / "checkpoint.json"
        try:
            doc = json.loads(path.read_text())
            return (int(doc["segment"]), int(doc["offset"])), doc.get("state")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            moved = self._quarantine_file(path)
            _log.error("spool %s: unreadable checkpoint (%s), moved to %s; reading from the oldest segment",
                       self.dir, exc, moved)
        return (min(self._sizes, default=1), 0), None

    def _repair_tail(self, segment: int) -> None:
        """Cut a torn last record (a crash mid-write); note the last record's emission number, past
        any corrupt record (else batches held after it are appended, and delivered, again)."""
        path, good, last, corrupt = self._path(segment), 0, None, False
        with open(path, "rb") as f:
            data = f.read()
        while good + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, good)
            end = good + _FRAME.size + length
            if end > len(data) and not corrupt:
                break  # torn: the last write did not complete
            if end > len(data) or zlib.crc32(data[good + _FRAME.size:end]) != crc:
                if not corrupt:
                    _log.error("spool %s: corrupt record at %s:%d; it will be quarantined when read",
                               self.dir, path.name, good)
                corrupt = True
                good += _next_frame(data[good:])
                continue
            last, good = data[good + _FRAME.size:end], end
        if last is not None and (segment, good) > tuple(self.cursor):
            try:
                self.last_emission = max(self.last_emission, int(decode_batch(last).meta.get("emission", -1)))
            except (ValueError, AttributeError, TypeError, KeyError):
                _log.error("spool %s: the last record of %s is undecodable; its emission number is unknown",
                           self.dir, path.name)
        if good != len(data) and not corrupt:
            _log.warning("spool %s: cut a torn record at the end of %s (%d bytes)", self.dir, path.name,
                         len(data) - good)
            with open(path, "r+b") as f:
                f.truncate(good)
            self._sizes[segment] = good

    @property
    def pending_bytes(self) -> int:
        seg, off = self.cursor
        return sum(size for s, size in self._sizes.items() if s >= seg) - off

    #: Bytes kept on disk, in a file, for a full disk: deleting it lets the checkpoint of a
    #: delivered batch be written (which frees that batch's space) when nothing else could be.
    RESERVE_BYTES = 256 * 1024

    def _make_reserve(self) -> bool:
        """(Re)create the reserve; False when the disk has no room for it (then new data is
        refused: a disk that full would soon fail appends half-way)."""
        try:
            if not self._reserve.exists() or self._reserve.stat().st_size < self.RESERVE_BYTES:
                with open(self._reserve, "wb", opener=private_opener) as f:
                    if hasattr(os, "posix_fallocate"):
                        os.posix_fallocate(f.fileno(), 0, self.RESERVE_BYTES)
                    else:
                        f.write(b"\0" * self.RESERVE_BYTES)
            return True
        except OSError:
            self._reserve.unlink(missing_ok=True)
            return False

    def append(self, batch: Batch) -> bool:
        """Durably append ``batch``; False (nothing written) when the spool is full. A disk too
        full to keep the reserve raises ``OSError(ENOSPC)``, as a write there would."""
        frame = _encoded(batch)
        with self._lock:
            if self.pending_bytes + len(frame) > self.max_bytes:
                return False
            if not self._reserve_ok:
                self._reserve_ok = self._make_reserve()
                if not self._reserve_ok:  # as a write on a full disk fails: the caller holds the batch
                    raise OSError(errno.ENOSPC, f"no room on the disk of spool {self.dir} for its "
                                  f"{self.RESERVE_BYTES // 1024} KiB reserve")
            if self._sizes[self._segment] + len(frame) > self.segment_bytes and self._sizes[self._segment]:
                new_file = open(self._path(self._segment + 1), "ab", opener=private_opener)  # failing: no change
                self._file.close()
                self._segment += 1
                self._file = new_file
                self._sizes[self._segment] = 0
            size = self._sizes[self._segment]
            try:
                self._file.write(frame)
                self._file.flush()
                if self.fsync:
                    os.fsync(self._file.fileno())
            except OSError:
                self._cut_back(size)
                raise
            self._sizes[self._segment] += len(frame)
            self.last_append = ((self._segment, size), (self._segment, size + len(frame)))  # (at, after)
            emission = batch.meta.get("emission")
            if isinstance(emission, int) and emission > self.last_emission:
                self.last_emission = emission
        return True

    def _cut_back(self, size: int) -> None:
        """Undo a write that failed part-way (a full disk): the segment ends where it did, so the
        next append does not follow a torn record."""
        path = self._path(self._segment)
        try:
            self._file.close()  # the buffer cannot be written either; the file closes regardless
        except OSError:
            pass
        os.truncate(path, size)
        self._file = open(path, "ab", opener=private_opener)

    def read(self, cursor: tuple[int, int] | None = None) -> tuple[Batch, tuple[int, int]] | None:
        """The batch at ``cursor`` (default: the checkpoint) and the cursor after it, or None."""
        seg, off = cursor or self.cursor
        while True:
            with self._lock:
                size = self._sizes.get(seg)
                later = any(s > seg for s in self._sizes)
            if size is None or off >= size:
                if not later:
                    return None
                seg, off = seg + 1, 0
                continue
            skip = self._skips.get((seg, off))
            if skip is not None:  # a corrupt stretch already quarantined
                off = skip
                continue
            with open(self._path(seg), "rb") as f:
                f.seek(off)
                header = f.read(_FRAME.size)
                length, crc = _FRAME.unpack(header) if len(header) == _FRAME.size else (0, -1)
                payload = f.read(min(length, size - off))
            batch = None
            if zlib.crc32(payload) == crc and len(payload) == length:
                try:
                    batch = decode_batch(payload)
                except (ValueError, KeyError, TypeError) as exc:
                    _log.error("spool %s: undecodable record at %d:%d: %s", self.dir, seg, off, exc)
            if batch is None:
                self._skips[(seg, off)] = resume = self._quarantine_range(seg, off, size)
                off = resume
                continue
            return batch, (seg, off + _FRAME.size + length)

    def _quarantine_range(self, seg: int, off: int, size: int) -> int:
        """Copy a corrupt stretch, from ``off`` to the next valid record (or the end of the
        segment), to ``quarantine/``; return where reading goes on."""
        with open(self._path(seg), "rb") as f:
            f.seek(off)
            data = f.read(size - off)
        resume = _next_frame(data)
        qdir = self.dir / "quarantine"
        qdir.mkdir(exist_ok=True)
        target = qdir / f"seg-{seg:08d}-{off}.corrupt"
        with open(target, "wb", opener=private_opener) as f:
            f.write(data[:resume])
        self.quarantined_records += 1
        _log.error("spool %s: corrupt record at %d:%d; %d bytes moved to %s, reading goes on at %d:%d",
                   self.dir, seg, off, resume, target, seg, off + resume)
        return off + resume

    def _quarantine_file(self, path: Path) -> Path:
        qdir = self.dir / "quarantine"
        qdir.mkdir(exist_ok=True)
        target = qdir / f"{path.name}.{int(time.time())}"
        os.replace(path, target)
        return target

    def quarantine(self, batch: Batch, reason: str) -> Path:
        """Keep a batch a sink refused for good (``otel-rl replay`` can resend it)."""
        qdir = self.dir / "quarantine"
        qdir.mkdir(exist_ok=True)
        target = qdir / f"refused-{time.time_ns()}.json"
        doc = {"reason": reason, "batch": base64.b64encode(encode_batch(batch)).decode()}
        write_atomic(target, json.dumps(doc).encode())
        return target

    def ack(self, cursor: tuple[int, int], state: dict | None = None) -> None:
        """Checkpoint: everything before ``cursor`` was delivered, and the consumer's ``state``
        (JSON-able) goes with it atomically. Deletes consumed segments."""
        cursor = self._rotate_if_consumed(cursor)
        doc = {"segment": cursor[0], "offset": cursor[1]}
        if state is not None:
            doc["state"] = state
            emission = state.get("emission")
            if isinstance(emission, int) and emission > self.last_emission:
                self.last_emission = emission
        data = json.dumps(doc).encode()
        try:
            write_atomic(self.dir / "checkpoint.json", data, self.fsync)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # a full disk: give the reserve up so that this checkpoint, which frees the
            # delivered segments, can be written; appends wait until it is back
            with self._lock:
                self._reserve.unlink(missing_ok=True)
                self._reserve_ok = False
            write_atomic(self.dir / "checkpoint.json", data, self.fsync)
        with self._lock:
            self.cursor = cursor
            if state is not None:
                self.state = state
            for seg in [s for s in self._sizes if s < cursor[0]]:
                del self._sizes[seg]
                self._path(seg).unlink(missing_ok=True)

    def _rotate_if_consumed(self, cursor: tuple[int, int]) -> tuple[int, int]:
        """When everything appended was delivered and the segment is big (or the disk is short
        of space), the next append goes to a new segment, so this one is deleted with this
        checkpoint and its space comes back (else the current segment would only shrink the disk)."""
        with self._lock:
            size = self._sizes.get(self._segment, 0)
            if cursor != (self._segment, size) or not size or (self._reserve_ok and size < 1 << 20):
                return cursor
            try:
                new_file = open(self._path(self._segment + 1), "ab", opener=private_opener)
            except OSError:
                return cursor
            self._file.close()
            self._segment += 1
            self._file = new_file
            self._sizes[self._segment] = 0
            return (self._segment, 0)

    def __iter__(self):
        """Every unacknowledged batch, in order (for replay tools); does not ack."""
        cursor = self.cursor
        while (item := self.read(cursor)) is not None:
            batch, cursor = item
            yield batch

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
                self._lock_file = None


def _lock_dir(directory: Path, parent: int | None = None, wait_s: float = 0.0):
    """Take the directory's lock. It says who holds it: ``pid P`` and, for a helper process,
    ``parent Q``, its training process. When the holder is a helper whose training process has
    ended (an orphan still delivering, after a crash), wait up to ``wait_s`` for it to finish: a
    trainer restarted by torchrun or Kubernetes right away then takes over its spool instead of
    failing."""
    f = open(directory / "lock", "a+", opener=private_opener)
    deadline, said = time.monotonic() + wait_s, False
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            if time.monotonic() < deadline and _orphaned(holder):
                if not said:
                    said = True
                    _log.warning("spool %s: held by %s, the helper of a process that ended, still delivering; "
                                 "waiting up to %.0f s for it to finish", directory, holder, wait_s)
                time.sleep(0.2)
                continue
            f.close()
            raise SpoolLockedError(f"spool directory {str(directory)!r} is in use by {holder}; each process needs "
                                   "its own spool directory (with RANK set, ranks get rank-<n>/)") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}" + (f" parent {parent}" if parent else ""))
    f.flush()
    return f


def _orphaned(holder: str) -> bool:
    """Whether the lock's ``holder`` line names a helper whose parent process is gone."""
    words = holder.split()
    if len(words) < 4 or words[2] != "parent" or not words[3].isdigit():
        return False
    try:
        os.kill(int(words[3]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _spool_id(directory: Path) -> str:
    path = directory / "id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = uuid.uuid4().hex[:16]
        write_atomic(path, value.encode())
        return value


def _encoded(batch: Batch) -> bytes:
    """``batch`` framed for a spool, encoded once when several spools take it in turn (a sink
    set hands the same batch to every sink's spool)."""
    global _last_encoded
    last = _last_encoded
    if last[0] is batch:
        return last[1]
    payload = encode_batch(batch)
    frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
    _last_encoded = (batch, frame)
    return frame
