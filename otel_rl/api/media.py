"""Images, videos, audio and figures onto a run's tape: the one path of ``SummaryWriter.add_image``
and friends, ``Logger.log_image``/``log_video``/``log_plot`` and ``otel_rl.log_image``.

The training thread checks the shape and copies the array (:func:`otel_rl.model.media.snapshot`);
encoding (PNG, GIF, WAV) happens where the tape is read, off the training thread. An item over
:data:`MAX_ITEM_BYTES` is refused, counted and warned once per tag: a few 4K videos cannot make
the trainer's memory grow without bound.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from otel_rl.model.media import nbytes, snapshot

_log = logging.getLogger(__name__)

#: The largest item the tape takes, in bytes of the array (or the encoded file) given.
MAX_ITEM_BYTES = 64 << 20
_warned: set[str] = set()


def put_media(recorder, kind: str, tag: str, value: Any, step: int | None, walltime: float | None = None,
              **options: Any) -> bool:
    """Record one ``kind`` (image, video, audio) item under ``tag``; False when refused (too large)."""
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"a {kind} needs a non-empty str tag, got {tag!r}")
    item = snapshot(kind, value, **{k: v for k, v in options.items() if v is not None})
    if nbytes(item) > MAX_ITEM_BYTES:
        recorder.refused_media += 1
        if tag not in _warned and len(_warned) < 10_000:
            _warned.add(tag)
            _log.warning("otel-rl: %s %r is %.1f MiB, over the %d MiB limit of one item: not recorded (warned "
                         "once per tag; log it smaller, or fewer frames)", kind, tag, nbytes(item) / 2**20,
                         MAX_ITEM_BYTES >> 20)
        return False
    t_ns = time.time_ns() if walltime is None else int(walltime * 1e9)
    recorder.put(("md", tag, item, step, t_ns, None))
    return True
