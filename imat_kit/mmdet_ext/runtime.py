"""The process-wide changes the kit's runs need, made only when asked: :func:`setup_runtime`.

Importing :mod:`imat_kit.mmdet_ext` (as every config does through ``custom_imports``) only
registers modules. ``IMatRunner`` (the ``runner_type`` of our configs, so ``mim train`` and
``mim test`` too) and the kit's own train and predict steps call :func:`setup_runtime`, which:

* lets checkpoints written by mmengine load under torch >= 2.6 (``weights_only=True`` by
  default): the few non-tensor globals such a checkpoint holds are allow-listed, so ``--resume``,
  ``mim test --checkpoint`` and ``load_from`` work with no environment variable;
* makes an ``http(s)://`` ``load_from`` fail fast, with a message saying what to do, when the
  checkpoint is neither cached nor reachable (it would otherwise wait on the network);
* on a machine without CUDA only, lets mmengine's distributed launcher run on CPU processes
  (gloo backend), which it otherwise cannot (it calls ``torch.cuda.set_device``).

A user's own script that loads our checkpoints without the runner calls it once.
Calling it again changes nothing.
"""

from __future__ import annotations

from imat_kit.mmdet_ext.checkpoint import register_fail_fast_http_loader, register_safe_globals
from imat_kit.mmdet_ext.cpu_dist import patch_for_cpu


def setup_runtime() -> None:
    """See the module docstring (idempotent)."""
    register_safe_globals()
    register_fail_fast_http_loader()
    patch_for_cpu()
