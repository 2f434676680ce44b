# Phase 2 (all layers, augmentation) of maskrcnn_r101_imat.py.
_base_ = './maskrcnn_r50_imat_all.py'
model = dict(backbone=dict(depth=101))
imat_previous_phase = 'maskrcnn_r101_imat.py'
