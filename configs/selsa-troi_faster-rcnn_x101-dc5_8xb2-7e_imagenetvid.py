# TRoI baseline with ResNeXt-101 64x4d DC5 (SPEC 1.2).
_base_ = './selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py'
model = dict(
    detector=dict(
        backbone=dict(
            type='ResNeXt',
            depth=101,
            groups=64,
            base_width=4,
            init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d'))))
