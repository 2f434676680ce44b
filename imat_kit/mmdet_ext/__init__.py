"""Everything imat-kit registers into MMDetection; configs reach it with
``custom_imports = dict(imports=['imat_kit.mmdet_ext'], allow_failed_imports=False)``.

Importing it also:

* lets checkpoints written by mmengine load under torch >= 2.6 (``weights_only=True`` by
  default): the few non-tensor globals such a checkpoint holds are allow-listed, so ``--resume``,
  ``mim test --checkpoint`` and ``load_from`` work with no environment variable;
* makes an ``http(s)://`` ``load_from`` fail fast, with a message saying what to do, when the
  checkpoint is neither cached nor reachable (it would otherwise wait on the network);
* registers the attribute modules: ``AttributeRoIHead``/``AttributeCascadeRoIHead``/
  ``AttributeHTCRoIHead`` with ``AttributeHead`` (a multi-label branch that predicts each
  instance's attributes on Mask R-CNN, Cascade Mask R-CNN and HTC) and the transforms that
  carry attributes through the pipeline (``LoadInstanceAttributes``, ``KeepInstanceFieldsAligned``,
  ``PackIMatInputs``; ``IMatDataset(attributes=True)`` inserts them);
* registers ``IMatLoadAnnotations``, which the kit's pipelines load annotations with: its masks
  stay run-length encoded until resizes, flips and crops have brought them to the network's size
  (a 10717 × 6824 image's masks are never decoded at that size);
* registers ``IMatRTMDetInsSepBNHead`` and ``IMatMaskFormerFusionHead`` (RTMDet-Ins's and
  Mask2Former's heads, giving mask probabilities for ``predict --soft-size``);
* registers ``IMatRunner`` (``runner_type`` of our configs): work dirs end in ``fold<k>``, and a
  later phase starts from the earlier phase's last checkpoint on the same fold, and what a
  model family cannot do on iMaterialist is refused before training;
* on a machine without CUDA only, lets mmengine's distributed launcher run on CPU processes
  (gloo backend), which it otherwise cannot (it calls ``torch.cuda.set_device``).
"""

from __future__ import annotations

from imat_kit.mmdet_ext import attributes as _attributes  # noqa: F401  (attribute transforms, packing)
from imat_kit.mmdet_ext import checkpoint as _checkpoint
from imat_kit.mmdet_ext import cpu_dist as _cpu_dist
from imat_kit.mmdet_ext import hooks as _hooks  # noqa: F401  (registers ValLossHook)
from imat_kit.mmdet_ext import metrics as _metrics  # noqa: F401  (registers IMatCocoMetric)
from imat_kit.mmdet_ext import roi_heads as _roi_heads  # noqa: F401  (AttributeRoIHead, AttributeHead)
from imat_kit.mmdet_ext import run_masks as _run_masks  # noqa: F401  (IMatLoadAnnotations)
from imat_kit.mmdet_ext import runner as _runner  # noqa: F401  (registers IMatRunner)
from imat_kit.mmdet_ext import soft_masks as _soft_masks  # noqa: F401  (RTMDet-Ins, Mask2Former soft masks)
from imat_kit.mmdet_ext.datasets import IMAT_CLASSES, IMatDataset
from imat_kit.mmdet_ext.transforms import RecomputeBBoxFromMasks

_checkpoint.register_safe_globals()
_checkpoint.register_fail_fast_http_loader()
_cpu_dist.patch_for_cpu()

__all__ = ["IMAT_CLASSES", "IMatDataset", "RecomputeBBoxFromMasks"]
