# CLAB on YOUR annotated videos: the custom TRoI template plus the contrastive branch exactly as in
# clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py (stage 2 / C4, weight 0.005 decaying linearly to 0
# over the first 51% of training). Point _base_ at your copy of the custom template (its classes and data_root
# apply here too).
_base_ = './selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_custom.py'
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
    dict(
        type='CabWeightHook',
        schedule=dict(type='linear', start=0.005, end=0.0, length=0.51, unit='fraction')),
]
