# cascade_maskrcnn_r50_imat_attr.py in the 2020 / Fashionpedia label space (294 attributes,
# Fashionpedia's attribute-bearing categories).
_base_ = ['./cascade_maskrcnn_r50_imat_attr.py']
model = dict(roi_head=dict(attribute_head=dict(
    num_attributes={{_base_.num_attributes_2020}},
    attribute_categories={{_base_.fashionpedia_attribute_categories}})))
train_dataloader = dict(dataset=dict(num_attributes={{_base_.num_attributes_2020}}))
val_dataloader = dict(dataset=dict(num_attributes={{_base_.num_attributes_2020}}))
test_dataloader = val_dataloader

# 2020 data: keep the checkpoint that scores best under the 2020 rule (TP / (TP + FP))
default_hooks = dict(checkpoint=dict(save_best='imat/competition2020'))
