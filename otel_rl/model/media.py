"""Media (images, videos, audio, figures) as one record every backend reads.

The training thread only snapshots the array it is given (:func:`snapshot`: one copy into plain
bytes, pixels scaled to uint8, so the caller may reuse its buffer and a burst of frames costs a
byte per pixel); shaping and encoding happen where the tape is read (the helper process, or the
pipeline's thread), in :func:`encode`:

- images: PNG (Pillow), with torch/tensorboardX semantics: ``dataformats`` (``CHW``, ``HWC``,
  ``HW``, ``NCHW``, ``NHWC``...), float values in [0, 1] scaled by 255, uint8 as they are, one
  channel repeated to three, a batch laid out as a grid of up to 8 columns;
- videos: ``(N, T, C, H, W)`` as tensorboardX takes them, an animated GIF at ``fps`` (Pillow;
  TensorBoard's image tab animates it, as it does tensorboardX's), the N videos side by side;
- audio: float samples in [-1, 1] as 16-bit PCM WAV (the standard ``wave`` module);
- files already encoded (an MP4 from gymnasium's ``RecordVideo``, a PNG on disk) are carried
  as they are, with their format.

A :class:`Media` value holds the encoded bytes; what sinks do with it is theirs.
"""

from __future__ import annotations

import io
import math
import os
import wave
from dataclasses import dataclass
from typing import Any

#: Media kinds and the formats each may carry.
FORMATS = {"image": ("png", "gif", "jpeg"), "video": ("gif", "mp4", "webm"), "audio": ("wav", "mp3", "ogg")}
_SUFFIX = {".png": "png", ".gif": "gif", ".jpg": "jpeg", ".jpeg": "jpeg", ".mp4": "mp4", ".webm": "webm",
           ".wav": "wav", ".mp3": "mp3", ".ogg": "ogg"}


@dataclass(frozen=True, slots=True)
class Media:
    """One encoded item at a step: ``kind`` (image, video, audio), ``format`` (png, gif, mp4,
    wav...), the bytes, and what viewers want without decoding them."""

    kind: str
    format: str
    data: bytes
    width: int = 0
    height: int = 0
    channels: int = 0
    fps: float = 0.0
    sample_rate: int = 0
    caption: str = ""

    @property
    def suffix(self) -> str:
        return "jpg" if self.format == "jpeg" else self.format

    def plain(self) -> list:
        """As plain values (the spool's record encoding)."""
        return [self.kind, self.format, self.data, self.width, self.height, self.channels, self.fps,
                self.sample_rate, self.caption]


def require_pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("otel-rl: images and videos need Pillow: pip install 'otel-rl[media]'") from None
    return Image


# -- the training thread: one copy, no encoding -------------------------------------------------
def as_numpy(value: Any):
    """A numpy array of ``value``: a torch tensor (detached, on the CPU), an array, a list."""
    import numpy as np

    for convert in ("detach", "cpu", "numpy"):  # a torch tensor
        fn = getattr(value, convert, None)
        if callable(fn):
            value = fn()
    return np.asarray(value)


def check_dataformats(dataformats: str, shape: tuple) -> str:
    """``dataformats`` in capitals, when it names each axis of an image array of ``shape`` once."""
    fmt = str(dataformats).upper()
    if len(fmt) != len(shape) or len(set(fmt)) != len(fmt) or not set(fmt) <= set("NCHW"):
        raise ValueError(f"dataformats {fmt!r} does not describe an image array of shape {shape}")
    return fmt


