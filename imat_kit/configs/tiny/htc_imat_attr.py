# tiny/htc_imat.py with the kit's attribute branch (2019 label space, 92 attributes;
# the tiny branch of ../_base_/attribute_heads.py).
_base_ = ['./htc_imat.py', '../_base_/attribute_heads.py']
model = dict(roi_head=dict(_base_.tiny_attribute_roi_head, type='AttributeHTCRoIHead'))
train_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
val_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
test_dataloader = val_dataloader
custom_hooks = {{_base_.attribute_custom_hooks}}
