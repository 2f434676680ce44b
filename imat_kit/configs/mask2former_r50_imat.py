# Mask2Former R50 on iMaterialist, instances only (no stuff classes, no panoptic output):
# mmdet's recipe as it is (large-scale jitter 0.1-2.0 with 1024x1024 crops, AdamW lr 1e-4 with
# the backbone at 0.1x, 368,750 iterations at 16 images per step = 50 COCO epochs, 100 queries),
# COCO weights (box AP 45.7, mask AP 42.9). Masks are image-sized; the kit's
# IMatMaskFormerFusionHead also gives their probabilities (predict --soft-size).
# lr is for 8 GPUs x 2 images: on fewer, pass --auto-scale-lr.
#   mim train mmdet configs/mask2former_r50_imat.py
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py', './_base_/imat_data.py']
num_things_classes = _base_.imat_num_classes
num_stuff_classes = 0
num_classes = num_things_classes
model = dict(
    backbone=dict(init_cfg=None),  # load_from provides it: no ImageNet download
    panoptic_head=dict(
        num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(
        type='IMatMaskFormerFusionHead',
        num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes),
    test_cfg=dict(panoptic_on=False, instance_on=True))



def _runs(pipeline):
    """IMatLoadAnnotations (masks kept as runs until the pipeline resizes them), and images
    loaded as uint8: the recipe's float32 load is 0.9 GB for a 10717 x 6824 competition image
    per loader worker, and the data preprocessor converts to float anyway."""
    out = []
    for t in pipeline:
        if t['type'] == 'LoadAnnotations':
            t = dict(t, type='IMatLoadAnnotations')
        elif t['type'] == 'LoadImageFromFile':
            t = dict(t, to_float32=False)
        out.append(t)
    return out


# The recipe's loaders and pipelines with the kit's data.
dataset_type = 'IMatDataset'
data_root = _base_.imat_data_root
train_pipeline = _runs(_base_.train_pipeline)
train_dataloader = dict(dataset=dict(_base_.imat_train_dataset, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(_base_.imat_val_dataset, pipeline=_runs(_base_.test_pipeline)))
test_dataloader = val_dataloader
val_evaluator = _base_.imat_evaluator
test_evaluator = val_evaluator

# The 80-class classifier (and its class weights) keep their fresh init.
load_from = ('https://download.openmmlab.com/mmdetection/v3.0/mask2former/'
             'mask2former_r50_8xb2-lsj-50e_coco/'
             'mask2former_r50_8xb2-lsj-50e_coco_20220506_191028-41b088b6.pth')

# keep the checkpoint that scores best on the competition's own score (IMatCompetitionMetric)
default_hooks = dict(checkpoint=dict(save_best='imat/competition', rule='greater'))