def snapshot(kind: str, value: Any, **options: Any) -> tuple:
    """What the tape carries for one item: ``(kind, dtype, shape, bytes, options)`` for an array
    (copied: the caller may change it afterwards), ``(kind, format, None, bytes, options)`` for
    encoded bytes or a file path."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        fmt = _SUFFIX.get(os.path.splitext(path)[1].lower())
        if fmt is None or fmt not in FORMATS[kind]:
            raise ValueError(f"{path!r}: a {kind} file must end in one of "
                             f"{', '.join('.' + f for f in FORMATS[kind])}")
        with open(path, "rb") as f:
            return (kind, fmt, None, f.read(), options)
    if isinstance(value, (bytes, bytearray, memoryview)):
        fmt = options.pop("format", None)
        if fmt not in FORMATS[kind]:
            raise ValueError(f"encoded {kind} bytes need format= one of {', '.join(FORMATS[kind])}")
        return (kind, fmt, None, bytes(value), options)
    array = as_numpy(value)
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise ValueError(f"a {kind} needs a non-empty numeric array, got dtype {array.dtype} shape {array.shape}")
    if kind == "image":
        check_dataformats(options.get("dataformats", "CHW"), array.shape)
    elif kind == "video" and array.ndim not in (4, 5):
        raise ValueError(f"a video is (N, T, C, H, W) or (T, C, H, W), got shape {array.shape}")
    elif kind == "audio" and sum(d > 1 for d in array.shape) > 2:
        raise ValueError(f"audio is (length,) or (length, channels), got shape {array.shape}")
    if kind != "audio":  # pixels as uint8 now: 4-8x less memory and pipe than float frames
        array = _uint8(array)
    return (kind, array.dtype.str, array.shape, array.tobytes(), options)


def nbytes(item: tuple) -> int:
    return len(item[3])


# -- where the tape is read: shaping and encoding -----------------------------------------------
def encode(item: tuple) -> Media:
    """A tape item (:func:`snapshot`) as an encoded :class:`Media`; ``ValueError`` for bad input."""
    kind, dtype, shape, data, options = item
    caption = str(options.get("caption") or "")
    if shape is None:  # already encoded
        return Media(kind, dtype, data, fps=float(options.get("fps") or 0), caption=caption,
                     sample_rate=int(options.get("sample_rate") or 0))
    import numpy as np

    array = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    if kind == "image":
        return _png(to_hwc(array, options.get("dataformats", "CHW")), caption)
    if kind == "video":
        return _gif(array, float(options.get("fps") or 4), caption)
    if kind == "audio":
        return _wav(array, int(options.get("sample_rate") or 44100), caption)
    raise ValueError(f"unknown media kind {kind!r}")


def _uint8(array):
    """float in [0, 1] scaled by 255, uint8 as is (tensorboardX's rule), clipped to [0, 255]."""
    import numpy as np

    if array.dtype == np.uint8:
        return array
    return (array.astype(np.float32) * 255).clip(0, 255).astype(np.uint8)


def to_hwc(array, dataformats: str):
    """An image array in ``dataformats`` as height x width x 3 or 4 (a batch as a grid)."""
    import numpy as np

    fmt = check_dataformats(dataformats, array.shape)
    if "C" not in fmt:
        array, fmt = array[..., None], fmt + "C"
    if "N" not in fmt:
        array, fmt = array[None], "N" + fmt
    array = np.transpose(array, [fmt.index(d) for d in "NCHW"])
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    if array.shape[1] not in (3, 4):
        raise ValueError(f"an image has 1, 3 or 4 channels, got {array.shape[1]} (dataformats {dataformats!r})")
    return np.transpose(grid(array), (1, 2, 0))


def grid(batch, columns: int = 8):
    """N x C x H x W as one C x H' x W' image, up to ``columns`` per row (torchvision's layout,
    as tensorboardX's ``add_images``)."""
    import numpy as np

    n, c, h, w = batch.shape
    if n == 1:
        return batch[0]
    cols = min(n, columns)
    rows = math.ceil(n / cols)
    canvas = np.zeros((c, h * rows, w * cols), dtype=batch.dtype)
    for i in range(n):
        y, x = divmod(i, cols)
        canvas[:, y * h:(y + 1) * h, x * w:(x + 1) * w] = batch[i]
    return canvas


def _png(hwc, caption: str) -> Media:
    image = require_pillow()
    pixels = _uint8(hwc)
    out = io.BytesIO()
    image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB").save(out, format="PNG")
    return Media("image", "png", out.getvalue(), pixels.shape[1], pixels.shape[0], pixels.shape[2], caption=caption)


def _gif(video, fps: float, caption: str) -> Media:
    """(N, T, C, H, W) -> frames of the N videos side by side, as an animated GIF."""
    import numpy as np

    image = require_pillow()
    if video.ndim == 4:
        video = video[None]
    if video.ndim != 5:
        raise ValueError(f"a video is (N, T, C, H, W), got shape {video.shape}")
    n, t, c, h, w = video.shape
    frames = _uint8(np.transpose(video, (1, 0, 2, 3, 4)))  # T, N, C, H, W
    if c == 1:
        frames = np.repeat(frames, 3, axis=2)
    pictures = [image.fromarray(np.ascontiguousarray(np.transpose(grid(frame), (1, 2, 0))[..., :3]), "RGB")
                for frame in frames]
    out = io.BytesIO()
    duration = max(20, round(1000 / fps)) if fps > 0 else 250
    pictures[0].save(out, format="GIF", save_all=True, append_images=pictures[1:], duration=duration, loop=0)
    return Media("video", "gif", out.getvalue(), pictures[0].width, pictures[0].height, 3, fps=fps,
                 caption=caption)


def _wav(samples, sample_rate: int, caption: str) -> Media:
    """Float samples in [-1, 1] (``(L,)``, or ``(L, channels)``) as 16-bit PCM WAV."""
    import numpy as np

    samples = np.asarray(samples).squeeze()
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2:
        raise ValueError(f"audio is (length,) or (length, channels), got shape {samples.shape}")
    if samples.dtype.kind == "f":
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    else:
        pcm = samples.astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return Media("audio", "wav", out.getvalue(), channels=pcm.shape[1], sample_rate=sample_rate, caption=caption)


#: Frames of an MP4/WebM turned into a GIF for TensorBoard (longer videos are subsampled).
GIF_MAX_FRAMES = 300


def as_gif(media: Media) -> Media:
    """An MP4 or WebM video (gymnasium's ``RecordVideo`` output) as an animated GIF, the video
    TensorBoard shows; needs imageio with its ffmpeg plugin (``otel-rl[media]``)."""
    import numpy as np

    try:
        import imageio.v3 as iio
    except ImportError:
        raise ImportError("reading MP4/WebM needs imageio and imageio-ffmpeg: pip install 'otel-rl[media]'") from None
    frames = iio.imread(media.data, extension=f".{media.format}")  # T, H, W, C
    fps = media.fps
    if not fps:
        try:
            fps = float(iio.immeta(media.data, extension=f".{media.format}").get("fps") or 0)
        except Exception:  # metadata is a nicety: a GIF at 4 fps is still the video
            fps = 0.0
    if len(frames) > GIF_MAX_FRAMES:
        every = math.ceil(len(frames) / GIF_MAX_FRAMES)
        frames, fps = frames[::every], (fps / every if fps else fps)
    video = np.transpose(frames[..., :3], (0, 3, 1, 2))[None]  # 1, T, C, H, W
    return _gif(video, fps or 4.0, media.caption)


def figure_array(figure: Any, close: bool = True):
    """A matplotlib figure rendered to an H x W x 3 uint8 array (``add_figure``, ``log_plot``)."""
    import numpy as np

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("figures need matplotlib: pip install matplotlib") from None
    if not isinstance(figure, Figure):
        raise TypeError(f"a figure must be a matplotlib Figure, got {type(figure).__name__}")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    array = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return array
