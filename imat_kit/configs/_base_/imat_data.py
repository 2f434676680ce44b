# iMaterialist Fashion as prepared by `imat-kit prepare`: the 46 classes, paths, fold, the
# dataset, its pipelines and the evaluators (COCO bbox+segm, the competition score). The only
# place for them.
#
# The fold is a config value, so one override trains fold k:
#   mim train mmdet configs/maskrcnn_r50_imat.py --cfg-options imat_fold=3
# (IMatRunner moves the datasets and evaluators to it); IMAT_FOLD=3 in the environment does the
# same and is the default. The data root comes from the environment:
#   IMAT_DATA_ROOT=/data/imat2019/ ...      (default: data/imat2019/, with the trailing /)
# IMatRunner (imat_kit) puts every run in a work dir ending in fold<k> (work_dirs/<config>/
# fold<k> by default), and starts a later phase (imat_previous_phase) from the last checkpoint
# of the earlier phase's run on the same fold.
#
# Names that an mmdet recipe also defines carry an `imat_` prefix, so this file can sit beside
# a whole recipe (HTC, RTMDet-Ins, Mask2Former: their files bring COCO's loaders, and mmengine
# refuses a key that two bases define). Two ways to use it:
# * beside model-only bases: through ./imat_instance.py (Mask R-CNN, Cascade, YOLACT), which
#   sets the loaders and the evaluator from the names below;
# * beside a whole recipe: `_base_ = ['mmdet::<recipe>.py', './_base_/imat_data.py']`, then the
#   recipe's loaders keep their batch sizes and samplers and get our dataset:
#     train_dataloader = dict(dataset=dict(_base_.imat_train_dataset, pipeline=train_pipeline))
#   (ann_file='' and data_prefix=None below replace the recipe's COCO paths).
custom_imports = dict(imports=['imat_kit.mmdet_ext'], allow_failed_imports=False)
runner_type = 'IMatRunner'
imat_tensorboard = False  # True (or `imat-kit train --tensorboard`): TensorBoard event files too
imat_num_classes = 46  # the competition's categories, both years

imat_data_root = '{{$IMAT_DATA_ROOT:data/imat2019/}}'
fold = '{{$IMAT_FOLD:0}}'

# RLE masks load as BitmapMasks (poly2mask=True, the default); poly2mask=False would silently
# mark every instance ignored (IMatRunner refuses it before training).
imat_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1024, 800), keep_ratio=True),
    dict(type='PackDetInputs'),
]
imat_test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(1024, 800), keep_ratio=True),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# The datasets without their pipelines (a config adds its own).
imat_train_dataset = dict(
    type='IMatDataset', data_root=imat_data_root, fold=fold, split='train', ann_file='',
    data_prefix=None, filter_cfg=dict(filter_empty_gt=True, min_size=8), backend_args=None)
imat_val_dataset = dict(
    type='IMatDataset', data_root=imat_data_root, fold=fold, split='val', test_mode=True,
    ann_file='', data_prefix=None, backend_args=None)
# COCO AP (bbox, segm; logged as coco/...) and the competition's own score of the fold
# (imat/competition: the 2019 formula; on 2020 data also imat/competition2020), which the
# configs' CheckpointHook keeps the best checkpoint by (save_best).
imat_evaluator = [
    dict(type='IMatCocoMetric',
         ann_file=imat_data_root + 'annotations/fold' + str(fold) + '_val.json',
         metric=['bbox', 'segm'], format_only=False, backend_args=None),
    dict(type='IMatCompetitionMetric',
         ann_file=imat_data_root + 'annotations/fold' + str(fold) + '_val.json'),
]

# The test split (images of sample_submission.csv, no annotations) for predictions:
test_split_dataset = dict(
    type='IMatDataset', data_root=imat_data_root, split='test', test_mode=True,
    pipeline=[p for p in imat_test_pipeline if p['type'] != 'IMatLoadAnnotations'],
    backend_args=None)

# The reference study's augmentation, applied to 80% of samples; every step moves image, boxes
# and masks together (BitmapMasks). Rotate/Shear/Translate move box corners, not boxes, so
# RecomputeBBoxFromMasks (imat_kit) re-tightens boxes and drops instances left without pixels.
# "scale 0.5-1.5" is the multi-scale RandomResize that replaces the fixed Resize. ShrinkToFit
# first brings an image larger than the largest size that RandomResize can ask for
# (1024x800 x 1.5) down to it, so the augmentation (and the masks it must decode to rotate)
# runs at most at that size, not at a competition image's 10717x6824.
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
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='IMatLoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='ShrinkToFit', scale=(1536, 1200)),
    seed_augmentation,
    dict(type='RandomResize', scale=(1024, 800), ratio_range=(0.5, 1.5), keep_ratio=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), by_mask=True),
    dict(type='PackDetInputs'),
]
