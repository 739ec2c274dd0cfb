# TRoI baseline (SELSA + Temporal RoI Align, R-50-DC5), ImageNet VID + DET, 7 epochs (SPEC 1.2, 2.x), at CLAB's
# batch: 8 GPUs x 2 clips = 16, lr 0.01. This is the control that isolates the branch: it differs from the
# CLAB config of the same backbone by the branch only. mmtracking's published recipe (8 x 1 clip, the
# 79.8 / 82.6 / 84.1 numbers) is selsa-troi_faster-rcnn_r50-dc5_8xb1-7e_imagenetvid.py.
_base_ = [
    './_base_/models/selsa-troi_faster-rcnn_r50-dc5.py',
    './_base_/datasets/imagenet-vid-det_troi.py',
    './_base_/schedules/sgd_7e.py',
    './_base_/default_runtime.py',
]
data = dict(samples_per_gpu=2, workers_per_gpu=2)
# the global batch this recipe was tuned for (mmdet's convention); clab train --auto-scale-lr scales the lr
# linearly to another one, --accumulate keeps it on fewer GPUs
auto_scale_lr = dict(enable=False, base_batch_size=16)
