# Tiny CLAB for the synthetic video set: the tiny TRoI baseline plus the contrastive branch on backbone
# stage 2 (64 channels here). The weight decays from 0.005 to 0 over the first half of training
# (unit='fraction'), the same shape as the paper's 25,000 of about 49,000 iterations.
_base_ = './selsa-troi_faster-rcnn_tiny_synthetic.py'
model = dict(
    detector=dict(backbone=dict(out_indices=(2, 3))),
    cab_stage=2,
    auxiliary=dict(
        type='ContrastiveHead',
        in_channels=64,
        mid_channels=64,
        hidden_channels=64,
        out_channels=32,
        temperature=0.1,
        loss_weight=0.005))
custom_hooks = [
    dict(
        type='CabWeightHook',
        schedule=dict(type='linear', start=0.005, end=0.0, length=0.5, unit='fraction')),
]
