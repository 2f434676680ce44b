# The tiny CPU Mask R-CNN with the attribute branch, 2019 label space (92 attributes): each
# instance also gets attribute probabilities (imat-kit predict writes them).
_base_ = ['./tiny_maskrcnn_imat.py', './_base_/attribute_heads.py']

model = dict(roi_head={{_base_.tiny_attribute_roi_head}})
train_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
val_dataloader = dict(
    dataset=dict(attributes=True, num_attributes={{_base_.num_attributes_2019}}))
test_dataloader = val_dataloader
custom_hooks = {{_base_.attribute_custom_hooks}}
