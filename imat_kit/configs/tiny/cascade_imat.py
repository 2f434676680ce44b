# Cascade Mask R-CNN made small for CPU (../_base_/tiny_cpu.py: R18-FPN at 256 px, from
# scratch): cascade_maskrcnn_r50_imat.py's model and data with the tiny training recipe.
_base_ = ['../cascade_maskrcnn_r50_imat.py', '../_base_/tiny_cpu.py']
model = dict(
    backbone=_base_.tiny_resnet18, neck=_base_.tiny_fpn, rpn_head=_base_.tiny_rpn_head,
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=[dict(h, in_channels=128, fc_out_channels=256)
                   for h in _base_.model.roi_head.bbox_head],
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=128)),
    train_cfg=dict(rpn_proposal=_base_.tiny_rpn_proposal,
                   rcnn=[dict(s, sampler=dict(s.sampler, num=64))
                         for s in _base_.model.train_cfg.rcnn]),
    test_cfg=_base_.tiny_rcnn_test_cfg)

train_dataloader = dict(_base_.tiny_train_loader,
                        dataset=dict(pipeline=_base_.tiny_train_pipeline))
val_dataloader = dict(_base_.tiny_val_loader, dataset=dict(pipeline=_base_.tiny_test_pipeline))
test_dataloader = val_dataloader
train_cfg = _base_.tiny_train_cfg
optim_wrapper = _base_.tiny_optim_wrapper
param_scheduler = _base_.tiny_param_scheduler
default_hooks = _base_.tiny_default_hooks
log_processor = _base_.tiny_log_processor
load_from = None
randomness = dict(seed=0)
