# Mask2Former made small for CPU: mask2former_r50_imat.py with R18, 64-channel pixel decoder
# (one deformable-attention layer) and transformer decoder (3 layers, 4 heads), 30 queries,
# 2,048 sampled points per mask loss, 256 px (fixed-size batch padding to 256), and the tiny
# training recipe (../_base_/tiny_cpu.py). Off CUDA, mmcv's multi-scale deformable attention
# runs its PyTorch version.
_base_ = ['../mask2former_r50_imat.py', '../_base_/tiny_cpu.py']
size = _base_.tiny_image_size
c = 64
attn = dict(embed_dims=c, num_heads=4)
ffn = dict(embed_dims=c, feedforward_channels=2 * c)
model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(_base_.model.data_preprocessor.batch_augments[0], size=size)]),
    backbone=dict(_base_.tiny_resnet18, norm_cfg=dict(type='BN', requires_grad=True)),
    panoptic_head=dict(
        in_channels=[64, 128, 256, 512], feat_channels=c, out_channels=c, num_queries=30,
        pixel_decoder=dict(
            encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)),
            positional_encoding=dict(num_feats=c // 2)),
        positional_encoding=dict(num_feats=c // 2),
        transformer_decoder=dict(num_layers=3, layer_cfg=dict(
            self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn))),
    train_cfg=dict(num_points=2048),
    test_cfg=dict(max_per_image=30))
train_dataloader = dict(_base_.tiny_train_loader,
                        dataset=dict(pipeline=_base_.tiny_train_pipeline))
val_dataloader = dict(_base_.tiny_val_loader, dataset=dict(pipeline=_base_.tiny_test_pipeline))
test_dataloader = val_dataloader
train_cfg = _base_.tiny_train_cfg
optim_wrapper = _base_.tiny_optim_wrapper
param_scheduler = _base_.tiny_param_scheduler
default_hooks = _base_.tiny_default_hooks
log_processor = _base_.tiny_log_processor
load_from = None
randomness = dict(seed=0)
