# Cascade Mask R-CNN R50-FPN on iMaterialist: mmdet's 20-epoch recipe in one run (SGD lr 0.02
# for a total batch of 16, steps at epochs 16 and 19; stem and layer1 frozen, BN in eval mode as
# mmdet trains it), horizontal flips, the kit's data (_base_/imat_instance.py). The kit's
# two-phase "heads, then all layers" recipe is for Mask R-CNN only.
# lr is for 16 images per step: on fewer GPUs x batch_size, pass --auto-scale-lr (mim train) or
# `imat-kit train --auto-scale-lr`.
#   mim train mmdet configs/cascade_maskrcnn_r50_imat.py
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/schedules/schedule_20e.py', 'mmdet::_base_/default_runtime.py',
    './_base_/imat_instance.py'
]
model = dict(
    backbone=dict(init_cfg=None),  # load_from provides it: no ImageNet download
    roi_head=dict(
        bbox_head=[dict(h, num_classes=_base_.num_classes)
                   for h in _base_.model.roi_head.bbox_head],
        mask_head=dict(num_classes={{_base_.num_classes}})))

# the kit's 1024x800 resize, plus flips
train_pipeline = [*_base_.train_pipeline[:-1], dict(type='RandomFlip', prob=0.5),
                  _base_.train_pipeline[-1]]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# COCO: box AP 41.9, mask AP 36.5 (20 epochs); the 80-class layers keep their fresh init.
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/'
             'cascade_mask_rcnn_r50_fpn_20e_coco/cascade_mask_rcnn_r50_fpn_20e_coco_'
             'bbox_mAP-0.419__segm_mAP-0.365_20200504_174711-4af8e66e.pth')
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='imat/competition', rule='greater'))
custom_hooks = [dict(type='ValLossHook')]
