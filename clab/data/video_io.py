"""Video in and out: a video file or a folder of frames read as a stream, and an annotated video written.

Reading (:func:`open_video`): a video file (mp4, avi, mkv, webm, mov; decoded with PyAV, which ships
ffmpeg's codecs) or a folder of image files (sorted by name, numbers compared as numbers). Frames come as
BGR ``uint8`` ndarrays (H, W, 3), as ``cv2.imread`` gives them, one at a time: the video is never held in
memory. A :class:`VideoSource` knows its size and frame rate when opened and its exact number of frames
after :meth:`VideoSource.scan`, one decoding pass that also catches a truncated or damaged file before any
long work starts (a file whose container declares more frames, or a longer duration, than can be decoded
is reported as truncated).

Writing (:class:`VideoWriter`): frames of one size at one frame rate, encoded with PyAV (H.264 ``yuv420p``
for mp4/mkv/mov when the size is even, ``yuv444p`` otherwise; VP9 for webm; MPEG-4 part 2 for avi), or with
OpenCV's writer when PyAV or its encoder is missing. The file is written under a temporary name next to
the destination and moved into place when the writer closes, also when the ``with`` block raises, so the
destination always holds a complete, playable video of the frames written so far.

Errors: :class:`VideoReadError` (a ``ValueError``) names the input and says what is wrong: no such file,
not a video, no video stream, truncated or damaged at frame N, an empty folder, a frame that cannot be
decoded or whose size differs from the first.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

__all__ = ["VideoReadError", "VideoSource", "FileVideoSource", "FolderVideoSource", "open_video", "VideoWriter",
           "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "DEFAULT_FOLDER_FPS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
#: frame rate of a folder of frames unless one is given
DEFAULT_FOLDER_FPS = 25


class VideoReadError(ValueError):
    """An input video or frame folder that cannot be read; the message names it."""


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class VideoSource:
    """Frames of one video, in order. Subclasses: :class:`FileVideoSource`, :class:`FolderVideoSource`.

    Attributes:
        path: the input.
        width, height: frame size in pixels.
        fps: frame rate (``Fraction``).
        declared_frames: the number of frames the input announces before decoding (None if unknown);
            a folder knows it exactly.
        max_frames: only the first ``max_frames`` frames are read (None: all).
        decode_seconds: time spent decoding so far (for the benchmarks).
    """

    path: Path
    width: int
    height: int
    fps: Fraction
    declared_frames: int | None
    max_frames: int | None
    decode_seconds: float

    @property
    def num_frames(self) -> int | None:
        """The exact number of frames (capped at ``max_frames``) once known, else None."""
        return self._num_frames

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(frame_id, BGR ndarray (H, W, 3))`` for frame 0, 1, ... (decoded one at a time)."""
        raise NotImplementedError

    def scan(self, keep: Iterable[int] = (), progress: bool = False) -> dict[int, np.ndarray]:
        """Count the frames (sets :attr:`num_frames`) and return the frames whose ids are in ``keep``.

        Raises:
            VideoReadError: the input is truncated or damaged, or has no frame.
        """
        from tqdm.auto import tqdm

        keep = set(keep)
        kept: dict[int, np.ndarray] = {}
        count = 0
        frames = tqdm(self.frames(), total=self.declared_frames, desc=f"{self.path.name} (counting)", unit="frame",
                      disable=not progress, mininterval=0.5, leave=False)
        for frame_id, image in frames:
            if frame_id in keep:
                kept[frame_id] = image
            count = frame_id + 1
        if count == 0:
            raise VideoReadError(f"video {self.path} has no frame that can be decoded")
        self._num_frames = count
        return kept

    def close(self) -> None:
        """Release the input (idempotent)."""

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, {self.width}x{self.height}, {float(self.fps):g} fps, "
                f"frames={self.num_frames if self.num_frames is not None else self.declared_frames})")


