"""TensorBoard event files written directly: records encoded without protobuf objects, the
file's CRC framing, a torn tail cut back, files shared by writers in one process."""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
import threading
import time
from pathlib import Path

from otel_rl.model.protowire import varint as _varint
from otel_rl.sinks.base import WarnOnce

_log = logging.getLogger("otel_rl.sinks.tensorboard")


_U64, _U32, F32, _F64 = struct.Struct("<Q"), struct.Struct("<I"), struct.Struct("<f"), struct.Struct("<d")


def f32(value: float) -> bytes:
    """``value`` as protobuf stores a ``float`` field: rounded to float32, +-inf past its range."""
    try:
        return F32.pack(value)
    except OverflowError:
        return F32.pack(math.copysign(math.inf, value))


def scalar_prefix(tag: str) -> bytes:
    """The bytes of ``Summary.value`` (field 1) holding ``Value(tag=tag, simple_value=...)``, up to
    the 4 bytes of the float: a scalar record is then built without a protobuf object."""
    raw = tag.encode("utf-8")
    value = b"\x0a" + _varint(len(raw)) + raw + b"\x15"
    return b"\x0a" + _varint(len(value) + 4) + value


def event_bytes(wall_time: float, step: int, summary: bytes) -> bytes:
    """``Event(wall_time, step, summary=Summary(value=...))`` serialized, from the serialized
    ``Summary`` (its repeated ``value`` fields): fields 1 (double), 2 (int64), 5 (message)."""
    return b"\x09" + _F64.pack(wall_time) + b"\x10" + _varint(step) + b"\x2a" + _varint(len(summary)) + summary


def other_scalar(tag: str, value) -> bytes:
    """A scalar whose value is not a Python float (an int, a numpy number): as a float."""
    return scalar_prefix(tag) + f32(float(value))


def set_hparam(slot, value: object) -> None:
    """An HParams ``Value`` (or hparam proto slot) set from a Python value."""
    if isinstance(value, bool):  # before int: isinstance(True, int) holds
        slot.bool_value = value
    elif isinstance(value, (int, float)):
        slot.number_value = float(value)
    else:
        slot.string_value = str(value)


def summary_field(value) -> bytes:
    """A ``Summary.Value`` proto as a serialized ``Summary.value`` field."""
    data = value.SerializeToString()
    return b"\x0a" + _varint(len(data)) + data


def _crc_function():
    try:
        import google_crc32c

        return google_crc32c.value
    except ImportError:  # the pure-Python one from tensorboard: correct, ~100x slower
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c

        return crc32c


class EventFile:
    """An append-only TFRecord file of ``Event`` protos (the format TensorBoard reads)."""

    _counter = 0
    _counter_lock = threading.Lock()

    def __init__(self, logdir: Path, suffix: str | None = None, keep_bytes: int | None = None) -> None:
        """A new event file in ``logdir``; with ``suffix`` (a spool id) the file of that suffix is
        reused if there is one, cut back to ``keep_bytes`` (None: to its header), so records
        written after the last checkpoint, which the spool replays, are not held twice."""
        from tensorboard.compat.proto import event_pb2

        self._event_pb2 = event_pb2
        self._crc = _crc_function()
        logdir.mkdir(parents=True, exist_ok=True)
        existing = sorted(logdir.glob(f"events.out.tfevents.*.{suffix}")) if suffix else []
        if existing:
            self.path = existing[-1]
            _cut(self.path, keep_bytes)
            self._file = open(self.path, "ab")
            return
        with EventFile._counter_lock:
            EventFile._counter += 1
            uid = EventFile._counter
        tail = suffix or f"{os.getpid()}.{uid}"
        self.path = logdir / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{tail}"
        self._file = open(self.path, "ab")
        self.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    @property
    def size(self) -> int:
        return self._file.tell()

    def _masked(self, data: bytes) -> int:
        x = self._crc(data) & 0xFFFFFFFF
        return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    def write(self, event) -> None:
        """Append one record: an ``Event`` proto, or its serialized bytes."""
        self.write_records([event if isinstance(event, bytes) else event.SerializeToString()])

    def write_records(self, records: list[bytes]) -> None:
        """Append serialized ``Event`` records, in one write (the bytes :meth:`write` gives each)."""
        pack, masked, parts = _U64.pack, self._masked, []
        for data in records:
            header = pack(len(data))
            parts += (header, _U32.pack(masked(header)), data, _U32.pack(masked(data)))
        self._file.write(b"".join(parts))

    def flush(self) -> None:
        self._file.flush()

    def rollback(self, size: int) -> None:
        """Cut the file back to ``size`` bytes: a batch that failed half-way (a full disk) leaves
        neither a torn record nor a partial batch that its retry would write again."""
        try:
            self._file.close()  # may fail again flushing what is buffered: that is being dropped
        except OSError:
            pass
        os.truncate(self.path, size)
        self._file = open(self.path, "ab")

    def close(self) -> None:
        self._file.close()


