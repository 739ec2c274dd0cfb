"""The paper's published numbers (ImageNet VID val, mAP@50 in %; CLAB paper Table 1 and mmtracking's TRoI
model zoo) and which of them a config corresponds to."""
from __future__ import annotations

from typing import Any

__all__ = ["PAPER_MAP50", "BACKBONE_NAMES", "backbone_tag"]

#: model -> backbone tag -> mAP@50 (%) on ImageNet VID val; CLAB R-50 is not reported
PAPER_MAP50: dict[str, dict[str, float]] = {
    "baseline": {"r50": 79.8, "r101": 82.6, "x101": 84.1},
    "clab": {"r101": 84.0, "x101": 85.2},
}
BACKBONE_NAMES = {"r50": "R-50-DC5", "r101": "R-101-DC5", "x101": "X-101-64x4d-DC5"}


def backbone_tag(cfg: Any) -> str | None:
    """``'r50'``, ``'r101'`` or ``'x101'`` for the paper's backbones (full width), else None (tiny models)."""
    backbone = cfg.model.get("detector", {}).get("backbone", {})
    depth, kind = backbone.get("depth"), backbone.get("type", "")
    if backbone.get("base_channels", 64) != 64 and kind == "ResNet":
        return None
    if kind == "ResNeXt" and depth == 101:
        return "x101"
    if kind == "ResNet" and depth in (50, 101):
        return f"r{depth}"
    return None
