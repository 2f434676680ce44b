# RTMDet-Ins-l on iMaterialist: mmdet's recipe as it is (CachedMosaic + CachedMixUp,
# large-scale jitter 0.1-2.0, 640x640 crops, AdamW lr 0.004 for 256 images per step, cosine
# decay over the second half, EMA, and the switch to the light stage-2 pipeline for the last
# 20 of 300 epochs), COCO weights (box AP 51.3, mask AP 43.7). Masks load from the RLE with the
# kit's IMatLoadAnnotations (the recipe's poly2mask=False would mark every RLE instance ignored;
# IMatLoadAnnotations keeps them as runs until the pipeline has resized them).
# lr is for 8 GPUs x 32 images: on fewer, pass --auto-scale-lr.
#   mim train mmdet configs/rtmdet_ins_l_imat.py
_base_ = ['mmdet::rtmdet/rtmdet-ins_l_8xb32-300e_coco.py', './_base_/imat_data.py']

model = dict(
    backbone=dict(init_cfg=None),  # load_from provides it: no ImageNet download
    bbox_head=dict(type='IMatRTMDetInsSepBNHead',  # + mask probabilities (predict --soft-size)
                   num_classes=_base_.imat_num_classes))


def _rle(pipeline):
    """IMatLoadAnnotations (without poly2mask=False); in training pipelines, then ShrinkToFit
    to 1280 px: the mosaic caches 40 loaded images and shrinks each to 640 px, the second
    stage resizes to at most 1280, so a larger image (the competition's reach 10717 x 6824)
    only fills the caches."""
    out = []
    for t in pipeline:
        if t['type'] == 'LoadAnnotations':
            out.append(dict({k: v for k, v in t.items() if k != 'poly2mask'},
                            type='IMatLoadAnnotations'))
            if any(x['type'] in ('CachedMosaic', 'RandomResize') for x in pipeline):
                out.append(dict(type='ShrinkToFit', scale=(1280, 1280)))
        else:
            out.append(t)
    return out


# The recipe's loaders and pipelines with the kit's data.
dataset_type = 'IMatDataset'
data_root = _base_.imat_data_root
train_pipeline = _rle(_base_.train_pipeline)
train_pipeline_stage2 = _rle(_base_.train_pipeline_stage2)
train_dataloader = dict(dataset=dict(_base_.imat_train_dataset, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(_base_.imat_val_dataset, pipeline=_rle(_base_.test_pipeline)))
test_dataloader = val_dataloader
val_evaluator = _base_.imat_evaluator
test_evaluator = val_evaluator
custom_hooks = [dict(h, switch_pipeline=train_pipeline_stage2)
                if h['type'] == 'PipelineSwitchHook' else h for h in _base_.custom_hooks]

# mmdet leaves schedule_1x's base of 16 here, though the lr is for 8 x 32 images
auto_scale_lr = dict(enable=False, base_batch_size=256)
load_from = ('https://download.openmmlab.com/mmdetection/v3.0/rtmdet/'
             'rtmdet-ins_l_8xb32-300e_coco/rtmdet-ins_l_8xb32-300e_coco_20221124_103237-78d1d652.pth')

# keep the checkpoint that scores best on the competition's own score (IMatCompetitionMetric)
default_hooks = dict(checkpoint=dict(save_best='imat/competition', rule='greater'))
