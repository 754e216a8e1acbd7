"""Images, videos, audio and figures onto a run's tape: the one path of ``SummaryWriter.add_image``
and friends, ``Logger.log_image``/``log_video``/``log_plot`` and ``otel_rl.log_image``.

The training thread checks the shape and copies the array (:func:`otel_rl.model.media.snapshot`);
encoding (PNG, GIF, WAV) happens where the tape is read, off the training thread. An item over
:data:`MAX_ITEM_BYTES`, or past :data:`MAX_STEP_BYTES` of one step, is refused, counted and
warned once per tag: a few 4K videos cannot make the trainer's memory grow without bound.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from otel_rl.model.media import nbytes, snapshot
from otel_rl.sinks.base import WarnOnce

_warn = WarnOnce(logging.getLogger(__name__))  # once per tag

#: The largest item the tape takes, in bytes of the array (or the encoded file) given, and the
#: most bytes of media one step takes (a loop that logs every frame of every env at one step).
MAX_ITEM_BYTES = 64 << 20
MAX_STEP_BYTES = 256 << 20


def put_media(recorder, kind: str, tag: str, value: Any, step: int | None, walltime: float | None = None,
              **options: Any) -> bool:
    """Record one ``kind`` (image, video, audio) item under ``tag``; False when refused (too large)."""
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"a {kind} needs a non-empty str tag, got {tag!r}")
    item = snapshot(kind, value, **{k: v for k, v in options.items() if v is not None})
    size = nbytes(item)
    step_of, used = recorder.media_step
    used = used if step_of == step else 0
    if size > MAX_ITEM_BYTES or used + size > MAX_STEP_BYTES:
        recorder.refused_media += 1
        what = (f"is {size / 2**20:.1f} MiB, over the {MAX_ITEM_BYTES >> 20} MiB limit of one item"
                if size > MAX_ITEM_BYTES else f"would pass the {MAX_STEP_BYTES >> 20} MiB of media one step takes")
        _warn(tag, "otel-rl: %s %r %s: not recorded (counted in stats()['refused_media']; warned once per tag; "
              "log it smaller, or fewer frames)", kind, tag, what)
        return False
    recorder.media_step = (step, used + size)
    t_ns = time.time_ns() if walltime is None else int(walltime * 1e9)
    recorder.put(("md", tag, item, step, t_ns, None))
    return True
