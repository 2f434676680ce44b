# maskrcnn_r50_imat.py (phase 1, heads) with the attribute branch, 2019 label space (92
# attributes). Phase 2 is maskrcnn_r50_imat_attr_all.py; `imat-kit train` chains them.
_base_ = ['./maskrcnn_r50_imat.py', './_base_/attribute_heads.py']
imat_next_phase = 'maskrcnn_r50_imat_attr_all.py'

model = dict(roi_head={{_base_.r50_attribute_roi_head}})
train_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
val_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
test_dataloader = val_dataloader
custom_hooks = {{_base_.attribute_custom_hooks}}
