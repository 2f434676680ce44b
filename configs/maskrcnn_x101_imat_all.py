# Phase 2 (all layers, augmentation) of maskrcnn_x101_imat.py.
_base_ = './maskrcnn_r50_imat_all.py'
fold = '{{$IMAT_FOLD:0}}'
work_dir = 'work_dirs/maskrcnn_x101_imat_all/fold' + fold
model = dict(backbone=dict(type='ResNeXt', depth=101, groups=64, base_width=4))
load_from = 'work_dirs/maskrcnn_x101_imat/fold' + fold + '/epoch_4.pth'
