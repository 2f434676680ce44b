"""A few mmcv ops on CPU tensors and the CUDA version mmcv's ops were compiled with, as JSON:
run under a CUDA build and a CPU build of mmcv to see that both compute the same on the CPU
(scripts/cuda_compile_check.sh compares them)."""

import json

import torch
from mmcv.ops import get_compiler_version, get_compiling_cuda_version, nms, roi_align

g = torch.Generator().manual_seed(0)
corner = torch.rand(200, 2, generator=g) * 100
boxes = torch.cat([corner, corner + torch.rand(200, 2, generator=g) * 50 + 1], 1)
scores = torch.rand(200, generator=g)
_, keep = nms(boxes, scores, 0.5)
feat = torch.rand(1, 8, 32, 32, generator=g)
rois = torch.cat([torch.zeros(20, 1), torch.rand(20, 2, generator=g) * 16,
                  torch.rand(20, 2, generator=g) * 16 + 16], 1)
pooled = roi_align(feat, rois, (7, 7), 1.0, 2, "avg", True)
print(json.dumps({"cuda": get_compiling_cuda_version(), "compiler": get_compiler_version(),
                  "nms_keep": keep.tolist(), "roi_align_sum": round(float(pooled.sum()), 4)}))
