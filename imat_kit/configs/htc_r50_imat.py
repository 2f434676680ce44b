# HTC R50-FPN (Hybrid Task Cascade) without the semantic branch (iMaterialist has no stuff
# maps): mmdet's 20-epoch recipe (SGD lr 0.02 for a total batch of 16, steps at epochs 16 and
# 19), horizontal flips, the kit's data. For GPUs too small for htc_x101_dcn_imat.py.
# lr is for 16 images per step: on fewer, pass --auto-scale-lr.
#   mim train mmdet configs/htc_r50_imat.py
_base_ = ['mmdet::htc/htc-without-semantic_r50_fpn_1x_coco.py', './_base_/imat_data.py']
num_classes = _base_.imat_num_classes

model = dict(
    backbone=dict(init_cfg=None),  # load_from provides it: no ImageNet download
    roi_head=dict(
        bbox_head=[dict(h, num_classes=num_classes) for h in _base_.model.roi_head.bbox_head],
        mask_head=[dict(h, num_classes=num_classes) for h in _base_.model.roi_head.mask_head]))

# The recipe's loaders (batch 2 per GPU, aspect-ratio batches) with the kit's data.
dataset_type = 'IMatDataset'
data_root = _base_.imat_data_root
train_pipeline = [*_base_.imat_train_pipeline[:-1], dict(type='RandomFlip', prob=0.5),
                  _base_.imat_train_pipeline[-1]]
test_pipeline = _base_.imat_test_pipeline
train_dataloader = dict(dataset=dict(_base_.imat_train_dataset, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(_base_.imat_val_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = _base_.imat_evaluator
test_evaluator = val_evaluator

max_epochs = 20
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[16, 19],
         gamma=0.1),
]
# COCO (trained with the semantic branch, whose weights go unused): box AP 43.3, mask AP 38.3.
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/htc/htc_r50_fpn_20e_coco/'
             'htc_r50_fpn_20e_coco_20200319-fe28c577.pth')
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='imat/competition', rule='greater'))
custom_hooks = [dict(type='ValLossHook')]
