"""Model wrappers for one process (CPU or one GPU) and for ``torch.distributed`` (NCCL or gloo)."""
from __future__ import annotations

from mmcv.parallel import MMDataParallel, MMDistributedDataParallel


class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmcv's DDP wrapper for CPU processes (gloo).

    mmcv only unpacks ``DataContainer`` batches when the module sits on a GPU (``device_ids`` set); on CPUs
    it would hand the containers themselves to ``train_step``. Here they are scattered to the CPU first.
    """

    def _to_cpu(self, inputs, kwargs):
        inputs, kwargs = self.scatter(inputs, kwargs, [-1])
        return inputs[0], kwargs[0]

    def train_step(self, *inputs, **kwargs):
        if not self.device_ids:
            inputs, kwargs = self._to_cpu(inputs, kwargs)
        return super().train_step(*inputs, **kwargs)

    def val_step(self, *inputs, **kwargs):
        if not self.device_ids:
            inputs, kwargs = self._to_cpu(inputs, kwargs)
        return super().val_step(*inputs, **kwargs)


def wrap_model(model, device: str, distributed: bool, find_unused_parameters: bool = False):
    """Wrap ``model`` for mmcv runners: DDP (NCCL on GPUs, gloo on CPUs) or single-device DP.

    ``device`` is ``'cpu'``, ``'cuda'`` (the process's current CUDA device, which
    :func:`clab.engine.launch.init_distributed` sets to its local rank) or ``'cuda:N'``.
    """
    from .launch import local_device
    target = local_device(device)
    if target.type == "cuda":
        model = model.to(target)
        if distributed:
            return MMDistributedDataParallel(model, device_ids=[target.index], broadcast_buffers=False,
                                             find_unused_parameters=find_unused_parameters)
        return MMDataParallel(model, device_ids=[target.index])
    if distributed:
        return CPUDistributedDataParallel(model, broadcast_buffers=False,
                                          find_unused_parameters=find_unused_parameters)
    return MMDataParallel(model, device_ids=None)
