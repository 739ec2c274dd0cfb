"""Degradations: determinism, strength growing with severity, argument checks, and the SeqDegrade step."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from mmcv.utils import build_from_cfg
from mmdet.datasets.builder import PIPELINES
from mmdet.datasets.pipelines import LoadImageFromFile

from clab.data.degradations import (DEGRADATIONS, SeqDegrade, apply_degradation, defocus_blur, gaussian_noise,
                                    jpeg_compression, low_light, motion_blur, motion_blur_kernel, occlusion,
                                    sample_params)

RANDOM_KINDS = ("motion_blur", "gaussian_noise", "occlusion", "low_light")  # depend on the seed


def textured(h: int = 96, w: int = 160, seed: int = 0) -> np.ndarray:
    """A textured uint8 BGR image with structure at several scales."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.uniform(40, 215, (6, 10, 3)), (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 30, (h, w, 3)), (0, 0), 0.8)
    return np.clip(coarse + fine, 0, 255).astype(np.uint8)


def hf_energy(img: np.ndarray) -> float:
    """Mean squared Laplacian: the high-frequency energy."""
    return float(np.mean(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def strictly_decreasing(xs: list[float]) -> bool:
    return all(a > b for a, b in zip(xs, xs[1:]))


def test_registry_has_the_six_degradations() -> None:
    assert set(DEGRADATIONS) == {"motion_blur", "defocus_blur", "gaussian_noise", "occlusion",
                                 "jpeg_compression", "low_light"}


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_shape_dtype_and_determinism(name: str) -> None:
    img = textured()
    a = apply_degradation(img, name, 3, seed=7)
    b = apply_degradation(img, name, 3, seed=7)
    c = DEGRADATIONS[name](img, 3, np.random.default_rng(7))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(a, img)
    assert np.array_equal(img, textured())  # input untouched
    if name in RANDOM_KINDS:
        assert not np.array_equal(a, apply_degradation(img, name, 3, seed=8))


def test_blurs_remove_more_high_frequency_energy_with_severity() -> None:
    img = textured()
    for fn, extra in ((motion_blur, {"angle": 30.0}), (defocus_blur, {})):
        energies = [hf_energy(fn(img, s, 0, **extra)) for s in range(1, 6)]
        assert energies[0] < hf_energy(img)
        assert strictly_decreasing(energies), (fn.__name__, energies)


def test_motion_blur_follows_its_angle() -> None:
    # vertical stripes vary along x only: a horizontal blur (angle 0) smooths them, a vertical one does not
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::4] = 255
    horizontal = motion_blur(stripes, 3, angle=0.0, length=7)
    vertical = motion_blur(stripes, 3, angle=90.0, length=7)
    assert np.array_equal(vertical, stripes)
    assert horizontal.std() < 0.5 * stripes.std()
    k = motion_blur_kernel(5, 0.0)
    assert k.shape == (5, 5) and np.isclose(k.sum(), 1.0) and np.count_nonzero(k[2]) == 5 and k[[0, 1, 3, 4]].sum() == 0


def test_noise_raises_variance_with_severity() -> None:
    grey = np.full((64, 64, 3), 128, np.uint8)
    variances = [float(np.var(gaussian_noise(grey, s, 1).astype(np.float64) - 128)) for s in range(1, 6)]
    assert all(a < b for a, b in zip(variances, variances[1:])), variances
    assert variances[0] > 30  # sigma 8 -> variance about 64


def test_low_light_lowers_the_mean_with_severity() -> None:
    img = textured()
    means = [float(low_light(img, s, 2).mean()) for s in range(1, 6)]
    assert means[0] < img.mean() and strictly_decreasing(means), means


def test_jpeg_lowers_psnr_with_severity() -> None:
    img = textured()
    values = [psnr(img, jpeg_compression(img, s)) for s in range(1, 6)]
    assert strictly_decreasing(values), values


def test_occlusion_covers_more_with_severity() -> None:
    img = textured()
    covered = [float((occlusion(img, s, 4) != img).any(axis=2).mean()) for s in range(1, 6)]
    assert strictly_decreasing([-c for c in covered]), covered
    assert 0.03 < covered[0] < covered[-1] < 0.35


@pytest.mark.parametrize("severity", [0, 6, 2.5, True, "3", None])
def test_bad_severity_raises(severity) -> None:
    for name in DEGRADATIONS:
        with pytest.raises(ValueError, match="severity"):
            apply_degradation(textured(), name, severity)


def test_bad_image_name_and_seed_raise() -> None:
    with pytest.raises(ValueError, match="uint8 BGR image"):
        motion_blur(textured().astype(np.float32), 2)
    with pytest.raises(ValueError, match="uint8 BGR image"):
        gaussian_noise(textured()[..., 0], 2)
    with pytest.raises(ValueError, match="unknown degradation 'blur'"):
        apply_degradation(textured(), "blur", 2)
    with pytest.raises(ValueError, match="rng"):
        gaussian_noise(textured(), 2, rng=-1)


def test_explicit_params_override_severity() -> None:
    img = textured()
    assert np.array_equal(defocus_blur(img, 1, radius=3.0), defocus_blur(img, 5, radius=3.0))
    p = sample_params("motion_blur", 4, 11, img.shape)
    assert set(p) == {"angle", "length"} and np.isclose(p["length"], 0.11 * 96)
    assert np.array_equal(motion_blur(img, 4, 11), motion_blur(img, 4, 0, **p))


# ----------------------------------------------------------------------------------------------- SeqDegrade
def _clip(tmp_path: Path, video: str, frames: list[int]) -> list[dict]:
    """Load real JPEG frames with mmdet's LoadImageFromFile, as the multi-image loader does per frame."""
    loader = LoadImageFromFile()
    results = []
    for f in frames:
        rel = f"{video}/{f:06d}.JPEG"
        path = tmp_path / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), textured(seed=f))
        results.append(loader(dict(img_prefix=str(tmp_path), img_info=dict(filename=rel))))
    return results


