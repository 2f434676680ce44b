"""``IMatRunner``: mmengine's Runner with the two rules our configs would otherwise restate.

* **One work dir per fold.** A run's work dir ends in ``fold<k>`` (k = the config's ``fold``:
  ``--cfg-options imat_fold=K``, else ``IMAT_FOLD``, else 0): ``mim train mmdet configs/x.py``
  writes to ``work_dirs/x/fold<k>``, and ``--work-dir W`` to ``W/fold<k>`` unless W already
  ends in ``fold<k>``. Two folds can never resume or overwrite each other's run.
* **A later phase starts from the earlier one.** A config with ``imat_previous_phase`` (the
  earlier phase's config, relative to this one) and ``load_from = 'imat:previous-phase'``
  starts from the last checkpoint of the earlier phase's run on the same fold, found beside this
  run's work dir (``<root>/<earlier config name>/fold<k>``). Any other ``load_from`` (a file, a
  URL, ``None`` for from scratch) is used as it is. No checkpoint name (``epoch_4.pth``) is written
  in any config, so changing the epochs or the fold cannot leave one pointing at a file that
  does not exist.
* **What a model family cannot do is refused before training** (:mod:`.checks`: a pipeline that
  drops the RLE masks, a model without masks or with another class count, Mask2Former in
  panoptic mode, attributes on a model without the branch).
* **A checkpoint of another label space loads in one line.** ``load_from`` a COCO checkpoint
  (80 classes) into a 46-class model: every tensor of the same name and shape is loaded, the
  others (the class-dependent layers, a branch the checkpoint lacks such as the attribute head)
  keep their fresh initialisation, and checkpoint tensors the model has no place for (HTC's
  semantic branch) are left out — all named in one log line (:func:`adapted_state`), instead of
  mmengine's page of size-mismatch warnings.
* **TensorBoard on request.** ``imat_tensorboard = True`` in a config (``imat-kit train
  --tensorboard`` sets it) adds mmengine's ``TensorboardVisBackend`` beside the local one:
  losses, learning rate and validation AP go to ``<work dir>/<run>/vis_data/`` as TensorBoard
  event files too (``tensorboard --logdir work_dirs``).
"""

from __future__ import annotations

from pathlib import Path

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from imat_kit.errors import KitError
from imat_kit.mmdet_ext.checks import check_training_config
from imat_kit.mmdet_ext.config import apply_fold_option
from imat_kit.mmdet_ext.runtime import setup_runtime

#: the ``load_from`` of a later phase: the earlier phase's last checkpoint on the same fold
PREVIOUS_PHASE = "imat:previous-phase"


def _modules(keys: list[str]) -> str:
    """Parameter names as their modules, once each (``a.b.weight``, ``a.b.bias`` → ``a.b``)."""
    mods = dict.fromkeys(k.rsplit(".", 1)[0] if "." in k else k for k in keys)
    return ", ".join(mods) if mods else "none"


def adapted_state(own: dict, state: dict) -> tuple[dict, list[str], list[str], str]:
    """What of a checkpoint's ``state`` loads into a model whose state dict is ``own``: the
    tensors of the same name and shape; the model's keys left at their initialisation (absent
    from the checkpoint, or of another shape: the class-dependent layers); the checkpoint's
    keys the model has no place for; and the one line that says so."""
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(
        own[k].shape)}
    fresh = [k for k in own if k not in loadable]
    unused = [k for k in state if k not in own]
    line = (f"{len(loadable)} of the model's {len(own)} tensors loaded; re-initialised (not in "
            f"the checkpoint, or another shape): {_modules(fresh)}; left out of the checkpoint "
            f"(no place in the model): {_modules(unused)}")
    return loadable, fresh, unused, line


def fold_work_dir(work_dir: str | Path, fold: object) -> str:
    """``work_dir`` ending in ``fold<k>``."""
    wd = Path(str(work_dir))
    leaf = f"fold{int(str(fold))}"
    return str(wd if wd.name == leaf else wd / leaf)