class FileVideoSource(VideoSource):
    """A video file decoded with PyAV (each call of :meth:`frames` decodes from the start)."""

    def __init__(self, path: str | os.PathLike, max_frames: int | None = None) -> None:
        import av

        self.path = Path(path)
        self.max_frames = max_frames
        self.decode_seconds = 0.0
        self._num_frames = None
        container = self._open(av)
        try:
            stream = container.streams.video[0]
            self.width, self.height = int(stream.codec_context.width), int(stream.codec_context.height)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or rate <= 0:
                raise VideoReadError(f"video {self.path} does not say its frame rate")
            self.fps = Fraction(rate).limit_denominator(1_000_000)
            self.codec = stream.codec_context.name
            self.format = container.format.name
            declared = int(stream.frames or 0)
            self._declared_exact = declared > 0
            if not declared and container.duration:  # e.g. mkv/webm: the duration, not a frame count
                declared = int(round(container.duration / 1_000_000 * float(self.fps)))
            self.declared_frames = declared or None
            if self.width <= 0 or self.height <= 0:
                raise VideoReadError(f"video {self.path} has no frame size ({self.width}x{self.height})")
        finally:
            container.close()
        if max_frames is not None and self.declared_frames is not None:
            self.declared_frames = min(self.declared_frames, max_frames)

    def _open(self, av):
        if not self.path.is_file():
            raise VideoReadError(f"video file {self.path} does not exist")
        try:
            container = av.open(str(self.path), "r")
        except av.error.FFmpegError as e:
            raise VideoReadError(f"cannot read video {self.path}: {e.strerror or e} (truncated, or not a "
                                 f"video file?)") from None
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"{self.path} has no video stream")
        return container

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        import av

        container = self._open(av)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frame_id = 0
        try:
            decoded = container.decode(stream)
            while self.max_frames is None or frame_id < self.max_frames:
                t0 = time.perf_counter()
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.error.FFmpegError as e:
                    raise VideoReadError(f"video {self.path} is damaged or truncated: decoding stopped after "
                                         f"{frame_id} frames ({e.strerror or e})") from None
                image = frame.to_ndarray(format="bgr24")
                self.decode_seconds += time.perf_counter() - t0
                yield frame_id, image
                frame_id += 1
        finally:
            container.close()
        self._check_complete(frame_id)

    def _check_complete(self, count: int) -> None:
        if self.max_frames is not None and count >= self.max_frames:
            return
        expected = self.declared_frames
        if expected is None:
            return
        # a declared frame count is exact; a duration-based estimate may be off by a frame or two
        short = count < expected if self._declared_exact else count < 0.98 * expected - 1
        if short:
            raise VideoReadError(f"video {self.path} is truncated: it declares {expected} frames"
                                 f"{'' if self._declared_exact else ' (from its duration)'} but only {count} "
                                 f"could be decoded")


class FolderVideoSource(VideoSource):
    """A folder of image files, one frame each, in natural name order (``2.jpg`` before ``10.jpg``)."""

    def __init__(self, path: str | os.PathLike, fps: float | Fraction | None = None,
                 max_frames: int | None = None) -> None:
        import cv2

        self.path = Path(path)
        self.max_frames = max_frames
        self.decode_seconds = 0.0
        if not self.path.is_dir():
            raise VideoReadError(f"frame folder {self.path} does not exist")
        files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                       key=lambda p: _natural_key(p.name))
        if not files:
            raise VideoReadError(f"frame folder {self.path} has no image files "
                                 f"({', '.join(IMAGE_EXTENSIONS)})")
        self.files = files[:max_frames] if max_frames is not None else files
        self.fps = Fraction(fps if fps is not None else DEFAULT_FOLDER_FPS).limit_denominator(1_000_000)
        if self.fps <= 0:
            raise VideoReadError(f"frame rate must be > 0, got {fps}")
        first = self._read(0, cv2)
        self.height, self.width = first.shape[:2]
        self.declared_frames = len(self.files)
        self._num_frames = len(self.files)
        self.codec = self.format = "images"

    def _read(self, index: int, cv2=None) -> np.ndarray:
        if cv2 is None:
            import cv2
        path = self.files[index]
        t0 = time.perf_counter()
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        self.decode_seconds += time.perf_counter() - t0
        if image is None:
            raise VideoReadError(f"frame {index} of {self.path}: cannot decode image file {path}")
        if index and image.shape[:2] != (self.height, self.width):
            raise VideoReadError(f"frame {index} of {self.path}: {path.name} is {image.shape[1]}x{image.shape[0]}, "
                                 f"the first frame is {self.width}x{self.height}")
        return image

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(len(self.files)):
            yield i, self._read(i)

    def scan(self, keep: Iterable[int] = (), progress: bool = False) -> dict[int, np.ndarray]:
        """Frames in ``keep`` read directly (a folder knows its length without decoding)."""
        return {i: self._read(i) for i in sorted(set(keep)) if 0 <= i < len(self.files)}


