# Mask R-CNN R50-FPN on iMaterialist, the reference recipe's phase 1: "heads" — COCO weights,
# the whole ResNet frozen, no augmentation, SGD lr 1e-3. Phase 2 (all layers, augmentation,
# lr 1e-4 then 1e-5) is maskrcnn_r50_imat_all.py, started from this run's last checkpoint;
# `imat-kit train` chains the two (see imat_next_phase). Two runs rather than one unfreezing
# mid-run: DDP registers only the parameters that require grad when it wraps the model, so a
# mid-run unfreeze would never all-reduce the backbone's gradients on N GPUs.
#   mim train mmdet configs/maskrcnn_r50_imat.py                 (fold 0)
#   IMAT_FOLD=3 mim train mmdet configs/maskrcnn_r50_imat.py     (fold 3, its own work dir)
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py', './_base_/imat_instance.py'
]
imat_next_phase = 'maskrcnn_r50_imat_all.py'

model = dict(
    # load_from provides the backbone: no torchvision download at init
    backbone=dict(frozen_stages=4, init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes={{_base_.num_classes}}),
                  mask_head=dict(num_classes={{_base_.num_classes}})))

# COCO-pretrained (box AP 40.9, mask AP 37.1); the 80-class heads (fc_cls, fc_reg,
# conv_logits) do not fit 46 classes and keep their fresh initialisation.
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/'
             'mask_rcnn_r50_fpn_mstrain-poly_3x_coco/'
             'mask_rcnn_r50_fpn_mstrain-poly_3x_coco_20210524_201154-21b550bb.pth')

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=4, val_interval=1)
# No paramwise_cfg: with one, mmengine leaves frozen parameters out of the optimizer.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='imat/competition', rule='greater'))
custom_hooks = [dict(type='ValLossHook')]
# The reference study's learning rates are for 2 images per step on one GPU; with
# `--auto-scale-lr` mmdet scales lr linearly to the real total batch (GPUs x batch_size).
auto_scale_lr = dict(enable=False, base_batch_size=2)
