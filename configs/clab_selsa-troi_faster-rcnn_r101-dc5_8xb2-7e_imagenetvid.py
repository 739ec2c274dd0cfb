# CLAB with ResNet-101-DC5 (SPEC 1.2): the paper's 84.0 mAP@50 setting.
_base_ = './clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py'
model = dict(
    detector=dict(
        backbone=dict(
            depth=101,
            init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101'))))