def last_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine last saved in ``work_dir`` (its ``last_checkpoint`` file)."""
    marker = Path(work_dir) / "last_checkpoint"
    if not marker.exists():
        return None
    ckpt = Path(marker.read_text().strip())
    return ckpt if ckpt.exists() else None


def previous_phase_checkpoint(work_dir: str | Path, previous_config: str | Path) -> Path:
    """The last checkpoint of the earlier phase's run beside ``work_dir`` (same fold)."""
    wd = Path(work_dir)
    prev_dir = wd.parent.parent / Path(str(previous_config)).stem / wd.name
    ckpt = last_checkpoint(prev_dir)
    if ckpt is None:
        raise KitError(f"this phase starts from the last checkpoint of {Path(previous_config).stem}"
                       f" on {wd.name}, but {prev_dir} holds none: train that phase first "
                       "(`imat-kit train` runs the phases in order) or pass --cfg-options "
                       "load_from=CHECKPOINT", file=str(prev_dir))
    return ckpt


def apply_run_rules(cfg) -> None:
    """The module docstring's rules, applied to a config (in place) before a run."""
    cfg.work_dir = fold_work_dir(cfg.work_dir, cfg.get("fold", 0))
    if cfg.get("imat_tensorboard"):
        vis = cfg.setdefault("visualizer", {})
        backends = list(vis.get("vis_backends") or [dict(type="LocalVisBackend")])
        if not any(b.get("type") == "TensorboardVisBackend" for b in backends):
            backends.append(dict(type="TensorboardVisBackend"))
        vis["vis_backends"] = backends
    if cfg.get("load_from") != PREVIOUS_PHASE:
        return
    prev = cfg.get("imat_previous_phase")
    if not prev:
        raise KitError(f"load_from is {PREVIOUS_PHASE!r} but the config names no "
                       "imat_previous_phase", file=str(cfg.get("filename")))
    if cfg.get("resume") and last_checkpoint(Path(cfg.work_dir)) is not None:
        cfg.load_from = None  # resume this phase's own run
    else:  # mmengine resumes *from* load_from when both are set: start fresh from it
        cfg.load_from = str(previous_phase_checkpoint(cfg.work_dir, prev))
        cfg.resume = False


@RUNNERS.register_module()
class IMatRunner(Runner):
    """See the module docstring; otherwise exactly mmengine's Runner. Building one makes the
    runtime changes a run needs (:func:`~imat_kit.mmdet_ext.runtime.setup_runtime`)."""

    def __init__(self, *args, **kwargs) -> None:
        setup_runtime()  # before mmengine's init_dist and any checkpoint load
        super().__init__(*args, **kwargs)

    def load_checkpoint(self, filename: str, map_location="cpu", strict: bool = False,
                        revise_keys: list = [(r"^module.", "")]):  # noqa: B006 (mmengine's)
        """mmengine's, with :func:`adapted_state`'s one line for a checkpoint that does not fit
        the model exactly (``strict``: such a checkpoint is refused)."""
        import re

        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import _load_checkpoint

        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        state = checkpoint.get("state_dict", checkpoint)
        for pattern, repl in revise_keys:
            state = {re.sub(pattern, repl, k): v for k, v in state.items()}
        loadable, fresh, unused, line = adapted_state(model.state_dict(), state)
        if strict and (fresh or unused):
            raise KitError(f"the checkpoint does not fit the model: {line}", file=str(filename))
        model.load_state_dict(loadable, strict=False)
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}: {line}")
        return checkpoint

    @classmethod
    def from_cfg(cls, cfg) -> Runner:
        setup_runtime()
        cfg = cfg.copy()
        apply_fold_option(cfg)
        if cfg.get("train_dataloader") is not None and cfg.get("train_cfg") is not None:
            check_training_config(cfg)
        apply_run_rules(cfg)
        runner = super().from_cfg(cfg)
        if not any(type(h).__name__ == "BoxMasksHook" for h in runner.hooks):
            from imat_kit.mmdet_ext.hooks import BoxMasksHook

            runner.register_hook(BoxMasksHook())  # validation without N × H × W masks
        return runner
