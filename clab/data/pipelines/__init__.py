"""Sequence pipeline steps for clips ``[key, *refs]`` (SPEC 3.6), registered in mmdet ``PIPELINES`` under
mmtracking 0.14's names."""
from .formatting import (ConcatVideoReferences, MultiImagesToTensor, SeqDefaultFormatBundle, ToList,
                         VideoCollect)
from .loading import LoadMultiImagesFromFile, SeqLoadAnnotations
from .transforms import SeqNormalize, SeqPad, SeqRandomFlip, SeqResize

__all__ = [
    "LoadMultiImagesFromFile", "SeqLoadAnnotations", "SeqResize", "SeqRandomFlip", "SeqNormalize", "SeqPad",
    "VideoCollect", "ConcatVideoReferences", "SeqDefaultFormatBundle", "MultiImagesToTensor", "ToList",
]
