"""High-level inference API in mmtracking 0.14's shape: :func:`init_model` and :func:`inference_vid`.

``init_model`` builds a model from an mmcv config (path or ``Config``) and optionally loads a checkpoint
(see :mod:`clab.checkpoint`); ``inference_vid`` runs one frame of a video through the config's test
pipeline (minus its loading step) and the model, in video order, frame 0 first. docs/api.md shows both.
"""
from __future__ import annotations

import copy
import os
import numpy as np
import torch

__all__ = ["init_model", "inference_vid"]

from .inference import inference_video  # noqa: E402,F401  (a whole video file: clab.inference)


def _load_config(config):
    from mmcv import Config
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"init_model: config file not found: {path}")
        return Config.fromfile(path)
    if isinstance(config, Config):
        return copy.deepcopy(config)
    raise TypeError(f"init_model: config must be a file path or an mmcv Config, got {type(config).__name__}")


def _dataset_classes(cfg) -> tuple | None:
    """CLASSES of the config's test dataset (its ``classes`` override, else the dataset class's)."""
    from mmdet.datasets.builder import DATASETS
    test = cfg.get("data", {}).get("test")
    if not isinstance(test, dict):
        return None
    if test.get("classes"):
        return tuple(test["classes"])
    dataset_cls = DATASETS.get(test.get("type", "")) if test.get("type") else None
    classes = getattr(dataset_cls, "CLASSES", None)
    return tuple(classes) if classes else None


def init_model(config, checkpoint: str | None = None, device: str = "cpu", cfg_options: dict | None = None,
               strict: bool = True, trust: bool = False):
    """Build the model of ``config`` for inference.

    Args:
        config: mmcv config file path or ``mmcv.Config``.
        checkpoint: ``.pth`` path or http(s) URL. Loaded with ``weights_only=True`` unless ``trust``; a
            mmtracking SELSA/TRoI checkpoint loads into a CLAB model with only ``auxiliary.*`` missing.
            Without a checkpoint the model gets the config's initialisation (which may download the
            ImageNet backbone named by its ``init_cfg``).
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        cfg_options: ``{'dotted.key': value}`` overrides merged into the config.
        strict: refuse a checkpoint with unexpected, mis-shaped or missing keys (other than ``auxiliary.*``).
        trust: allow full unpickling of an older checkpoint you trust.

    Returns:
        The model in eval mode on ``device``, with ``model.cfg`` (the config) and ``model.CLASSES``.
    """
    from mmdet.models import build_detector

    import clab  # noqa: F401  (registries)
    from .checkpoint import load_checkpoint

    cfg = _load_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if "model" not in cfg:
        raise ValueError(f"init_model: config {getattr(cfg, 'filename', '')} has no 'model'")
    if checkpoint is not None:  # the checkpoint replaces every weight: do not fetch the ImageNet init
        backbone = cfg.model.get("detector", {}).get("backbone")
        if backbone is not None:
            backbone["init_cfg"] = None
            backbone.pop("pretrained", None)
    model = build_detector(cfg.model)
    classes = None
    if checkpoint is None:
        model.init_weights()
    else:
        ckpt = load_checkpoint(model, checkpoint, strict=strict, map_location="cpu", trust=trust)
        classes = (ckpt.get("meta") or {}).get("CLASSES")
    model.CLASSES = tuple(classes) if classes else _dataset_classes(cfg)
    model.cfg = cfg
    model.to(device)
    model.eval()
    return model


def _frame(image: np.ndarray, frame_id: int, filename: str | None) -> dict:
    """The result dict the loading step would have produced for one frame."""
    return dict(img=image.copy(), img_info=dict(frame_id=frame_id, filename=filename), filename=filename,
                ori_filename=filename, img_shape=image.shape, ori_shape=image.shape, img_fields=["img"],
                frame_id=frame_id)


def inference_vid(model, img, frame_id: int,
                  ref_img_sampler: dict = dict(frame_stride=10, num_left_ref_imgs=10)) -> dict:
    """Detect objects in one frame of a video (call with frame_id 0, 1, 2, ... in order).

    As mmtracking's demo: at frame 0 the frame itself is also given as ``num_left_ref_imgs`` reference
    images, and every ``frame_stride``-th frame adds itself as a new reference (the adaptive-stride SELSA
    model keeps the references of frame 0 for the whole video and ignores later ones).

    Args:
        model: from :func:`init_model` (has ``model.cfg``).
        img: image path, or a BGR uint8 ndarray (H, W, 3) as ``cv2.imread`` returns.
        frame_id: 0-based index of the frame in its video.
        ref_img_sampler: ``dict(frame_stride, num_left_ref_imgs)``.

    Returns:
        ``{'det_bboxes': [num_classes ndarrays (k, 5)]}``, x1, y1, x2, y2, score in ``img`` pixels.
    """
    import mmcv
    from mmcv.parallel import collate
    from mmdet.datasets.pipelines import Compose

    from .engine.launch import to_model_device

    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ValueError("inference_vid: model has no .cfg; build it with clab.apis.init_model")
    if not isinstance(frame_id, int) or frame_id < 0:
        raise ValueError(f"inference_vid: frame_id must be an int >= 0, got {frame_id!r}")
    filename = None
    if isinstance(img, (str, os.PathLike)):
        filename = os.fspath(img)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"inference_vid: image file not found: {filename}")
        image = mmcv.imread(filename, channel_order="bgr")
        if image is None:
            raise ValueError(f"inference_vid: could not decode image file {filename}")
    elif isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"inference_vid: img must be (H, W, 3) BGR, got shape {img.shape}")
        image = img
    else:
        raise TypeError(f"inference_vid: img must be a path or an ndarray, got {type(img).__name__}")

    pipeline_cfg = cfg.data.test.pipeline
    first = pipeline_cfg[0]["type"] if pipeline_cfg else None
    if first != "LoadMultiImagesFromFile":
        raise ValueError(f"inference_vid: data.test.pipeline must start with 'LoadMultiImagesFromFile', "
                         f"got {first!r}")
    num_left = int(ref_img_sampler.get("num_left_ref_imgs", 10))
    stride = int(ref_img_sampler.get("frame_stride", 10))
    if num_left < 1 or stride < 1:
        raise ValueError(f"inference_vid: ref_img_sampler values must be >= 1, got {ref_img_sampler}")
    frames = [_frame(image, frame_id, filename)]
    if frame_id == 0:
        frames += [_frame(image, frame_id, filename) for _ in range(num_left)]
    elif frame_id % stride == 0:
        frames.append(_frame(image, frame_id, filename))

    data = Compose(pipeline_cfg[1:])(frames)
    data = to_model_device(collate([data], samples_per_gpu=1), model)   # the device of the model's weights
    with torch.no_grad():
        return model(return_loss=False, rescale=True, **data)
