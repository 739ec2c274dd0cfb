"""Data loaders for training (aspect-ratio groups, seeded) and testing (whole videos per process)."""
from __future__ import annotations

from functools import partial

from mmcv.parallel import collate
from mmcv.runner import get_dist_info
from torch.utils.data import DataLoader


def build_train_loader(dataset, samples_per_gpu: int, workers_per_gpu: int, seed: int | None,
                       distributed: bool) -> DataLoader:
    """Batches of ``samples_per_gpu`` clips from one aspect-ratio group (mmdet's group samplers).

    Non-distributed, mmdet's ``GroupSampler`` shuffles with NumPy's global RNG, which
    :class:`~clab.engine.hooks.EpochSeedHook` reseeds at every epoch start; distributed,
    ``DistributedGroupSampler`` shuffles from ``seed + epoch`` (mmcv's ``DistSamplerSeedHook`` sets the
    epoch). Worker processes get PyTorch's default per-worker seeds, drawn from the reseeded torch RNG.
    """
    from mmdet.datasets.samplers import DistributedGroupSampler, GroupSampler
    if not hasattr(dataset, "flag"):
        raise TypeError(f"{type(dataset).__name__} has no aspect-ratio group 'flag'; use a CocoVideoDataset")
    rank, world_size = get_dist_info()
    if distributed:
        sampler = DistributedGroupSampler(dataset, samples_per_gpu, world_size, rank, seed=seed or 0)
    else:
        sampler = GroupSampler(dataset, samples_per_gpu)
    return DataLoader(dataset, batch_size=samples_per_gpu, sampler=sampler, num_workers=workers_per_gpu,
                      collate_fn=partial(collate, samples_per_gpu=samples_per_gpu), pin_memory=False,
                      drop_last=False, persistent_workers=False)


def video_shards(dataset, world_size: int) -> list[list[int]]:
    """Split the dataset's frame indices into ``world_size`` shards of whole videos, in dataset order.

    Videos are assigned greedily (largest first) to the shard with the fewest frames so far, so every video
    is tested on exactly one process, in frame order, and the reference cache of a video is built once.
    """
    videos: dict = {}
    for idx, info in enumerate(dataset.data_infos):
        videos.setdefault(info.get("video_id", ("image", idx)), []).append(idx)
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for frames in sorted(videos.values(), key=len, reverse=True):
        min(shards, key=len).extend(frames)
    return [sorted(s) for s in shards]
