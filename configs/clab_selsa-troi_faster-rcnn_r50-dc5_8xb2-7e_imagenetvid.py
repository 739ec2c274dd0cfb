# CLAB on SELSA + TRoI, R-50-DC5 (SPEC 1.2-1.8): the TRoI baseline plus the contrastive auxiliary branch on
# backbone stage 2 (C4, 1024 channels) with a loss weight decaying linearly from 0.005 to 0 over 25,000
# iterations. The branch is dropped at inference.
_base_ = './selsa-troi_faster-rcnn_r50-dc5_7e_imagenetvid.py'
model = dict(
    detector=dict(backbone=dict(out_indices=(2, 3))),
    cab_stage=2,
    auxiliary=dict(
        type='ContrastiveHead',
        in_channels=1024,
        mid_channels=512,
        hidden_channels=256,
        out_channels=128,
        temperature=0.1,
        loss_weight=0.005))
custom_hooks = [
    dict(type='CabWeightHook', schedule=dict(type='linear', start=0.005, end=0.0, length=25000)),
]
