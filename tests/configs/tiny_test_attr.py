# tiny_test.py with the attribute branch (2019 label space, 92 attributes): the demo's test.
_base_ = ['./tiny_test.py', '../../configs/_base_/attribute_heads.py']

model = dict(roi_head={{_base_.tiny_attribute_roi_head}})
train_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
val_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
test_dataloader = val_dataloader
custom_hooks = [dict(type='ValLossHook'), dict(type='ParamDigestHook'),
                dict(type='AttributePriorHook')]
