"""clab: a reproducibility kit for CLAB (contrastive learning through an auxiliary branch for video
object detection) on SELSA + Temporal RoI Align.

Importing ``clab`` registers its datasets and pipeline steps (mmdet ``DATASETS`` / ``PIPELINES``), its
models (mmdet ``MODELS``) and its hooks (mmcv ``HOOKS``), with mmtracking's names, so mmcv configs can
refer to them by ``type``.
"""
__version__ = "0.1.0"

from . import _quiet

_quiet.install()  # before mmcv is imported: drops its release notice and torch's missing-CUDA note

from . import data, models, schedules  # noqa: E402,F401  (registration side effects)
