# Tiny CLAB on YOUR annotated videos (CPU trial): the tiny custom config plus the contrastive branch of
# clab_selsa-troi_faster-rcnn_tiny_synthetic.py. Point _base_ at your copy of the tiny custom config.
_base_ = './selsa-troi_faster-rcnn_tiny_custom.py'
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
