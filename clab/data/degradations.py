"""Image degradations for the synthetic video set and the robustness study (DESIGN.md, "The embedded default").

Six degradations, each a function ``f(img, severity, rng=0, **params) -> img``:

========================  ============================================================  =================
name                      what it does                                                  parameters
========================  ============================================================  =================
``motion_blur``           linear blur along a direction (camera or object motion)      ``angle``, ``length``
``defocus_blur``          disk (out-of-focus) blur                                      ``radius``
``gaussian_noise``        additive zero-mean Gaussian noise                             ``sigma``
``occlusion``             opaque rectangular patches                                    ``patches``, ``colors``
``jpeg_compression``      JPEG re-encoding at a low quality                             ``quality``
``low_light``             darkening with a gamma curve plus a little sensor noise      ``factor``, ``gamma``, ``sigma``
========================  ============================================================  =================

* ``img``: ``ndarray[H, W, 3]`` uint8, BGR (as cv2 and mmcv load images); the result has the same shape
  and dtype and is a new array.
* ``severity``: an integer 1..5; every degradation gets strictly stronger with it. Blur lengths/radii and
  occluded areas are relative to the image size, so a severity means the same on a 160x96 synthetic frame
  and on a 1280x720 ImageNet VID frame.
* ``rng``: an ``int`` seed or a ``numpy.random.Generator``; the same seed gives the same output.
* ``params``: explicit values that override what ``severity`` and ``rng`` would choose (for example the
  angle and length of a motion blur that follows an object's motion). ``sample_params`` draws them.

``SeqDegrade`` is a pipeline step (mmdet ``PIPELINES``) that degrades every frame of a clip with the same
parameters; place it right after ``LoadMultiImagesFromFile`` in any video pipeline.
"""
from __future__ import annotations

import math
import os
import zlib
from typing import Any, Callable

import cv2
import numpy as np
from mmdet.datasets.builder import PIPELINES

__all__ = [
    "DEGRADATIONS", "SEVERITIES", "apply_degradation", "sample_params", "motion_blur", "defocus_blur",
    "gaussian_noise", "occlusion", "jpeg_compression", "low_light", "motion_blur_kernel",
    "defocus_kernel", "SeqDegrade",
]

SEVERITIES = (1, 2, 3, 4, 5)

# Per-severity settings (index = severity - 1).
_MOTION_LENGTH_FRAC = (0.03, 0.05, 0.08, 0.11, 0.15)   # blur length / min(H, W)
_DEFOCUS_RADIUS_FRAC = (0.010, 0.016, 0.023, 0.032, 0.045)  # disk radius / min(H, W)
_NOISE_SIGMA = (8.0, 14.0, 21.0, 29.0, 40.0)           # grey levels
_OCCLUSION_AREA = (0.06, 0.10, 0.15, 0.21, 0.28)       # occluded fraction of the image
_OCCLUSION_PATCHES = (1, 1, 2, 2, 3)
_JPEG_QUALITY = (30, 20, 14, 9, 5)
_LOW_LIGHT_FACTOR = (0.62, 0.48, 0.36, 0.26, 0.18)
_LOW_LIGHT_GAMMA = (1.15, 1.3, 1.45, 1.6, 1.8)
_LOW_LIGHT_SIGMA = (1.0, 1.5, 2.0, 2.5, 3.0)


# ----------------------------------------------------------------------------------------------- checks
def check_severity(severity: Any, name: str = "severity") -> int:
    """Return ``severity`` as an int, or raise ``ValueError`` unless it is an integer in 1..5."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"{name} must be an integer in 1..5, got {severity!r}")
    return int(severity)


def as_generator(rng: Any, name: str = "rng") -> np.random.Generator:
    """An ``int`` seed (>= 0) or a ``numpy.random.Generator`` -> a ``Generator``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise ValueError(f"{name} must be a non-negative int seed or a numpy.random.Generator, got {rng!r}")


def _check_image(img: Any, name: str = "img") -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = (f"ndarray {img.dtype} of shape {img.shape}" if isinstance(img, np.ndarray)
                else type(img).__name__)
        raise ValueError(f"{name} must be a uint8 BGR image ndarray[H, W, 3], got {desc}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {img.shape}")
    return img


def _min_side(shape: tuple[int, ...]) -> int:
    return int(min(shape[0], shape[1]))


