# maskrcnn_r50_imat_attr_all.py (phase 2) in the 2020 / Fashionpedia label space; starts from
# maskrcnn_r50_imat_attr2020.py's last checkpoint on the same fold.
_base_ = ['./maskrcnn_r50_imat_attr_all.py']
imat_previous_phase = 'maskrcnn_r50_imat_attr2020.py'

model = dict(roi_head=dict(attribute_head=dict(
    num_attributes={{_base_.num_attributes_2020}},
    attribute_categories={{_base_.fashionpedia_attribute_categories}})))
train_dataloader = dict(dataset=dict(num_attributes={{_base_.num_attributes_2020}}))
val_dataloader = dict(dataset=dict(num_attributes={{_base_.num_attributes_2020}}))
test_dataloader = val_dataloader

# 2020 data: keep the checkpoint that scores best under the 2020 rule (TP / (TP + FP))
default_hooks = dict(checkpoint=dict(save_best='imat/competition2020'))
