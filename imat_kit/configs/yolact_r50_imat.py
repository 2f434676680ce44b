# YOLACT R50 on iMaterialist (46 classes), mmdet's 55-epoch recipe: SGD lr 1e-3, batch 8,
# 550x550 input, COCO-pretrained weights (mask AP 29.0).
_base_ = [
    './_base_/models/yolact_r50.py', 'mmdet::_base_/default_runtime.py',
    './_base_/imat_instance.py'
]
input_size = 550
model = dict(bbox_head=dict(num_classes={{_base_.num_classes}}),
             mask_head=dict(num_classes={{_base_.num_classes}}))
mean = [123.68, 116.78, 103.94]  # = the model's data_preprocessor mean (RGB)
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/yolact/yolact_r50_1x8_coco/'
             'yolact_r50_1x8_coco_20200908-f38d58df.pth')

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    # the recipe's Expand (canvas up to 4x) and MinIoURandomCrop (down to 0.3 of it) never
    # need more than 550 / 0.3 = 1833 px of the original: a larger image (the competition's
    # reach 10717 x 6824, whose 4x canvas alone is 3.5 GB) is shrunk to 2048 px first
    dict(type='ShrinkToFit', scale=(2048, 2048)),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(4.0, 4.0)),
    dict(type='Expand', mean=mean, to_rgb=True,
         ratio_range=(1, 4)),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=18),
    dict(type='RecomputeBBoxFromMasks'),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=8, num_workers=4, batch_sampler=None,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 55
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[20, 42, 49, 52], gamma=0.1),
]
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, weight_decay=5e-4))
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='imat/competition', rule='greater'))
# No ValLossHook: YOLACT's loss needs its semantic-segmentation branch, which runs in
# training mode only (in eval mode the loss fails on the missing segm_preds).
custom_hooks = [dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW')]
auto_scale_lr = dict(base_batch_size=8)
