# ImageNet VID + DET for SELSA + Temporal RoI Align (SPEC 3.4-3.6, 2.7).
# Training: VID key frames (is_vid_train_frame) with one reference drawn on each side within 9 frames,
# concatenated with the DET images whose two references are copies of the key image.
# Testing: every VID val frame; at frame 0 of each video 14 references spread over the whole video.
# Layout (clab convert-imagenet-vid): <data_root>/Data/VID/<video>/%06d.JPEG, <data_root>/Data/DET/<path>.JPEG,
# <data_root>/annotations/imagenet_vid_{train,val}.json, imagenet_det_30plus1cls.json.
dataset_type = 'ImagenetVIDDataset'
data_root = 'data/ILSVRC/'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadMultiImagesFromFile'),
    dict(type='SeqLoadAnnotations', with_bbox=True, with_track=True),
    dict(type='SeqResize', img_scale=(1000, 600), keep_ratio=True, share_params=True),
    dict(type='SeqRandomFlip', share_params=True, flip_ratio=0.5),
    dict(type='SeqNormalize', **img_norm_cfg),
    dict(type='SeqPad', size_divisor=16),
    dict(type='VideoCollect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_instance_ids']),
    dict(type='ConcatVideoReferences'),
    dict(type='SeqDefaultFormatBundle', ref_prefix='ref'),
]
test_pipeline = [
    dict(type='LoadMultiImagesFromFile'),
    dict(type='SeqResize', img_scale=(1000, 600), keep_ratio=True, share_params=True),
    dict(type='SeqRandomFlip', share_params=True, flip_ratio=0.0),
    dict(type='SeqNormalize', **img_norm_cfg),
    dict(type='SeqPad', size_divisor=16),
    dict(type='VideoCollect', keys=['img'], meta_keys=('num_left_ref_imgs', 'frame_stride', 'video_id')),
    dict(type='ConcatVideoReferences'),
    dict(type='MultiImagesToTensor', ref_prefix='ref'),
    dict(type='ToList'),
]
data = dict(
    samples_per_gpu=2,  # CLAB needs >= 2 clips per GPU (SPEC 0.1)
    workers_per_gpu=1,
    train=[
        dict(
            type=dataset_type,
            ann_file=data_root + 'annotations/imagenet_vid_train.json',
            img_prefix=data_root + 'Data/VID',
            ref_img_sampler=dict(
                num_ref_imgs=2, frame_range=9, filter_key_img=True, method='bilateral_uniform'),
            pipeline=train_pipeline),
        dict(
            type=dataset_type,
            load_as_video=False,
            ann_file=data_root + 'annotations/imagenet_det_30plus1cls.json',
            img_prefix=data_root + 'Data/DET',
            ref_img_sampler=dict(
                num_ref_imgs=2, frame_range=0, filter_key_img=False, method='bilateral_uniform'),
            pipeline=train_pipeline),
    ],
    val=dict(
        type=dataset_type,
        ann_file=data_root + 'annotations/imagenet_vid_val.json',
        img_prefix=data_root + 'Data/VID',
        ref_img_sampler=dict(num_ref_imgs=14, frame_range=[-7, 7], method='test_with_adaptive_stride'),
        pipeline=test_pipeline,
        test_mode=True),
    test=dict(
        type=dataset_type,
        ann_file=data_root + 'annotations/imagenet_vid_val.json',
        img_prefix=data_root + 'Data/VID',
        ref_img_sampler=dict(num_ref_imgs=14, frame_range=[-7, 7], method='test_with_adaptive_stride'),
        pipeline=test_pipeline,
        test_mode=True))
