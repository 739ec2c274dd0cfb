"""The 30 ImageNet VID classes, in the order that gives labels 0..29 and COCO category ids 1..30.

``IMAGENET_VID_WNIDS[i]`` is the WordNet id of ``IMAGENET_VID_CLASSES[i]``, as it appears in the ILSVRC
annotation XML ``<name>`` fields. DET objects of any other class get category id 31 (``OTHER_CATEGORY``).
"""
from __future__ import annotations

IMAGENET_VID_CLASSES: tuple[str, ...] = (
    "airplane", "antelope", "bear", "bicycle", "bird", "bus", "car", "cattle", "dog", "domestic_cat",
    "elephant", "fox", "giant_panda", "hamster", "horse", "lion", "lizard", "monkey", "motorcycle",
    "rabbit", "red_panda", "sheep", "snake", "squirrel", "tiger", "train", "turtle", "watercraft",
    "whale", "zebra",
)

IMAGENET_VID_WNIDS: tuple[str, ...] = (
    "n02691156", "n02419796", "n02131653", "n02834778", "n01503061", "n02924116", "n02958343",
    "n02402425", "n02084071", "n02121808", "n02503517", "n02118333", "n02510455", "n02342885",
    "n02374451", "n02129165", "n01674464", "n02484322", "n03790512", "n02324045", "n02509815",
    "n02411705", "n01726692", "n02355227", "n02129604", "n04468005", "n01662784", "n04530566",
    "n02062744", "n02391049",
)

#: WordNet id -> COCO category id (1..30)
WNID_TO_CATEGORY_ID: dict[str, int] = {w: i + 1 for i, w in enumerate(IMAGENET_VID_WNIDS)}

#: the catch-all DET category (id, name as spelled by the published converter)
OTHER_CATEGORY: dict = {"id": 31, "name": "other_categeries", "encode_name": None}

assert len(IMAGENET_VID_CLASSES) == len(IMAGENET_VID_WNIDS) == 30
