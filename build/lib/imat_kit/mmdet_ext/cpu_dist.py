"""Distributed training on CPU processes (gloo), for tests and CPU-only machines.

mmengine's ``init_dist`` calls ``torch.cuda.set_device(local_rank)`` unconditionally, which
fails on a CPU-only torch. Only when CUDA is unavailable is that call made a no-op; on a GPU
machine nothing changes. The config side of CPU DDP (``dist_cfg.backend='gloo'`` and
``model_wrapper_cfg.device_ids=None``) is ``train.CPU_DIST_OPTIONS``, which ``imat-kit train``
adds by itself when it launches processes on a machine without CUDA.
"""

from __future__ import annotations

import torch


def patch_for_cpu() -> None:
    if torch.cuda.is_available() or getattr(torch.cuda.set_device, "_imat_kit", False):
        return

    def set_device(*args, **kwargs) -> None:
        return None

    set_device._imat_kit = True
    torch.cuda.set_device = set_device
