"""Checkpoint loading fixes for torch >= 2.6 and offline machines."""

from __future__ import annotations

import builtins
import os
import socket
from urllib.parse import urlparse

import numpy as np
import torch


def safe_globals() -> list:
    """The non-tensor globals inside an mmengine runner checkpoint (``message_hub`` keeps a
    ``HistoryBuffer`` of numpy arrays and numpy scalars)."""
    from mmengine.logging import HistoryBuffer

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32",
                                          "int16", "int8", "uint8", "bool")]
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, builtins.getattr,
            *dtypes]


def register_safe_globals() -> None:
    """Allow-list :func:`safe_globals` for ``torch.load`` (those not listed yet)."""
    if hasattr(torch.serialization, "add_safe_globals"):
        have = torch.serialization.get_safe_globals()
        new = [g for g in safe_globals() if not any(g is h for h in have)]
        if new:
            torch.serialization.add_safe_globals(new)


def _hub_cached(url: str) -> str | None:
    """The local file torch.hub keeps for ``url``, if it was downloaded before."""
    name = os.path.basename(urlparse(url).path)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", name)
    return path if os.path.isfile(path) else None


def _reachable(url: str, timeout: float = 5.0) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https"
                                                               else 80)), timeout=timeout):
            return True
    except OSError:
        return False


class OfflineCheckpointError(RuntimeError):
    pass


def register_fail_fast_http_loader() -> None:
    """Put a check in front of mmengine's http(s) checkpoint loader: a cached file loads as
    is; an unreachable host raises at once with instructions instead of waiting."""
    from mmengine.runner.checkpoint import CheckpointLoader

    original = CheckpointLoader._schemes.get("https://")
    if original is None or getattr(original, "_imat_kit", False):
        return

    def load_from_http(filename, map_location=None, model_dir=None, progress=True):
        cached = _hub_cached(filename)
        if cached is not None:
            return CheckpointLoader.load_checkpoint(cached, map_location=map_location)
        if not _reachable(filename):
            raise OfflineCheckpointError(
                f"cannot download the checkpoint {filename}: the host is not reachable from "
                "this machine. Download it elsewhere and pass it as a local file "
                "(--cfg-options load_from=/path/to/file.pth), put it in "
                f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}, or train from scratch "
                "with --cfg-options load_from=None.")
        return original(filename, map_location=map_location, model_dir=model_dir,
                        progress=progress)

    load_from_http._imat_kit = True
    CheckpointLoader.register_scheme(prefixes=("http://", "https://"), force=True)(
        load_from_http)
