"""Everything imat-kit registers into MMDetection; configs reach it with
``custom_imports = dict(imports=['imat_kit.mmdet_ext'], allow_failed_imports=False)``.

Importing it only registers modules; it changes nothing else in the process (the runtime
changes a run needs are :func:`~imat_kit.mmdet_ext.runtime.setup_runtime`, which ``IMatRunner``
and the kit's train and predict steps call). It:

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
  model family cannot do on iMaterialist is refused before training, and ``--cfg-options
  imat_fold=K`` picks the fold (:func:`~imat_kit.mmdet_ext.config.apply_fold_option`).
"""

from __future__ import annotations

from imat_kit.mmdet_ext import attributes as _attributes  # noqa: F401  (attribute transforms, packing)
from imat_kit.mmdet_ext import hooks as _hooks  # noqa: F401  (registers ValLossHook)
from imat_kit.mmdet_ext import metrics as _metrics  # noqa: F401  (registers IMatCocoMetric)
from imat_kit.mmdet_ext import roi_heads as _roi_heads  # noqa: F401  (AttributeRoIHead, AttributeHead)
from imat_kit.mmdet_ext import run_masks as _run_masks  # noqa: F401  (IMatLoadAnnotations)
from imat_kit.mmdet_ext import runner as _runner  # noqa: F401  (registers IMatRunner)
from imat_kit.mmdet_ext import soft_masks as _soft_masks  # noqa: F401  (RTMDet-Ins, Mask2Former soft masks)
from imat_kit.mmdet_ext.datasets import IMAT_CLASSES, IMatDataset
from imat_kit.mmdet_ext.transforms import RecomputeBBoxFromMasks

__all__ = ["IMAT_CLASSES", "IMatDataset", "RecomputeBBoxFromMasks"]
