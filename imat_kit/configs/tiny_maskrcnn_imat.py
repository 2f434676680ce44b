# A small Mask R-CNN for CPU: R18-FPN at 256 px, trained from scratch (no download), fewer
# proposals and RoIs (the tiny recipe of _base_/tiny_cpu.py). Used by the demo and the tests;
# learns the synthetic dataset in minutes.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py', './_base_/imat_instance.py', './_base_/tiny_cpu.py'
]

image_size = _base_.tiny_image_size
model = dict(
    backbone=_base_.tiny_resnet18, neck=_base_.tiny_fpn, rpn_head=_base_.tiny_rpn_head,
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=256,
                       num_classes={{_base_.num_classes}}),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=128,
                       num_classes={{_base_.num_classes}})),
    train_cfg=dict(rpn_proposal=_base_.tiny_rpn_proposal, rcnn=dict(sampler=dict(num=64))),
    test_cfg=_base_.tiny_rcnn_test_cfg)

train_pipeline = _base_.tiny_train_pipeline
test_pipeline = _base_.tiny_test_pipeline
train_dataloader = dict(_base_.tiny_train_loader, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(_base_.tiny_val_loader, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = _base_.tiny_max_iters
train_cfg = _base_.tiny_train_cfg
optim_wrapper = _base_.tiny_optim_wrapper
param_scheduler = _base_.tiny_param_scheduler
default_hooks = _base_.tiny_default_hooks
custom_hooks = [dict(type='ValLossHook')]
log_processor = _base_.tiny_log_processor
load_from = None
randomness = dict(seed=0)
