# Phase 2 (all layers, augmentation) of maskrcnn_r101_imat.py.
_base_ = './maskrcnn_r50_imat_all.py'
fold = '{{$IMAT_FOLD:0}}'
work_dir = 'work_dirs/maskrcnn_r101_imat_all/fold' + fold
model = dict(backbone=dict(depth=101))
load_from = 'work_dirs/maskrcnn_r101_imat/fold' + fold + '/epoch_4.pth'