def open_video(path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None) -> VideoSource:
    """Open a video file or a folder of frames (see the module docstring).

    Args:
        path: the video file or the folder.
        fps: frame rate of a folder of frames (default 25); ignored for a file, which has its own.
        max_frames: read only the first ``max_frames`` frames.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    path = Path(path)
    if path.is_dir():
        return FolderVideoSource(path, fps=fps, max_frames=max_frames)
    if not path.exists():
        raise VideoReadError(f"input {path} does not exist (expected a video file or a folder of frames)")
    try:
        import av  # noqa: F401
    except ImportError:  # pragma: no cover - av is a dependency
        raise VideoReadError(f"reading {path} needs PyAV: pip install av") from None
    return FileVideoSource(path, max_frames=max_frames)


# ---------------------------------------------------------------------------------------------- writing
_CONTAINER_CODECS = {".webm": "libvpx-vp9", ".avi": "mpeg4"}
_FOURCC = {".avi": "XVID", ".webm": "VP90"}


class VideoWriter:
    """Write BGR frames of one size as a video at ``fps``; a context manager (see the module docstring).

    Args:
        path: destination (``.mp4``, ``.mkv``, ``.mov``, ``.webm`` or ``.avi``).
        width, height: frame size; every frame must have it.
        fps: frame rate (a ``Fraction`` such as 30000/1001 is kept exactly).
        crf: H.264/VP9 quality (lower is better; 18 is visually lossless for most content).
        backend: ``'auto'`` (PyAV, else OpenCV), ``'av'`` or ``'opencv'``.

    Attributes:
        frames_written, encode_seconds, backend, codec.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float | Fraction, crf: int = 20,
                 backend: str = "auto") -> None:
        if backend not in ("auto", "av", "opencv"):
            raise ValueError(f"VideoWriter: backend must be 'auto', 'av' or 'opencv', got {backend!r}")
        if width < 1 or height < 1:
            raise ValueError(f"VideoWriter: frame size must be positive, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        if self.fps <= 0:
            raise ValueError(f"VideoWriter: fps must be > 0, got {fps}")
        suffix = self.path.suffix.lower() or ".mp4"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".part{suffix}", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self.frames_written = 0
        self.encode_seconds = 0.0
        self._closed = False
        try:
            if backend in ("auto", "av"):
                try:
                    self._open_av(suffix, crf)
                except (ImportError, ValueError) as e:  # no PyAV, or no encoder for this container
                    if backend == "av":
                        raise
                    self._av_error = e
                    self._open_opencv(suffix)
            else:
                self._open_opencv(suffix)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def _open_av(self, suffix: str, crf: int) -> None:
        import av

        codec = _CONTAINER_CODECS.get(suffix, "libx264")
        self._container = av.open(str(self._tmp), "w")
        try:
            stream = self._container.add_stream(codec, rate=self.fps)
            stream.width, stream.height = self.width, self.height
            even = self.width % 2 == 0 and self.height % 2 == 0
            if codec == "libx264":
                stream.pix_fmt = "yuv420p" if even else "yuv444p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            elif codec == "libvpx-vp9":
                stream.pix_fmt = "yuv420p" if even else "yuv444p"
                stream.options = {"crf": str(crf + 11), "b": "0", "deadline": "realtime", "cpu-used": "8"}
            else:
                stream.pix_fmt = "yuv420p"
                stream.options = {"qscale": "3"}
                if not even:
                    raise ValueError(f"{codec} needs an even frame size, got {self.width}x{self.height}")
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self.backend, self.codec = "av", codec

    def _open_opencv(self, suffix: str) -> None:
        import cv2

        fourcc = _FOURCC.get(suffix, "mp4v")
        writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), float(self.fps),
                                 (self.width, self.height))
        if not writer.isOpened():
            raise ValueError(f"VideoWriter: neither PyAV nor OpenCV can write {self.path}")
        self._cv = writer
        self.backend, self.codec = "opencv", fourcc

    def write(self, image: np.ndarray) -> None:
        """Append one frame: BGR ``uint8`` ndarray (height, width, 3)."""
        if self._closed:
            raise ValueError(f"VideoWriter: {self.path} is closed")
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"VideoWriter: frames of {self.path} must be uint8 ({self.height}, {self.width}, 3), "
                             f"got {image.dtype} {image.shape}")
        t0 = time.perf_counter()
        if self.backend == "av":
            import av
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            frame.pts = self.frames_written
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        else:
            self._cv.write(image)
        self.encode_seconds += time.perf_counter() - t0
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finish the file and move it to ``path`` (idempotent); returns ``path``."""
        if self._closed:
            return self.path
        self._closed = True
        t0 = time.perf_counter()
        try:
            if self.backend == "av":
                try:
                    for packet in self._stream.encode():
                        self._container.mux(packet)
                finally:
                    self._container.close()
            else:
                self._cv.release()
            os.replace(self._tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            raise
        finally:
            self.encode_seconds += time.perf_counter() - t0
        return self.path

    def discard(self) -> None:
        """Close without keeping anything: the temporary file is removed and ``path`` is left as it was."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            if self.backend == "av":
                self._container.close()
            else:
                self._cv.release()
        with contextlib.suppress(OSError):
            self._tmp.unlink()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on error: the frames written so far make a complete video
