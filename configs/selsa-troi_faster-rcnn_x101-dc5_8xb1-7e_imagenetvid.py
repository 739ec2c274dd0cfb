# TRoI baseline, ResNeXt-101 64x4d DC5 (mmtracking's 84.1), as mmtracking 0.14 trained it: 8 GPUs x 1 clip (global batch 8), two loader
# workers per GPU, lr 0.01 (see selsa-troi_faster-rcnn_r50-dc5_8xb1-7e_imagenetvid.py).
_base_ = './selsa-troi_faster-rcnn_x101-dc5_8xb2-7e_imagenetvid.py'
data = dict(samples_per_gpu=1, workers_per_gpu=2)
auto_scale_lr = dict(enable=False, base_batch_size=8)
