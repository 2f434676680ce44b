# The 2019 winner's model (amirassov/kaggle-imaterialist, LB 0.336 after post-processing):
# HTC without the semantic branch, ResNeXt-101 64x4d FPN with deformable convolutions in
# c3-c5, multi-scale training (short side 600-1200, long side 1900), SGD lr 0.03 for 16 images
# per step (8 GPUs x 2), warm-up 500 iterations from lr/3, steps at epochs 10 and 18, 20 epochs,
# gradient clip 35; started from mmdet's COCO HTC X101-64x4d DCN (box AP 50.4, mask AP 43.8).
# On fewer GPUs x batch_size pass --auto-scale-lr (lr scales linearly from 16 images).
# The winner's test-time scales (1000,1600), (1200,1900), (1400,2200) + flip:
#   imat-kit predict ... --tta scales+flip --tta-scales 0.833,1.0,1.167
_base_ = './htc_r50_imat.py'
model = dict(backbone=dict(
    type='ResNeXt', depth=101, groups=64, base_width=4,
    dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
    stage_with_dcn=(False, True, True, True)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=[(1900, 600), (1900, 1200)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(1900, 1200), keep_ratio=True),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=0.03), clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end={{_base_.max_epochs}}, by_epoch=True,
         milestones=[10, 18], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/htc/'
             'htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_16x1_20e_coco/'
             'htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_16x1_20e_coco_20200312-946fd751.pth')
