# Phase 2 of the reference recipe: all layers, the seed augmentation on 80% of samples, SGD
# lr 1e-4 then 1e-5. Starts from phase 1's last checkpoint (`imat-kit train` passes it; by hand:
#   IMAT_FOLD=k mim train mmdet configs/maskrcnn_r50_imat_all.py
# reads work_dirs/maskrcnn_r50_imat/fold{k}/epoch_4.pth, or give --cfg-options load_from=...).
_base_ = './maskrcnn_r50_imat.py'
fold = '{{$IMAT_FOLD:0}}'
work_dir = 'work_dirs/maskrcnn_r50_imat_all/fold' + fold
imat_next_phase = None

all_epochs = 8
model = dict(backbone=dict(frozen_stages=-1))
load_from = 'work_dirs/maskrcnn_r50_imat/fold' + fold + '/epoch_4.pth'

train_dataloader = dict(dataset=dict(pipeline={{_base_.train_pipeline_aug}}))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=all_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=all_epochs, milestones=[6],
         gamma=0.1),
]
