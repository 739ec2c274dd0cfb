# The synthetic video set (clab make-synthetic; DESIGN.md "The embedded default"), in the ImageNet VID
# layout: same pipelines and samplers as imagenet-vid-det_troi.py, scaled to frames of about 160x96 and
# videos of about 12 frames; no DET part.
# Training: key frames (is_vid_train_frame) with one reference drawn on each side within 4 frames.
# Testing: every val frame; at frame 0 of each video 4 references spread over the whole video.
dataset_type = 'CocoVideoDataset'
classes = ('disc', 'square', 'triangle', 'cross', 'ring', 'star')  # clab.data.synthetic.SYNTHETIC_CLASSES
data_root = 'data/synthetic/'
img_scale = (160, 96)
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadMultiImagesFromFile'),
    dict(type='SeqLoadAnnotations', with_bbox=True, with_track=True),
    dict(type='SeqResize', img_scale=img_scale, keep_ratio=True, share_params=True),
    dict(type='SeqRandomFlip', share_params=True, flip_ratio=0.5),
    dict(type='SeqNormalize', **img_norm_cfg),
    dict(type='SeqPad', size_divisor=16),
    dict(type='VideoCollect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_instance_ids']),
    dict(type='ConcatVideoReferences'),
    dict(type='SeqDefaultFormatBundle', ref_prefix='ref'),
]
test_pipeline = [
    dict(type='LoadMultiImagesFromFile'),
    dict(type='SeqResize', img_scale=img_scale, keep_ratio=True, share_params=True),
    dict(type='SeqRandomFlip', share_params=True, flip_ratio=0.0),
    dict(type='SeqNormalize', **img_norm_cfg),
    dict(type='SeqPad', size_divisor=16),
    dict(type='VideoCollect', keys=['img'], meta_keys=('num_left_ref_imgs', 'frame_stride', 'video_id')),
    dict(type='ConcatVideoReferences'),
    dict(type='MultiImagesToTensor', ref_prefix='ref'),
    dict(type='ToList'),
]
data = dict(
    samples_per_gpu=2,  # CLAB needs >= 2 clips per device (SPEC 0.1)
    workers_per_gpu=1,
    train=dict(
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'annotations/synthetic_vid_train.json',
        img_prefix=data_root + 'Data/VID',
        ref_img_sampler=dict(num_ref_imgs=2, frame_range=4, filter_key_img=True, method='bilateral_uniform'),
        pipeline=train_pipeline),
    val=dict(
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'annotations/synthetic_vid_val.json',
        img_prefix=data_root + 'Data/VID',
        ref_img_sampler=dict(num_ref_imgs=4, frame_range=[-2, 2], method='test_with_adaptive_stride'),
        pipeline=test_pipeline,
        test_mode=True),
    test=dict(
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'annotations/synthetic_vid_val.json',
        img_prefix=data_root + 'Data/VID',
        ref_img_sampler=dict(num_ref_imgs=4, frame_range=[-2, 2], method='test_with_adaptive_stride'),
        pipeline=test_pipeline,
        test_mode=True))
