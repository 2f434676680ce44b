# The attribute branches (imat_kit AttributeRoIHead) of the attribute configs, in the 2019 label
# space (92 attributes; the garments 0-12 carry them). A config takes one with
#   _base_ = ['./maskrcnn_r50_imat.py', './_base_/attribute_heads.py']
#   model = dict(roi_head={{_base_.r50_attribute_roi_head}})
# and the 2020 / Fashionpedia configs change num_attributes to 294 and attribute_categories to
# fashionpedia_attribute_categories.
num_attributes_2019 = 92
num_attributes_2020 = 294
attribute_categories_2019 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
# Fashionpedia's evaluation (FPEval catsWithAttributes): the garments and hood, collar, lapel,
# epaulette, sleeve
fashionpedia_attribute_categories = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 28, 29, 31, 32,
                                     33]
# Both heads add a learnt bias per (category, attribute) (num_classes: the 46 categories of
# both years), which AttributePriorHook sets to the training data's per-category attribute
# frequencies before the first iteration: the branch starts at the per-category prior.
attribute_custom_hooks = [dict(type='ValLossHook'), dict(type='AttributePriorHook')]

# Both read the mask branch's 14x14 RoI features (pooled anyway for the mask loss; the 2020
# winning solution's choice), start with a stride-2 conv, and sum the loss over the attributes,
# averaged over the RoIs of attribute-bearing categories.
# R50: four convs, focal loss (alpha 0.25, gamma 2) as the 2020 winning solution.
r50_attribute_roi_head = dict(
    type='AttributeRoIHead',
    attribute_features='mask',
    attribute_head=dict(
        type='AttributeHead', num_attributes=num_attributes_2019, in_channels=256,
        roi_feat_size=14, num_convs=4, first_stride=2, conv_out_channels=256,
        fc_out_channels=1024, attribute_categories=attribute_categories_2019, num_classes=46,
        loss_attr=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                       loss_weight=1.0)))

# Tiny (CPU): its own 14x14 RoI features from the finest FPN level only (stride 4: a model
# trained from scratch for minutes keeps textile patterns there, not on the coarser levels
# that the mask branch reads for large garments), two small convs, sigmoid cross-entropy as
# Fashionpedia's Attribute-Mask R-CNN. Loss weight 0.2: the tiny config clips the gradient norm
# at 10, and at weight 2 this branch's gradients (norm ~100) made the clip shrink every step
# of the detector too (segm AP 4.3 against 9.6 without the branch after 400 iterations; 9.4 at
# 0.2). Adam's steps do not depend on a loss's scale, so the branch itself learns as before.
tiny_attribute_roi_head = dict(
    type='AttributeRoIHead',
    attribute_features='own',
    attribute_roi_extractor=dict(
        type='SingleRoIExtractor',
        roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
        out_channels=128, featmap_strides=[4]),
    attribute_head=dict(
        type='AttributeHead', num_attributes=num_attributes_2019, in_channels=128,
        roi_feat_size=14, num_convs=2, first_stride=2, conv_out_channels=128,
        fc_out_channels=256, attribute_categories=attribute_categories_2019, num_classes=46,
        loss_attr=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.2)))
