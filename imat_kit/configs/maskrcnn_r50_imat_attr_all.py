# maskrcnn_r50_imat_all.py (phase 2, all layers + augmentation) with the attribute branch, 2019
# label space; starts from maskrcnn_r50_imat_attr.py's last checkpoint on the same fold.
_base_ = ['./maskrcnn_r50_imat_all.py', './_base_/attribute_heads.py']
imat_previous_phase = 'maskrcnn_r50_imat_attr.py'

model = dict(roi_head={{_base_.r50_attribute_roi_head}})
train_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
val_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
test_dataloader = val_dataloader
custom_hooks = {{_base_.attribute_custom_hooks}}
