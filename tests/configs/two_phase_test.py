# The reference recipe's two phases at test size, on 2 CPU processes (gloo): phase 1 "heads"
# with the whole ResNet frozen, then two_phase_all_test.py with nothing frozen. `imat-kit train
# --launcher pytorch` adds the CPU DDP settings (gloo, no device_ids) on a machine without CUDA.
_base_ = './tiny_test.py'
model = dict(backbone=dict(frozen_stages=4, norm_eval=True))
imat_next_phase = 'two_phase_all_test.py'
max_iters = 4
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
custom_hooks = [dict(type='ParamDigestHook')]
