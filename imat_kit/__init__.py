"""imat-kit: from the iMaterialist Fashion competition files to a scored submission.

The package is grouped by the pipeline's stages (``docs/DESIGN.md`` has the module map):
``imat_kit.data`` (labels, RLE, conversion, folds, Fashionpedia files, synthetic data, file
paths), ``imat_kit.eval`` (matching, the metrics, the fold table, analysis), the prediction steps
at the top level (``predictions``, ``postprocess``, ``tune``, ``ensemble``, ``submission``,
``plots``, ``report``), ``imat_kit.mmdet_ext`` (everything registered into MMDetection),
``imat_kit.pipeline`` (``imat-kit run``) and ``imat_kit.cli`` (the command line and the demo).

The core (everything except :mod:`imat_kit.mmdet_ext`) is pure Python + numpy and never
imports mmdet, mmengine or torch. Importing the package changes nothing in the process.
"""

__version__ = "0.1.0"
