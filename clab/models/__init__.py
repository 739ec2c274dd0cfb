"""clab.models: the SELSA + Temporal RoI Align video detector and the CLAB contrastive branch.

Importing this package registers every model part in mmdet's ``MODELS`` registry under mmtracking's names
(``SELSA``, ``SelsaRoIHead``, ``TemporalRoIAlign``, ``SelsaBBoxHead``, ``SelsaAggregator``) plus
``ContrastiveHead`` and ``PrefixNMSRPNHead``, so mmcv configs can build them by ``type``.
"""
from __future__ import annotations

from .contrastive import ContrastiveHead
from .rpn_head import PrefixNMSRPNHead
from .selsa import SELSA
from .selsa_aggregator import SelsaAggregator
from .selsa_bbox_head import SelsaBBoxHead
from .selsa_roi_head import SelsaRoIHead
from .temporal_roi_align import TemporalRoIAlign

__all__ = ["SELSA", "SelsaRoIHead", "TemporalRoIAlign", "SelsaBBoxHead", "SelsaAggregator",
           "ContrastiveHead", "PrefixNMSRPNHead"]