def test_seq_degrade_is_registered_and_shares_params_across_the_clip(tmp_path: Path) -> None:
    step = build_from_cfg(dict(type="SeqDegrade", kind="motion_blur", severity=4, seed=3), PIPELINES)
    assert isinstance(step, SeqDegrade)
    clip = _clip(tmp_path, "val/v0", [5, 2, 9])  # key frame first, then references
    originals = [r["img"].copy() for r in clip]
    out = step(clip)
    params = [r["degradation"] for r in out]
    assert all(p == params[0] for p in params)
    assert params[0]["kind"] == "motion_blur" and params[0]["severity"] == 4
    for r, img in zip(out, originals):  # each frame got exactly the shared blur
        expected = motion_blur(img, 4, 0, angle=params[0]["angle"], length=params[0]["length"])
        assert np.array_equal(r["img"], expected)

    again = step(_clip(tmp_path, "val/v0", [5, 2, 9]))  # same (seed, key frame) -> same result
    assert all(np.array_equal(a["img"], b["img"]) for a, b in zip(out, again))
    other_key = step(_clip(tmp_path, "val/v0", [2, 5, 9]))
    assert other_key[0]["degradation"]["angle"] != params[0]["angle"]
    other_seed = build_from_cfg(dict(type="SeqDegrade", kind="motion_blur", severity=4, seed=4), PIPELINES)
    assert other_seed(_clip(tmp_path, "val/v0", [5, 2, 9]))[0]["degradation"]["angle"] != params[0]["angle"]


def test_seq_degrade_noise_differs_per_frame_but_parameters_do_not(tmp_path: Path) -> None:
    step = SeqDegrade("gaussian_noise", 2, seed=0)
    clip = _clip(tmp_path, "val/v1", [0, 0])  # the same frame twice: noise comes from the frame name
    out = step(clip)
    assert np.array_equal(out[0]["img"], out[1]["img"])
    clip = _clip(tmp_path, "val/v1", [0, 1])
    noise = [r["img"].astype(int) - textured(seed=f).astype(int) for r, f in zip(step(clip), (0, 1))]
    assert not np.array_equal(noise[0], noise[1])


def test_seq_degrade_per_video_and_single_dict(tmp_path: Path) -> None:
    step = SeqDegrade("occlusion", 5, seed=1, per_video=True)
    a = step(_clip(tmp_path, "val/v2", [0, 1]))
    b = step(_clip(tmp_path, "val/v2", [3]))[0]  # another key frame of the same video, loaded alone
    c = step(_clip(tmp_path, "val/v3", [0]))[0]
    assert a[0]["degradation"] == a[1]["degradation"] == b["degradation"]
    assert c["degradation"]["patches"] != b["degradation"]["patches"]
    single = step(_clip(tmp_path, "val/v2", [4])[0])
    assert isinstance(single, dict) and single["degradation"] == b["degradation"]


def test_seq_degrade_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown degradation"):
        SeqDegrade("fog", 2)
    with pytest.raises(ValueError, match="severity"):
        build_from_cfg(dict(type="SeqDegrade", kind="low_light", severity=9), PIPELINES)
    with pytest.raises(ValueError, match="seed"):
        SeqDegrade("low_light", 2, seed=-3)
    clip = _clip(tmp_path, "val/v4", [0])
    clip[0]["img"] = clip[0]["img"].astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        SeqDegrade("low_light", 2)(clip)