# ----------------------------------------------------------------------------------------------- kernels
def motion_blur_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised linear motion-blur kernel.

    Args:
        length: length of the blur streak in pixels (>= 1; 1 means no blur).
        angle: direction of the streak in degrees, counter-clockwise from the +x axis (image y points
            down, so 90 is "up"); the kernel is symmetric, so ``angle`` and ``angle + 180`` are the same.

    Returns:
        ``ndarray[k, k]`` float32 summing to 1, k odd.
    """
    length = float(length)
    if not length >= 1.0:
        raise ValueError(f"motion blur length must be >= 1 pixel, got {length}")
    k = int(math.ceil(length)) | 1
    kernel = np.zeros((k + 1, k + 1), np.float64)  # one spare row/column for the bilinear splat
    c = (k - 1) / 2.0
    t = np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, max(2, int(math.ceil(length * 8))))
    a = math.radians(angle)
    xs = np.round(c + t * math.cos(a), 9)  # rounding: cos(90 deg) is 6e-17, not 0
    ys = np.round(c - t * math.sin(a), 9)
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    fx = xs - x0
    fy = ys - y0
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy),
                      (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    kernel = kernel[:k, :k]
    return (kernel / kernel.sum()).astype(np.float32)


def defocus_kernel(radius: float) -> np.ndarray:
    """A normalised anti-aliased disk of ``radius`` pixels (>= 0.5): ``ndarray[k, k]`` float32, k odd."""
    radius = float(radius)
    if not radius >= 0.5:
        raise ValueError(f"defocus radius must be >= 0.5 pixel, got {radius}")
    r = int(math.ceil(radius + 0.5))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    kernel = np.clip(radius + 0.5 - np.sqrt(xx * xx + yy * yy), 0.0, 1.0)
    return (kernel / kernel.sum()).astype(np.float32)


# ----------------------------------------------------------------------------------------------- params
def _sample_motion_blur(severity: int, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    return {"angle": float(rng.uniform(0.0, 180.0)),
            "length": max(2.0, _MOTION_LENGTH_FRAC[severity - 1] * _min_side(shape))}


def _sample_defocus_blur(severity: int, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    return {"radius": max(0.5 + 0.25 * severity, _DEFOCUS_RADIUS_FRAC[severity - 1] * _min_side(shape))}


def _sample_gaussian_noise(severity: int, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    return {"sigma": _NOISE_SIGMA[severity - 1]}


def _sample_occlusion(severity: int, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    # n patches, each inside its own vertical strip so that they never overlap and the occluded area
    # grows strictly with severity; coordinates are fractions of the image width/height.
    n = _OCCLUSION_PATCHES[severity - 1]
    area = _OCCLUSION_AREA[severity - 1] / n
    patches, colors = [], []
    for i in range(n):
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height (relative units)
        w = min(math.sqrt(area * aspect), 1.0 / n)
        h = min(area / w, 1.0)
        w = area / h
        x0 = i / n + float(rng.uniform(0.0, 1.0 / n - w))
        y0 = float(rng.uniform(0.0, 1.0 - h))
        patches.append([x0, y0, x0 + w, y0 + h])
        colors.append([int(v) for v in rng.integers(0, 256, size=3)])
    return {"patches": patches, "colors": colors}


def _sample_jpeg_compression(severity: int, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    return {"quality": _JPEG_QUALITY[severity - 1]}


def _sample_low_light(severity: int, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    i = severity - 1
    return {"factor": _LOW_LIGHT_FACTOR[i], "gamma": _LOW_LIGHT_GAMMA[i], "sigma": _LOW_LIGHT_SIGMA[i]}


_SAMPLERS: dict[str, Callable[[int, np.random.Generator, tuple[int, ...]], dict]] = {
    "motion_blur": _sample_motion_blur,
    "defocus_blur": _sample_defocus_blur,
    "gaussian_noise": _sample_gaussian_noise,
    "occlusion": _sample_occlusion,
    "jpeg_compression": _sample_jpeg_compression,
    "low_light": _sample_low_light,
}


def sample_params(name: str, severity: int, rng: Any, img_shape: tuple[int, ...]) -> dict:
    """Draw the explicit parameters of degradation ``name`` at ``severity`` for an image of ``img_shape``.

    Returns a dict of plain Python values (json-serialisable) that ``DEGRADATIONS[name]`` accepts as
    keyword arguments. Per-pixel randomness (the noise field) is not a parameter: it comes from the
    ``rng`` given to the degradation function itself.
    """
    _check_name(name)
    return _SAMPLERS[name](check_severity(severity), as_generator(rng), tuple(img_shape))


def _check_name(name: str) -> None:
    if name not in _SAMPLERS:
        raise ValueError(f"unknown degradation {name!r}; expected one of {sorted(_SAMPLERS)}")


def _params(name: str, severity: int, rng: np.random.Generator, shape: tuple[int, ...],
            given: dict) -> dict:
    params = _SAMPLERS[name](severity, rng, shape)
    params.update({k: v for k, v in given.items() if v is not None})
    return params


# ----------------------------------------------------------------------------------------------- degradations
def motion_blur(img: np.ndarray, severity: int, rng: Any = 0, angle: float | None = None,
                length: float | None = None) -> np.ndarray:
    """Linear motion blur: ``angle`` in degrees (random if None), ``length`` in pixels (from severity if
    None: 3%..15% of the shorter image side). A length below 1.5 pixels returns an unchanged copy."""
    img = _check_image(img)
    severity = check_severity(severity)
    p = _params("motion_blur", severity, as_generator(rng), img.shape, {"angle": angle, "length": length})
    if p["length"] < 1.5:
        return img.copy()
    kernel = motion_blur_kernel(p["length"], p["angle"])
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT101)


def defocus_blur(img: np.ndarray, severity: int, rng: Any = 0, radius: float | None = None) -> np.ndarray:
    """Disk blur of ``radius`` pixels (from severity if None: 1%..4.5% of the shorter image side)."""
    img = _check_image(img)
    severity = check_severity(severity)
    p = _params("defocus_blur", severity, as_generator(rng), img.shape, {"radius": radius})
    return cv2.filter2D(img, -1, defocus_kernel(p["radius"]), borderType=cv2.BORDER_REFLECT101)


def gaussian_noise(img: np.ndarray, severity: int, rng: Any = 0, sigma: float | None = None) -> np.ndarray:
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` grey levels (8..40 by severity)."""
    img = _check_image(img)
    severity = check_severity(severity)
    g = as_generator(rng)
    p = _params("gaussian_noise", severity, g, img.shape, {"sigma": sigma})
    noisy = img.astype(np.float32) + g.normal(0.0, p["sigma"], img.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def occlusion(img: np.ndarray, severity: int, rng: Any = 0, patches: list | None = None,
              colors: list | None = None) -> np.ndarray:
    """Paint opaque rectangles: ``patches`` is a list of ``[x0, y0, x1, y1]`` in fractions of the image
    width/height, ``colors`` one BGR triple per patch (both random if None; 6%..28% of the image)."""
    img = _check_image(img)
    severity = check_severity(severity)
    p = _params("occlusion", severity, as_generator(rng), img.shape, {"patches": patches, "colors": colors})
    if len(p["colors"]) != len(p["patches"]):
        raise ValueError(f"occlusion: {len(p['patches'])} patches but {len(p['colors'])} colors")
    out = img.copy()
    h, w = img.shape[:2]
    for (x0, y0, x1, y1), color in zip(p["patches"], p["colors"]):
        c0, c1 = int(round(x0 * w)), int(round(x1 * w))
        r0, r1 = int(round(y0 * h)), int(round(y1 * h))
        out[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = np.asarray(color, np.uint8)
    return out


def jpeg_compression(img: np.ndarray, severity: int, rng: Any = 0, quality: int | None = None) -> np.ndarray:
    """Re-encode as JPEG at ``quality`` (30, 20, 14, 9, 5 by severity) and decode again."""
    img = _check_image(img)
    severity = check_severity(severity)
    p = _params("jpeg_compression", severity, as_generator(rng), img.shape, {"quality": quality})
    ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), int(p["quality"])])
    if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
        raise RuntimeError("cv2.imencode failed to encode the image as JPEG")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def low_light(img: np.ndarray, severity: int, rng: Any = 0, factor: float | None = None,
              gamma: float | None = None, sigma: float | None = None) -> np.ndarray:
    """Darken: ``255 * factor * (img / 255) ** gamma`` plus Gaussian sensor noise of ``sigma`` grey levels."""
    img = _check_image(img)
    severity = check_severity(severity)
    g = as_generator(rng)
    p = _params("low_light", severity, g, img.shape, {"factor": factor, "gamma": gamma, "sigma": sigma})
    x = img.astype(np.float32) / 255.0
    dark = 255.0 * p["factor"] * np.power(x, p["gamma"])
    dark += g.normal(0.0, p["sigma"], img.shape).astype(np.float32)
    return np.clip(np.rint(dark), 0, 255).astype(np.uint8)


