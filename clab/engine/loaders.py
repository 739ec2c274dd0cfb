"""Data loaders for training (aspect-ratio groups, seeded) and testing (whole videos per process)."""
from __future__ import annotations

from functools import partial

from mmcv.parallel import collate
from mmcv.runner import get_dist_info
from torch.utils.data import DataLoader, Sampler


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


class OrderedIndices(Sampler):
    """A sampler that yields exactly ``indices``, in the given order (no shuffling, no padding)."""

    def __init__(self, indices):
        self.indices = [int(i) for i in indices]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_test_loader(dataset, indices, workers: int = 0) -> DataLoader:
    """One collated frame per batch for ``indices`` (a :func:`video_shards` shard), in that order.

    With ``workers > 0`` frames are decoded ahead in worker processes; PyTorch's loader returns batches in
    sampler order whatever the workers' timing, so a video's frames still arrive frame 0 first, one video
    after the other, as the per-video reference cache requires.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"data.workers_per_gpu: expected an integer >= 0, got {workers!r}")
    return DataLoader(dataset, batch_size=1, sampler=OrderedIndices(indices), num_workers=workers,
                      collate_fn=partial(collate, samples_per_gpu=1), pin_memory=False, shuffle=False,
                      persistent_workers=False, prefetch_factor=4 if workers else None)
