"""What the backend SDKs take for a :class:`~otel_rl.model.media.Media`: a Pillow image, audio
samples, a file. Shared by the W&B, SwanLab and MLflow sinks (TensorBoard writes the encoded
bytes as they are: :func:`otel_rl.sinks.tb_events.media_field`)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import wave

from otel_rl.model.media import Media, require_pillow


def pil_image(media: Media):
    """The image (the first frame of a GIF) as a Pillow image."""
    image = require_pillow().open(io.BytesIO(media.data))
    image.load()
    return image


def audio_samples(media: Media):
    """A WAV's samples as float32 in [-1, 1], ``(length,)`` or ``(length, channels)``, and its rate."""
    import numpy as np

    with wave.open(io.BytesIO(media.data), "rb") as f:
        channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
        raw = f.readframes(f.getnframes())
    if width != 2:
        raise ValueError(f"a {8 * width}-bit WAV: only 16-bit PCM is read back")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32767.0
    return (samples if channels == 1 else samples.reshape(-1, channels)), rate


@contextlib.contextmanager
def as_file(media: Media, stem: str):
    """The bytes in a private temporary file named ``<stem>.<suffix>``, removed afterwards (for SDKs
    that take a path and copy it)."""
    with tempfile.TemporaryDirectory(prefix="otel-rl-media-") as tmp:
        path = os.path.join(tmp, f"{stem}.{media.suffix}")
        with open(path, "wb") as f:
            f.write(media.data)
        yield path
