# BrightBlobDetector (tests/helpers/mmdet.py) on the iMaterialist test split: checks predict's
# flip TTA and batching without a trained model.
_base_ = '../../configs/_base_/imat_instance.py'
custom_imports = dict(imports=['imat_kit.mmdet_ext', 'tests.helpers.mmdet'],
                      allow_failed_imports=False)
default_scope = 'mmdet'
model = dict(
    type='BrightBlobDetector',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1],
                           bgr_to_rgb=False, pad_size_divisor=32))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                    'flip_direction')),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
