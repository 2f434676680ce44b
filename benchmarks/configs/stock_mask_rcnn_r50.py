# MMDetection's own mask-rcnn_r50_fpn_1x_coco, model and training setup unchanged, reading the
# synthetic iMaterialist images at the kit's input size (short side 800, long side <= 1024):
# the baseline of benchmarks/gpu_check.py. Training only (no validation). No ImageNet download:
# the backbone starts from random weights, as the kit's configs do in that check.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['imat_kit.mmdet_ext'], allow_failed_imports=False)
data_root = '{{$IMAT_DATA_ROOT:data/imat2019/}}'
model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=46), mask_head=dict(num_classes=46)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1024, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    dataset=dict(_delete_=True, type='IMatDataset', data_root=data_root, split='all',
                 filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
