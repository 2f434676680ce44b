# The CPU training recipe of the tiny variants (tiny/*.py): 256 px, from scratch, batch 2, no
# workers, AdamW lr 3e-4 with a 100-iteration warm-up and a x0.1 drop at 85% of the run, a
# gradient clip at 10, and the small R18-FPN pieces the R-CNN families share (nothing frozen,
# BN trained, anchors for 12-120 px objects, fewer proposals and RoIs). The names carry a
# `tiny_` prefix so this file can sit beside any family's config (their keys would clash);
# a tiny config assigns them, e.g.  train_cfg = _base_.tiny_train_cfg
# tiny_maskrcnn_imat.py (the demo's model) uses the same values.
tiny_image_size = (256, 256)
tiny_max_iters = 600

tiny_resnet18 = dict(type='ResNet', depth=18, frozen_stages=-1, norm_eval=False,
                     init_cfg=None)
tiny_fpn = dict(in_channels=[64, 128, 256, 512], out_channels=128)
tiny_rpn_head = dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[4]))
tiny_rpn_proposal = dict(nms_pre=500, max_per_img=200)
tiny_rcnn_test_cfg = dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=30))

tiny_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=tiny_image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
tiny_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=tiny_image_size, keep_ratio=True),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
tiny_train_loader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                         pin_memory=False)
tiny_val_loader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       pin_memory=False)

tiny_train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=tiny_max_iters,
                      val_interval=tiny_max_iters)
tiny_optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))
tiny_param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=tiny_max_iters,
         milestones=[int(tiny_max_iters * 0.85)], gamma=0.1),
]
tiny_default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=tiny_max_iters,
                    max_keep_ckpts=2, save_best='imat/competition', rule='greater'))
tiny_log_processor = dict(by_epoch=False, window_size=20)