#: name -> degradation function ``f(img, severity, rng=0, **params)``
DEGRADATIONS: dict[str, Callable[..., np.ndarray]] = {
    "motion_blur": motion_blur,
    "defocus_blur": defocus_blur,
    "gaussian_noise": gaussian_noise,
    "occlusion": occlusion,
    "jpeg_compression": jpeg_compression,
    "low_light": low_light,
}


def apply_degradation(img: np.ndarray, name: str, severity: int, seed: Any = 0, **params: Any) -> np.ndarray:
    """Apply ``DEGRADATIONS[name]`` at ``severity`` with ``seed`` (int or Generator); ``params`` override."""
    _check_name(name)
    return DEGRADATIONS[name](img, severity, seed, **params)


# ----------------------------------------------------------------------------------------------- pipeline step
def _stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process (Python's ``hash`` is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def _frame_name(results: dict) -> str:
    """The dataset-relative file name of a frame (``img_info['filename']``), else the loaded path."""
    info = results.get("img_info") or {}
    for name in (info.get("filename"), info.get("file_name"), results.get("ori_filename"),
                 results.get("filename")):
        if name:
            return str(name)
    raise KeyError("SeqDegrade needs 'img_info.filename', 'ori_filename' or 'filename' in the results; "
                   "place it after LoadMultiImagesFromFile")


@PIPELINES.register_module()
class SeqDegrade:
    """Degrade every frame of a clip with one set of parameters (robustness study, synthetic set).

    Args:
        kind: a name in ``DEGRADATIONS``.
        severity: 1..5.
        seed: base seed. The parameters (blur angle/length, occluding patches, ...) are drawn from
            ``(seed, key-frame file name)`` and shared by every frame of the clip; per-pixel noise is drawn
            from ``(seed, frame file name)``. The result is therefore the same in every epoch, worker and
            process, and does not depend on the data root.
        per_video: draw the parameters from the key frame's video folder instead of its file name, so
            every frame of a video gets the same parameters even when frames are loaded one at a time
            (test time).

    ``results``: a list of dicts (mmtracking multi-image pipelines: key frame first, then references) or a
    single dict, each with ``img`` uint8 ``ndarray[H, W, 3]`` BGR as ``LoadMultiImagesFromFile`` leaves it.
    Each dict gets ``img`` replaced and ``degradation = dict(kind, severity, **params)`` added (add
    ``'degradation'`` to the collect step's ``meta_keys`` to keep it in ``img_metas``).
    """

    def __init__(self, kind: str, severity: int, seed: int = 0, per_video: bool = False) -> None:
        _check_name(kind)
        self.kind = kind
        self.severity = check_severity(severity)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"SeqDegrade: seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        self.per_video = bool(per_video)

    def clip_params(self, results: list[dict] | dict) -> dict:
        """The parameters this step uses for the clip ``results`` (before the images are changed)."""
        frames = [results] if isinstance(results, dict) else list(results)
        if not frames:
            raise ValueError("SeqDegrade: empty clip")
        key = _frame_name(frames[0])
        if self.per_video:
            key = os.path.dirname(key)
        rng = np.random.default_rng([self.seed, _stable_hash(key)])
        return _SAMPLERS[self.kind](self.severity, rng, _check_image(frames[0].get("img"), "results['img']").shape)

    def __call__(self, results: list[dict] | dict) -> list[dict] | dict:
        frames = [results] if isinstance(results, dict) else results
        params = self.clip_params(frames)
        fn = DEGRADATIONS[self.kind]
        for r in frames:
            img = _check_image(r.get("img"), "results['img']")
            rng = np.random.default_rng([self.seed, _stable_hash(_frame_name(r)), 1])
            r["img"] = fn(img, self.severity, rng, **params)
            r["degradation"] = dict(kind=self.kind, severity=self.severity, **params)
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(kind={self.kind!r}, severity={self.severity}, seed={self.seed}, "
                f"per_video={self.per_video})")
