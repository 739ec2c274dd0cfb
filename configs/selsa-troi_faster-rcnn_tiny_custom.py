# The tiny TRoI model (configs/selsa-troi_faster-rcnn_tiny_synthetic.py) on YOUR annotated videos: a CPU
# trial of your data before the R-50 template (configs/selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_custom.py,
# whose header explains the steps). Frames are scaled to fit 160x96; set `classes` and `data_root` as there.
_base_ = './selsa-troi_faster-rcnn_tiny_synthetic.py'
classes = ('pedestrian', 'car')  # <- your class names, in the json's category order
data_root = 'data/custom/'       # <- holds the frames (paths as in the json) and annotations/
model = dict(detector=dict(roi_head=dict(bbox_head=dict(num_classes=len(classes)))))
data = dict(
    train=dict(classes=classes, ann_file=data_root + 'annotations/custom_train.json', img_prefix=data_root),
    val=dict(classes=classes, ann_file=data_root + 'annotations/custom_val.json', img_prefix=data_root),
    test=dict(classes=classes, ann_file=data_root + 'annotations/custom_val.json', img_prefix=data_root))
