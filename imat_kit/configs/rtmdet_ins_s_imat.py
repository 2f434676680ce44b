# RTMDet-Ins-s on iMaterialist: rtmdet_ins_l_imat.py (mmdet's recipe with the kit's data) with
# what mmdet's rtmdet-ins_s config changes from its l: a 0.33-deep, 0.5-wide CSPNeXt, a
# 128-channel neck and head, jitter 0.5-2.0 (both pipeline stages); its COCO weights (box AP
# 44.5, mask AP 38.7). lr is for 8 GPUs x 32 images: on fewer, pass --auto-scale-lr.
#   mim train mmdet configs/rtmdet_ins_s_imat.py
_base_ = './rtmdet_ins_l_imat.py'
model = dict(
    backbone=dict(deepen_factor=0.33, widen_factor=0.5),
    neck=dict(in_channels=[128, 256, 512], out_channels=128, num_csp_blocks=1),
    bbox_head=dict(in_channels=128, feat_channels=128))


def _jitter(pipeline):
    return [dict(t, ratio_range=(0.5, 2.0)) if t['type'] == 'RandomResize' else t
            for t in pipeline]


train_pipeline = _jitter(_base_.train_pipeline)
train_pipeline_stage2 = _jitter(_base_.train_pipeline_stage2)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
custom_hooks = [dict(h, switch_pipeline=train_pipeline_stage2)
                if h['type'] == 'PipelineSwitchHook' else h for h in _base_.custom_hooks]
load_from = ('https://download.openmmlab.com/mmdetection/v3.0/rtmdet/'
             'rtmdet-ins_s_8xb32-300e_coco/rtmdet-ins_s_8xb32-300e_coco_20221121_212604-fdc5d7ec.pth')
