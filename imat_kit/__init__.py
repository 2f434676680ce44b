"""imat-kit: from the iMaterialist Fashion competition files to a scored submission.

The package is grouped by the pipeline's stages (``docs/DESIGN.md`` has the module map):
``imat_kit.data`` (labels, RLE, conversion, folds, synthetic data, file paths),
``imat_kit.eval`` (matching, the metrics, the fold table, analysis), the prediction steps at the
top level (``predictions``, ``postprocess``, ``tune``, ``ensemble``, ``submission``, ``plots``,
``report``), ``imat_kit.mmdet_ext`` (everything registered into MMDetection) and
``imat_kit.cli`` (the command line and the demo).

The core (everything except :mod:`imat_kit.mmdet_ext`) is pure Python + numpy and never
imports mmdet, mmengine or torch.

The short names of the modules users import (``import imat_kit.rle``, ``from imat_kit import
metric``) stay valid: each is the very module of its stage package (``imat_kit.rle is
imat_kit.data.rle``).
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

#: short name → the module it is
SHORT_NAMES = {
    **{m: f"imat_kit.data.{m}" for m in ("labels", "rle", "coco", "folds", "synth", "readers",
                                         "prepare", "stats", "paths")},
    **{m: f"imat_kit.eval.{m}" for m in ("matching", "metric", "attr_metric", "fashionpedia",
                                         "evaluate", "attr_eval", "analysis", "runs")},
    "demo": "imat_kit.cli.demo",
}


class _ShortNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``imat_kit.<short name>`` as the stage module itself (one module object, so a
    monkeypatch or an ``isinstance`` check sees the same thing under either name)."""

    def find_spec(self, fullname, path=None, target=None):
        short = fullname.removeprefix("imat_kit.")
        if fullname.startswith("imat_kit.") and short in SHORT_NAMES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(SHORT_NAMES[spec.name.removeprefix("imat_kit.")])

    def exec_module(self, module):
        pass  # already executed under its own name


if not any(isinstance(f, _ShortNames) for f in sys.meta_path):
    sys.meta_path.insert(0, _ShortNames())
