"""imat-kit: from the iMaterialist Fashion 2019 competition files to a scored submission.

The core (this package, except :mod:`imat_kit.mmdet_ext`) is pure Python + numpy and never
imports mmdet, mmengine or torch.
"""

__version__ = "0.1.0"
