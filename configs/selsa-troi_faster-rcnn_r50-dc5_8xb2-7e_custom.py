# Template: SELSA + Temporal RoI Align (R-50-DC5) trained on YOUR annotated videos only (no DET still
# images), with your own class list. README "Your own videos" walks through it:
#
#   1. convert your annotations into <data_root>/annotations/custom_{train,val}.json, image paths relative
#      to <data_root>, with a split by video:
#        clab convert-mot  data/mine/MOT17-02 data/mine/MOT17-04 --classes pedestrian - car \
#            --img-root data/mine --out data/mine/annotations --prefix custom --val-fraction 0.2
#        clab convert-cvat data/mine/*/annotations.xml --img-root data/mine --out data/mine/annotations \
#            --prefix custom --val-fraction 0.2
#   2. copy this file and set `classes` (the converter's category order: --classes, or CVAT's labels) and
#      `data_root`; the box head gets len(classes) outputs.
#   3. clab check-data --ann data/mine/annotations/custom_train.json --img-prefix data/mine
#   4. clab train configs/<your copy>.py --work-dir work_dirs/mine
#   For CLAB, copy configs/clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_custom.py too and point its
#   _base_ at your copy of this file.
#
# Training uses every annotated frame as a key frame (the json has no is_vid_train_frame flags), with one
# reference drawn on each side within 9 frames; testing takes 14 references spread over each video. Long
# videos at high frame rates repeat themselves: key_img_sampler=dict(interval=k) keeps every k-th frame.
# The schedule is the paper's 7 epochs; a small data set needs more epochs (runner.max_epochs, lr_config.step).
_base_ = [
    './_base_/models/selsa-troi_faster-rcnn_r50-dc5.py',
    './_base_/schedules/sgd_7e.py',
    './_base_/default_runtime.py',
]
classes = ('pedestrian', 'car')  # <- your class names, in the json's category order
data_root = 'data/custom/'       # <- holds the frames (paths as in the json) and annotations/
dataset_type = 'CocoVideoDataset'
model = dict(detector=dict(roi_head=dict(bbox_head=dict(num_classes=len(classes)))))

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
test_sampler = dict(num_ref_imgs=14, frame_range=[-7, 7], method='test_with_adaptive_stride')
data = dict(
    samples_per_gpu=2,  # CLAB needs >= 2 clips per GPU (SPEC 0.1)
    workers_per_gpu=2,
    train=dict(
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'annotations/custom_train.json',
        img_prefix=data_root,
        ref_img_sampler=dict(num_ref_imgs=2, frame_range=9, filter_key_img=True, method='bilateral_uniform'),
        pipeline=train_pipeline),
    val=dict(
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'annotations/custom_val.json',
        img_prefix=data_root,
        ref_img_sampler=test_sampler,
        pipeline=test_pipeline,
        test_mode=True),
    test=dict(
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'annotations/custom_val.json',
        img_prefix=data_root,
        ref_img_sampler=test_sampler,
        pipeline=test_pipeline,
        test_mode=True))
# tuned for 8 GPUs x 2 clips; clab train --auto-scale-lr scales the lr to another global batch
auto_scale_lr = dict(enable=False, base_batch_size=16)
