# Cascade Mask R-CNN X101-64x4d-FPN: cascade_maskrcnn_r50_imat.py with mmdet's ResNeXt-101
# 64x4d backbone and its COCO weights (box AP 45.6, mask AP 39.5; 20 epochs).
_base_ = './cascade_maskrcnn_r50_imat.py'
model = dict(backbone=dict(type='ResNeXt', depth=101, groups=64, base_width=4))
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/'
             'cascade_mask_rcnn_x101_64x4d_fpn_20e_coco/'
             'cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a.pth')
