# YOLACT made small for CPU: yolact_r50_imat.py with R18-FPN (128 channels), a 256x256 input
# (anchors and their strides scaled from the recipe's 550), flips only (the recipe's Expand up
# to 4x would shrink the synthetic garments to a few pixels at 256 px), and the tiny training
# recipe (../_base_/tiny_cpu.py).
_base_ = ['../yolact_r50_imat.py', '../_base_/tiny_cpu.py']
input_size = _base_.tiny_image_size[0]
feat = [input_size // s for s in (8, 16, 32, 64, 128)]
model = dict(
    backbone=_base_.tiny_resnet18,
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    bbox_head=dict(
        in_channels=128, feat_channels=128,
        anchor_generator=dict(base_sizes=[4, 8, 16, 32, 64],
                              strides=[input_size / x for x in feat],
                              centers=[(input_size * 0.5 / x, input_size * 0.5 / x)
                                       for x in feat])),
    mask_head=dict(in_channels=128),
    test_cfg=dict(max_per_img=30))
size = (input_size, input_size)
# the tiny recipe's pipeline, stretched to the square input YOLACT's anchors assume
train_pipeline = [dict(t, keep_ratio=False) if t['type'] == 'Resize' else t
                  for t in _base_.tiny_train_pipeline]
test_pipeline = [dict(t, scale=size) if t['type'] == 'Resize' else t
                 for t in _base_.test_pipeline]
train_dataloader = dict(_base_.tiny_train_loader, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(_base_.tiny_val_loader, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = _base_.tiny_train_cfg
optim_wrapper = _base_.tiny_optim_wrapper
param_scheduler = _base_.tiny_param_scheduler
default_hooks = _base_.tiny_default_hooks
log_processor = _base_.tiny_log_processor
load_from = None
randomness = dict(seed=0)
