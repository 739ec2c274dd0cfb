# TRoI baseline with ResNet-101-DC5 (SPEC 1.2).
_base_ = './selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py'
model = dict(
    detector=dict(
        backbone=dict(
            depth=101,
            init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101'))))
