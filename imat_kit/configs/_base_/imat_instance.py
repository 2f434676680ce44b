# iMaterialist Fashion 2019 as prepared by `imat-kit prepare`: paths, the 46 classes,
# dataloaders and the COCO bbox+segm evaluator. The only place for them.
#
# Data root and fold come from the environment, so one override trains fold k:
#   IMAT_FOLD=3 mim train mmdet configs/maskrcnn_r50_imat.py
#   IMAT_DATA_ROOT=/data/imat2019/ ...      (default: data/imat2019/, with the trailing /)
# IMatRunner (imat_kit) puts every run in a work dir ending in fold<k> (work_dirs/<config>/
# fold<k> by default), and starts a later phase (imat_previous_phase) from the last checkpoint
# of the earlier phase's run on the same fold.
custom_imports = dict(imports=['imat_kit.mmdet_ext'], allow_failed_imports=False)
runner_type = 'IMatRunner'
imat_tensorboard = False  # True (or `imat-kit train --tensorboard`): TensorBoard event files too
num_classes = 46  # the competition's categories, both years

dataset_type = 'IMatDataset'
data_root = '{{$IMAT_DATA_ROOT:data/imat2019/}}'
fold = '{{$IMAT_FOLD:0}}'
backend_args = None

# RLE masks load as BitmapMasks (poly2mask=True, the default); poly2mask=False would silently
# mark every instance ignored.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1024, 800), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1024, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Loaders for a GPU box: decoding and augmenting full-size JPEGs keeps 4 workers per GPU busy;
# pinned memory speeds the copy to the GPU. CPU configs (tiny) set 0 workers, no pinning.
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type, data_root=data_root, fold=fold, split='train',
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline, backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, fold=fold, split='val', test_mode=True,
        pipeline=test_pipeline, backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='IMatCocoMetric',
    ann_file=data_root + 'annotations/fold' + str(fold) + '_val.json',
    metric=['bbox', 'segm'],
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

# The test split (images of sample_submission.csv, no annotations) for predictions:
test_split_dataset = dict(
    type=dataset_type, data_root=data_root, split='test', test_mode=True,
    pipeline=[p for p in test_pipeline if p['type'] != 'LoadAnnotations'],
    backend_args=backend_args)

# The reference study's augmentation, applied to 80% of samples; every step moves image, boxes
# and masks together (BitmapMasks). Rotate/Shear/Translate move box corners, not boxes, so
# RecomputeBBoxFromMasks (imat_kit) re-tightens boxes and drops instances left without pixels.
# "scale 0.5-1.5" is the multi-scale RandomResize that replaces the fixed Resize.
seed_augmentation = dict(type='RandomApply', prob=0.8, transforms=[
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='RandomCrop', crop_type='relative_range', crop_size=(0.9, 0.9),
         allow_negative_crop=True, recompute_bbox=True),
    dict(type='Albu', keymap=dict(img='image'), transforms=[
        dict(type='GaussianBlur', blur_limit=0, sigma_limit=(0.0, 0.5), p=0.5),
        dict(type='GaussNoise', std_range=(0.0, 0.05), p=0.5)]),
    dict(type='Contrast', prob=0.5, min_mag=0.75, max_mag=1.5),
    dict(type='Brightness', prob=0.5, min_mag=0.8, max_mag=1.2),
    dict(type='Rotate', prob=0.5, min_mag=0.0, max_mag=45.0),
    dict(type='ShearX', prob=0.5, min_mag=0.0, max_mag=8.0),
    dict(type='ShearY', prob=0.5, min_mag=0.0, max_mag=8.0),
    dict(type='TranslateX', prob=0.5, min_mag=0.0, max_mag=0.2),
    dict(type='TranslateY', prob=0.5, min_mag=0.0, max_mag=0.2),
    dict(type='RecomputeBBoxFromMasks'),
])
train_pipeline_aug = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    seed_augmentation,
    dict(type='RandomResize', scale=(1024, 800), ratio_range=(0.5, 1.5), keep_ratio=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), by_mask=True),
    dict(type='PackDetInputs'),
]
