# Mask R-CNN R101-FPN, phase 1 (heads) of the reference recipe; phase 2 is
# maskrcnn_r101_imat_all.py. COCO weights: box AP 42.7, mask AP 38.5.
_base_ = './maskrcnn_r50_imat.py'
imat_next_phase = 'maskrcnn_r101_imat_all.py'
model = dict(backbone=dict(depth=101))
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/'
             'mask_rcnn_r101_fpn_mstrain-poly_3x_coco/'
             'mask_rcnn_r101_fpn_mstrain-poly_3x_coco_20210524_200244-5675c317.pth')
