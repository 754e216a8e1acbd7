"""A durable, append-only spool (WAL) of translated batches, one per sink.

Layout: ``<dir>/seg-00000001.log``, ... plus ``checkpoint.json``. Each record is framed as
``<u32 length><u32 crc32><payload>``; the payload is the batch as compact JSON. Appends are
flushed (and fsynced when ``fsync``) before :meth:`Spool.append` returns, so a caller can
acknowledge data once it is in the spool. :meth:`Spool.ack` checkpoints the sink's progress
atomically (write, fsync, rename); after a restart, reading resumes at the checkpoint, so an
acknowledged batch is neither lost nor delivered twice by the spool (at most the one batch in
flight at a crash is offered again; sinks make that idempotent per (run, metric, step)).

A torn record at the end of the last segment (a crash mid-write) is detected by its length and
checksum, logged and cut off. Fully consumed segments are deleted. ``max_bytes`` bounds the
spool: :meth:`append` returns False when the batch does not fit, and the caller applies its
policy (the collector answers 503 so the sender retries; the in-process pipeline drops the
batch and counts it: training is never blocked).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import threading
import zlib
from pathlib import Path

from otel_rl.exporters.records import Batch, HistogramValue, Point, RunParams

_log = logging.getLogger(__name__)
_FRAME = struct.Struct("<II")


def encode_batch(batch: Batch) -> bytes:
    points = []
    for p in batch.points:
        value = p.value
        if isinstance(value, HistogramValue):
            value = {"h": [value.count, value.sum, value.min, value.max, [list(b) for b in value.buckets]]}
        points.append([p.run, p.name, p.step, value, p.time, p.kind, [list(a) for a in p.attributes], p.rank])
    params = [[r.run, r.params, r.time] for r in batch.params]
    return json.dumps({"p": points, "r": params}, separators=(",", ":")).encode()


def decode_batch(payload: bytes) -> Batch:
    doc = json.loads(payload)
    points = []
    for run, name, step, value, t, kind, attrs, rank in doc["p"]:
        if isinstance(value, dict):
            count, total, lo, hi, buckets = value["h"]
            value = HistogramValue(count, total, _f(lo), _f(hi), tuple(tuple(b) for b in buckets))
        points.append(Point(run, name, step, value, t, kind, tuple(tuple(a) for a in attrs), rank))
    return Batch(points, [RunParams(run, params, t) for run, params, t in doc["r"]])


def _f(x) -> float:
    return math.nan if x is None else float(x)


class Spool:
    """One sink's spool. Thread-safe: one appender and one reader may run concurrently."""

    def __init__(self, directory: str | Path, max_bytes: int = 1 << 30, segment_bytes: int = 16 << 20,
                 fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        for path in sorted(self.dir.glob("seg-*.log")):
            self._sizes[int(path.stem[4:])] = path.stat().st_size
        self.cursor = self._load_checkpoint()
        if self._sizes:
            self._repair_tail(max(self._sizes))
        self._segment = max(self._sizes, default=self.cursor[0])
        self._file = open(self._path(self._segment), "ab")
        self._sizes.setdefault(self._segment, self._file.tell())

    def _path(self, segment: int) -> Path:
        return self.dir / f"seg-{segment:08d}.log"

    def _load_checkpoint(self) -> tuple[int, int]:
        try:
            doc = json.loads((self.dir / "checkpoint.json").read_text())
            return int(doc["segment"]), int(doc["offset"])
        except (OSError, ValueError, KeyError):
            return (min(self._sizes, default=1), 0)

    def _repair_tail(self, segment: int) -> None:
        path, good = self._path(segment), 0
        with open(path, "rb") as f:
            data = f.read()
        while good + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, good)
            end = good + _FRAME.size + length
            if end > len(data):
                break  # torn: the last write did not complete
            if zlib.crc32(data[good + _FRAME.size:end]) != crc:
                _log.error("spool %s: corrupt record at %s:%d; reading will stop there", self.dir, path.name, good)
                return  # corruption, not a torn tail: keep the bytes, let read() report it
            good = end
        if good != len(data):
            _log.warning("spool %s: cut a torn record at the end of %s (%d bytes)", self.dir, path.name,
                         len(data) - good)
            with open(path, "r+b") as f:
                f.truncate(good)
            self._sizes[segment] = good

    @property
    def pending_bytes(self) -> int:
        seg, off = self.cursor
        return sum(size for s, size in self._sizes.items() if s >= seg) - off

    def append(self, batch: Batch) -> bool:
        """Durably append ``batch``; False (nothing written) when the spool is full."""
        payload = encode_batch(batch)
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self.pending_bytes + len(frame) > self.max_bytes:
                return False
            if self._sizes[self._segment] + len(frame) > self.segment_bytes and self._sizes[self._segment]:
                self._file.close()
                self._segment += 1
                self._file = open(self._path(self._segment), "ab")
                self._sizes[self._segment] = 0
            self._file.write(frame)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._sizes[self._segment] += len(frame)
        return True

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
            with open(self._path(seg), "rb") as f:
                f.seek(off)
                length, crc = _FRAME.unpack(f.read(_FRAME.size))
                payload = f.read(length)
            if zlib.crc32(payload) != crc:
                raise ValueError(f"spool {self.dir}: corrupt record at {seg}:{off}")
            return decode_batch(payload), (seg, off + _FRAME.size + length)

    def ack(self, cursor: tuple[int, int]) -> None:
        """Checkpoint: everything before ``cursor`` was delivered. Deletes consumed segments."""
        tmp = self.dir / "checkpoint.json.tmp"
        with open(tmp, "w") as f:
            json.dump({"segment": cursor[0], "offset": cursor[1]}, f)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / "checkpoint.json")
        with self._lock:
            self.cursor = cursor
            for seg in [s for s in self._sizes if s < cursor[0]]:
                del self._sizes[seg]
                self._path(seg).unlink(missing_ok=True)

    def __iter__(self):
        """Every unacknowledged batch, in order (for replay tools); does not ack."""
        cursor = self.cursor
        while (item := self.read(cursor)) is not None:
            batch, cursor = item
            yield batch

    def close(self) -> None:
        with self._lock:
            self._file.close()
