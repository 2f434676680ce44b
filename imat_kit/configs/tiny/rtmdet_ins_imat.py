# RTMDet-Ins made small for CPU: rtmdet_ins_s_imat.py with a quarter-width, one-block CSPNeXt
# and BN (not SyncBN), its recipe's pipeline at 256 px (CachedMosaic, jitter 0.5-2.0, crops,
# HSV, flips, CachedMixUp), EMA, and the tiny training recipe (../_base_/tiny_cpu.py). The
# recipe's stage-2 pipeline switch counts epochs, which an iteration-based run never ends:
# it is left out here.
_base_ = ['../rtmdet_ins_s_imat.py', '../_base_/tiny_cpu.py']
bn = dict(type='BN')
model = dict(
    backbone=dict(deepen_factor=0.167, widen_factor=0.25, norm_cfg=bn),
    neck=dict(in_channels=[64, 128, 256], out_channels=64, num_csp_blocks=1, norm_cfg=bn),
    bbox_head=dict(in_channels=64, feat_channels=64, norm_cfg=bn),
    test_cfg=dict(nms_pre=500, max_per_img=30))

size = _base_.tiny_image_size
pad = dict(img=(114, 114, 114))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='CachedMosaic', img_scale=size, pad_val=114.0),
    dict(type='RandomResize', scale=(2 * size[0], 2 * size[1]), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=size, recompute_bbox=True, allow_negative_crop=True),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=size, pad_val=pad),
    dict(type='CachedMixUp', img_scale=size, ratio_range=(1.0, 1.0), max_cached_images=20,
         pad_val=(114, 114, 114)),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=size, keep_ratio=True),
    dict(type='Pad', size=size, pad_val=pad),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(_base_.tiny_train_loader, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(_base_.tiny_val_loader, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
custom_hooks = [h for h in _base_.custom_hooks if h['type'] != 'PipelineSwitchHook']
train_cfg = _base_.tiny_train_cfg
optim_wrapper = _base_.tiny_optim_wrapper
param_scheduler = _base_.tiny_param_scheduler
default_hooks = _base_.tiny_default_hooks
log_processor = _base_.tiny_log_processor
load_from = None
randomness = dict(seed=0)
