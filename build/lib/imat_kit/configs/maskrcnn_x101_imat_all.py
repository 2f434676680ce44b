# Phase 2 (all layers, augmentation) of maskrcnn_x101_imat.py.
_base_ = './maskrcnn_r50_imat_all.py'
model = dict(backbone=dict(type='ResNeXt', depth=101, groups=64, base_width=4))
imat_previous_phase = 'maskrcnn_x101_imat.py'
