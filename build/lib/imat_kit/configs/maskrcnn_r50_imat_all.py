# Phase 2 of the reference recipe: all layers, the seed augmentation on 80% of samples, SGD
# lr 1e-4 then 1e-5. Starts from the last checkpoint of phase 1 on the same fold
# (imat_previous_phase): `imat-kit train` passes it; by hand,
#   IMAT_FOLD=k mim train mmdet configs/maskrcnn_r50_imat_all.py
# reads work_dirs/maskrcnn_r50_imat/fold{k}/last_checkpoint (or give --cfg-options load_from=...).
_base_ = './maskrcnn_r50_imat.py'
imat_next_phase = None
imat_previous_phase = 'maskrcnn_r50_imat.py'

all_epochs = 8
model = dict(backbone=dict(frozen_stages=-1))
load_from = 'imat:previous-phase'  # IMatRunner: phase 1's last checkpoint on this fold

train_dataloader = dict(dataset=dict(pipeline={{_base_.train_pipeline_aug}}))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=all_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=all_epochs, milestones=[6],
         gamma=0.1),
]
