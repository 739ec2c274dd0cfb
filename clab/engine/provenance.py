"""What a run folder records about itself: resolved config, git revision, package versions, seed, command."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys

from ..io import atomic_write_json, atomic_write_text

PACKAGES = ("torch", "torchvision", "mmcv-full", "mmdet", "pytorch-metric-learning", "pycocotools", "numpy",
            "opencv-python", "clab")


def git_revision(cwd: str | None = None) -> str | None:
    """The checked-out commit (with ``-dirty`` when the work tree has changes), or None outside git."""
    here = cwd or os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_record(seed: int | None, extra: dict | None = None) -> dict:
    import torch
    record = {
        "git_revision": git_revision(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else "cpu",
        "seed": seed,
        "command": sys.argv,
    }
    record.update(extra or {})
    return record


def write_run_record(work_dir: str, cfg, seed: int | None, extra: dict | None = None) -> dict:
    """Write ``config.py`` (the resolved config) and ``provenance.json`` into ``work_dir``."""
    os.makedirs(work_dir, exist_ok=True)
    atomic_write_text(os.path.join(work_dir, "config.py"), cfg.pretty_text)
    record = environment_record(seed, extra)
    atomic_write_json(os.path.join(work_dir, "provenance.json"), record)
    return record