def _cut(path: Path, keep_bytes: int | None) -> None:
    """Truncate an event file to ``keep_bytes``, or to its first record (the version header)."""
    size = path.stat().st_size
    if keep_bytes is None:
        with open(path, "rb") as f:
            header = f.read(8)
        keep_bytes = 16 + struct.unpack("<Q", header)[0] if len(header) == 8 else 0
    if keep_bytes < size:
        _log.info("tensorboard: %s: cutting %d bytes written after the last checkpoint (the spool "
                  "replays them)", path, size - keep_bytes)
        with open(path, "r+b") as f:
            f.truncate(keep_bytes)


class _SharedFiles:
    """One :class:`EventFile` per run directory per process, reference-counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[Path, list] = {}

    def holds(self, logdir: Path) -> bool:
        with self._lock:
            return logdir.resolve() in self._files

    def acquire(self, logdir: Path) -> EventFile:
        key = logdir.resolve()
        with self._lock:
            entry = self._files.get(key)
            if entry is None:
                entry = self._files[key] = [EventFile(key), 0]
            entry[1] += 1
            return entry[0]

    def release(self, logdir: Path) -> None:
        key = logdir.resolve()
        with self._lock:
            entry = self._files.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._files[key]
                entry[0].close()


SHARED_FILES = _SharedFiles()


_warn_media = WarnOnce(_log, limit=1000)  # once per tag
_CANNOT_SHOW = "tensorboard: %r is %s; it is kept in the other backends (warned once per tag)"


def media_field(tag: str, media) -> bytes:
    """An image, video or audio as the serialized ``Summary.value`` field tensorboardX writes:
    ``Summary.Image`` for a PNG, and for a GIF video (TensorBoard's image tab animates it; an MP4
    or WebM is turned into one); ``Summary.Audio`` for a WAV. What TensorBoard cannot show gives
    ``b""``, said once per tag: the other backends keep it."""
    from tensorboard.compat.proto import summary_pb2

    from otel_rl.model.media import as_gif

    if media.kind == "video" and media.format in ("mp4", "webm"):
        try:
            media = as_gif(media)
        except Exception as exc:  # a video TensorBoard cannot show is said, never fatal
            what = f"{media.format.upper()} video TensorBoard cannot show as it is ({exc})"
            _warn_media(tag, _CANNOT_SHOW, tag, what)
            return b""
    if media.format in ("png", "gif", "jpeg") and media.kind in ("image", "video"):
        value = summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
            height=media.height, width=media.width, colorspace=media.channels or 3,
            encoded_image_string=media.data))
    elif media.format == "wav":
        channels = media.channels or 1
        frames = max(0, (len(media.data) - 44) // (2 * channels))
        value = summary_pb2.Summary.Value(tag=tag, audio=summary_pb2.Summary.Audio(
            sample_rate=float(media.sample_rate), num_channels=channels, length_frames=frames,
            encoded_audio_string=media.data, content_type="audio/wav"))
    else:
        _warn_media(tag, _CANNOT_SHOW, tag, f"{media.kind} in {media.format.upper()}, which TensorBoard cannot show")
        return b""
    return summary_field(value)

