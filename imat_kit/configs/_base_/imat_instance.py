# The iMaterialist data (./imat_data.py, the only place for it) as a config's dataloaders and
# evaluator: the base to put beside model-only bases (mmdet::_base_/models/...), e.g.
#   _base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/schedules/
#             schedule_1x.py', 'mmdet::_base_/default_runtime.py', './_base_/imat_instance.py']
# A config built on a whole mmdet recipe takes ./imat_data.py instead (see there).
_base_ = './imat_data.py'
num_classes = {{_base_.imat_num_classes}}
dataset_type = 'IMatDataset'
data_root = {{_base_.imat_data_root}}
backend_args = None
train_pipeline = {{_base_.imat_train_pipeline}}
test_pipeline = {{_base_.imat_test_pipeline}}

# Loaders for a GPU box: decoding and augmenting full-size JPEGs keeps 4 workers per GPU busy;
# pinned memory speeds the copy to the GPU. CPU configs (tiny) set 0 workers, no pinning.
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(_base_.imat_train_dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_base_.imat_val_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = {{_base_.imat_evaluator}}
test_evaluator = val_evaluator
