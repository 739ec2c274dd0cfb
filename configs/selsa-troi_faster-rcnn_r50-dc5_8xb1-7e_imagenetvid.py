# TRoI baseline, R-50-DC5, as mmtracking 0.14 trained it (the 79.8 mAP@50 of its model zoo): 8 GPUs x 1 clip
# (global batch 8), two loader workers per GPU, lr 0.01, the same 7-epoch schedule. CLAB's configs use
# 8 x 2 clips at the same lr; compare CLAB with the 8xb2 baseline to see the branch alone.
_base_ = './selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py'
data = dict(samples_per_gpu=1, workers_per_gpu=2)
auto_scale_lr = dict(enable=False, base_batch_size=8)
