"""How annotated data gets into the kit: converters from other layouts to CocoVID json.

- :mod:`~clab.data.converters.imagenet_vid`: ILSVRC2015 VID/DET XML + FGFA lists (``clab convert-imagenet-vid``);
- :mod:`~clab.data.converters.mot`: MOT-challenge sequence folders (``clab convert-mot``);
- :mod:`~clab.data.converters.cvat`: CVAT "for video 1.1" XML exports (``clab convert-cvat``).

Each module offers a pure ``convert(...)`` function returning a summary, plus ``add_arguments`` and ``run``
for its command. Every json is written atomically (:mod:`clab.io`); bad input raises ``ConversionError``
with the file (and line) at fault. ``clab check-data`` (:mod:`clab.data.check`) checks the result.
"""
from .imagenet_vid import ConversionError

__all__ = ["ConversionError"]
