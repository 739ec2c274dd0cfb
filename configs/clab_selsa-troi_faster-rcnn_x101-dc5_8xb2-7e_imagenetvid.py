# CLAB with ResNeXt-101 64x4d DC5 (SPEC 1.2): the paper's 85.2 mAP@50 setting.
_base_ = './clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py'
model = dict(
    detector=dict(
        backbone=dict(
            type='ResNeXt',
            depth=101,
            groups=64,
            base_width=4,
            init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d'))))
