"""clab.data: CocoVID datasets, reference-frame sampling, sequence pipeline steps, degradations.

Importing it registers the datasets (mmdet ``DATASETS``: ``CocoVideoDataset``, ``ImagenetVIDDataset``) and
the pipeline steps (mmdet ``PIPELINES``: ``LoadMultiImagesFromFile``, ``SeqLoadAnnotations``, ``SeqResize``,
``SeqRandomFlip``, ``SeqNormalize``, ``SeqPad``, ``VideoCollect``, ``ConcatVideoReferences``,
``SeqDefaultFormatBundle``, ``MultiImagesToTensor``, ``ToList`` and the degradation step).
"""
from . import degradations, pipelines, ref_sampling  # noqa: F401  (registration side effects)
from .coco_video import CocoVID, CocoVideoDataset, ImagenetVIDDataset, load_coco_json

__all__ = ["CocoVID", "CocoVideoDataset", "ImagenetVIDDataset", "load_coco_json", "pipelines", "ref_sampling",
           "degradations"]
