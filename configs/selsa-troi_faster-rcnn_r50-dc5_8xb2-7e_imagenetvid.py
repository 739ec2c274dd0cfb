# TRoI baseline (SELSA + Temporal RoI Align, R-50-DC5), ImageNet VID + DET, 7 epochs (SPEC 1.2, 2.x).
_base_ = [
    './_base_/models/selsa-troi_faster-rcnn_r50-dc5.py',
    './_base_/datasets/imagenet-vid-det_troi.py',
    './_base_/schedules/sgd_7e.py',
    './_base_/default_runtime.py',
]
