# The tiny CPU Mask R-CNN made smaller still for tests: 128 px, a few iterations, a checkpoint
# every 2 iterations, validation (with val loss) at the end.
_base_ = '../../configs/tiny_maskrcnn_imat.py'
custom_imports = dict(imports=['imat_kit.mmdet_ext', 'tests.helpers.mmdet'],
                      allow_failed_imports=False)
image_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
max_iters = 6
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[4],
         gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2, max_keep_ckpts=2,
                    save_best='imat/competition', rule='greater'),
    visualization=dict(type='DetVisualizationHook', draw=False))
custom_hooks = [dict(type='ValLossHook'), dict(type='ParamDigestHook')]
log_processor = dict(window_size=1)
