# Tiny TRoI baseline for the synthetic video set: the same SELSA + TRoI architecture shrunk to train on a
# CPU in minutes (smoke runs, tests, demo). ResNet-18 at a quarter of the width with a dilated stride-8
# output, a 64-channel neck, 128-wide box-head fcs, fewer proposals, random initialisation (no download).
# Frames stay at their 160x96 size (objects of about 15-45 px): anchors of 16 to 45 px at stride 8, and an
# RPN positive threshold of 0.5 instead of 0.7 (with 0.7 almost no anchor matches such small objects).
# Measured: with the paper's frozen stem, eval-mode BN and 0.7, 288 iterations reached mAP@50 0.02; with
# these settings and lr 0.02, 144 iterations reach 0.30.
# The TRoI embed taps are not precomputed at test time: on maps this small they cost more than they save.
_base_ = [
    './_base_/models/selsa-troi_faster-rcnn_r50-dc5.py',
    './_base_/datasets/synthetic-vid.py',
    './_base_/default_runtime.py',
]
model = dict(
    detector=dict(
        backbone=dict(
            depth=18,
            base_channels=16,
            out_indices=(3, ),
            strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 4),
            # trained from scratch: nothing frozen, BN statistics learned (the paper freezes the stem and
            # layer1 and keeps BN in eval mode, which only makes sense with ImageNet weights)
            frozen_stages=-1,
            norm_eval=False,
            init_cfg=None),
        neck=dict(in_channels=[128], out_channels=64),
        rpn_head=dict(
            in_channels=64,
            feat_channels=64,
            # half-octave anchor sizes 16-45 px, so small objects find anchors of IoU >= 0.6
            anchor_generator=dict(scales=[2, 2.83, 4, 5.66], strides=[8])),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=64, featmap_strides=[8]),
            bbox_head=dict(
                in_channels=64,
                fc_out_channels=128,
                num_classes=6,
                aggregator=dict(in_channels=128, num_attention_blocks=8))),
        # Proposals and RoIs sized for 1-3 objects per frame (benchmarks/bench_tiny_train.py, README "Tiny
        # training"): 32 sampled RoIs per key frame, 100 key proposals from the 300 best anchors, and 30
        # proposals per reference frame (training) and per test frame, instead of 64, 300/1000 and 100.
        # RoIAlign's CPU backward and the TRoI / SELSA work scale with these counts: about 0.65x the CPU time
        # per iteration; after 288 iterations (seed 0) mAP@50 0.64 baseline / 0.73 clab (0.70 / 0.77 before).
        train_cfg=dict(
            rpn=dict(assigner=dict(pos_iou_thr=0.5)),
            rpn_proposal=dict(nms_pre=300, max_per_img=100),
            rcnn=dict(sampler=dict(num=32))),
        test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=30))),
    test_cfg=dict(cache_ref_proposals=True, embed_taps=False))

optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(
    policy='step',
    warmup='linear',
    warmup_iters=50,
    warmup_ratio=1.0 / 3,
    step=[5])
# mmcv's epoch runner without its 2 s pause per epoch (13 s of a 6-epoch tiny training) when no loader workers
# (clab/engine/runners.py, registered when clab.engine is imported)
runner = dict(type='EpochBasedRunnerNoPause', max_epochs=6)
log_config = dict(interval=10)
