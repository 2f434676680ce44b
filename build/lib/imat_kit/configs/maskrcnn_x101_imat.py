# Mask R-CNN X101-64x4d-FPN, phase 1 (heads); phase 2 is maskrcnn_x101_imat_all.py. COCO
# weights: box AP 44.5, mask AP 39.7 (the 2019 winner used an X101-64x4d backbone).
_base_ = './maskrcnn_r50_imat.py'
imat_next_phase = 'maskrcnn_x101_imat_all.py'
model = dict(backbone=dict(type='ResNeXt', depth=101, groups=64, base_width=4))
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/'
             'mask_rcnn_x101_64x4d_fpn_mstrain-poly_3x_coco/'
             'mask_rcnn_x101_64x4d_fpn_mstrain-poly_3x_coco_20210526_120447-c376f129.pth')
