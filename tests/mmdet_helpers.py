"""Test-only hooks, loaded by the test configs through custom_imports."""

from __future__ import annotations

import hashlib
import json

import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


def _digest(module: torch.nn.Module) -> str:
    """Of the parameters (weights), not the buffers: with BN statistics updated per process
    and broadcast_buffers=False, buffers may legitimately differ between ranks."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@HOOKS.register_module()
class ParamDigestHook(Hook):
    """Writes ``digest_rank{r}.json``: digests of the backbone and of the rest of the model at
    the start and end of training, per process."""

    def before_train(self, runner) -> None:
        self._start = self._digests(runner)

    def after_train(self, runner) -> None:
        out = {"start": self._start, "end": self._digests(runner)}
        path = f"{runner.work_dir}/digest_rank{get_rank()}.json"
        with open(path, "w") as f:
            json.dump(out, f)

    @staticmethod
    def _digests(runner) -> dict:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return {"backbone": _digest(model.backbone), "neck": _digest(model.neck),
                "roi_head": _digest(model.roi_head)}
