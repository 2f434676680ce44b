"""``imat-kit`` commands on the models: train, predict (MMDetection and torch load when
the command runs). Each command's options (``add_…``) sit beside what
it runs (``run_…``)."""

from __future__ import annotations

import argparse

from imat_kit.cli.formatting import phase_line, predicted_line
from imat_kit.cli.options import (
    cfg_options_option,
    echo,
    overwrite_option,
    parse_folds,
    tta_scales,
    verbose_option,
)
from imat_kit.errors import KitError


def add_train(sub, parents) -> None:
    s = sub.add_parser("train", parents=parents, help="train folds one after another, each "
                       "through its config's phases (resumable)")
    s.add_argument("config", help="an MMDetection config, e.g. configs/maskrcnn_r50_imat.py")
    s.add_argument("--folds", type=parse_folds, default=[0], help="e.g. 0,1,2,3,4 (default 0)")
    s.add_argument("--work-root", default="work_dirs",
                   help="work dirs go to WORK_ROOT/<config name>/fold<k> (default work_dirs)")
    s.add_argument("--data-root", default=None,
                   help="the prepared data folder (sets IMAT_DATA_ROOT; default: the config's)")
    s.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="pytorch: N processes on this machine; slurm: through srun (mim)")
    s.add_argument("--gpus", type=int, default=1, help="processes/GPUs with --launcher")
    cfg_options_option(s, "load_from=None train_cfg.max_epochs=2 (passed to every run)")
    s.add_argument("--auto-scale-lr", action="store_true",
                   help="scale lr to the real total batch (mmdet's auto_scale_lr)")
    s.add_argument("--amp", nargs="?", const="bf16", choices=["bf16", "fp16"], default=None,
                   help="mixed precision on a CUDA GPU (AmpOptimWrapper): bf16 (default) or "
                   "fp16")
    s.add_argument("--tensorboard", action="store_true",
                   help="also log to TensorBoard (tensorboard --logdir WORK_ROOT)")
    overwrite_option(s, "delete a phase's earlier run when it was made with other settings")
    s.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    verbose_option(s)
    s.set_defaults(func=run_train)


def run_train(a: argparse.Namespace) -> int:
    from imat_kit.mmdet_ext.train import train_folds

    options = [*(a.cfg_options or []), *(["imat_tensorboard=True"] if a.tensorboard else [])]
    recs = train_folds(a.config, a.folds, work_root=a.work_root, data_root=a.data_root,
                       cfg_options=options, launcher=a.launcher, gpus=a.gpus,
                       auto_scale_lr=a.auto_scale_lr, amp=a.amp, dry_run=a.dry_run,
                       overwrite=a.overwrite, verbose=a.verbose, quiet=a.quiet,
                       echo=None if a.quiet else echo)
    for r in recs:
        print(phase_line(r))
    return 0


def add_predict(sub, parents) -> None:
    s = sub.add_parser("predict", parents=parents, help="run a model over a fold's val images "
                       "or the test set; resumable")
    s.add_argument("config")
    s.add_argument("checkpoint", nargs="?", default=None,
                   help="a .pth (or, with --last-checkpoints, a work dir)")
    s.add_argument("--checkpoints", nargs="+", default=None, metavar="PTH",
                   help="a checkpoint ensemble: predict with each, fuse (resumable per "
                   "checkpoint)")
    s.add_argument("--last-checkpoints", type=int, default=None, metavar="N",
                   help="a checkpoint ensemble of the work dir's N latest checkpoints")
    s.add_argument("--split", choices=["val", "test"], required=True)
    which = s.add_mutually_exclusive_group()
    which.add_argument("--fold", type=int, default=0)
    which.add_argument("--folds", type=parse_folds, default=None, metavar="K,K,…",
                       help="each fold in turn, with its own model: {fold} in the checkpoint "
                       "path and in --out, e.g. work_dirs/cfg/fold{fold}/iter_3000.pth "
                       "--out preds/fold{fold}_val.jsonl")
    s.add_argument("--out", required=True, help="predictions .jsonl")
    s.add_argument("--data-root", default=None, help="prepared data (default: the config's)")
    s.add_argument("--tta", choices=["flip", "scales", "scales+flip"], default=None,
                   help="test-time augmentation, passes fused by the ensemble's rule: a "
                   "mirrored pass, several scales of the test resize, or both")
    s.add_argument("--tta-scales", default=None, metavar="F,F,…",
                   help="factors of the test resize for --tta scales (default 0.8,1.0,1.2)")
    s.add_argument("--batch-size", type=int, default=2,
                   help="images per forward pass (the predictions do not depend on it)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    s.add_argument("--soft-size", type=int, default=0,
                   help="also keep each mask's probabilities inside its box at SxS (e.g. 28), "
                   "for soft ensembling")
    s.add_argument("--attribute-floor", type=float, default=0.05,
                   help="attribute models: store each instance's attribute probabilities at "
                   "or above this (default 0.05)")
    cfg_options_option(s, "model.test_cfg.rcnn.score_thr=0.01")
    overwrite_option(s, "predict every image again when OUT holds predictions made with other "
               "settings")
    s.set_defaults(func=run_predict)


def run_predict(a: argparse.Namespace) -> int:
    from imat_kit.mmdet_ext.predict import last_checkpoints, predict, predict_checkpoints

    scales = tta_scales(a.tta_scales)
    if a.checkpoints and a.checkpoint:
        raise KitError("give one checkpoint, or several with --checkpoints, not both",
                       value=a.checkpoint)
    if a.last_checkpoints is not None and (not a.checkpoint or a.checkpoints):
        raise KitError("--last-checkpoints N takes the work dir in place of the checkpoint")
    given = a.checkpoints or ([a.checkpoint] if a.checkpoint else [])
    if not given:
        raise KitError("predict needs a checkpoint (or --checkpoints A B …, or a work dir with "
                       "--last-checkpoints N)")
    if a.folds is not None:  # one model per fold: {fold} names each one's files
        for what, texts in (("--out", [a.out]), ("the checkpoint path", given)):
            bad = [t for t in texts if "{fold}" not in t]
            if bad:
                raise KitError(f"--folds needs {{fold}} in {what} (one per fold), e.g. "
                               "work_dirs/cfg/fold{fold}/iter_3000.pth and "
                               "preds/fold{fold}_val.jsonl", value=bad[0])
    for fold in a.folds if a.folds is not None else [a.fold]:
        def at(text: str, fold: int = fold) -> str:
            return text.replace("{fold}", str(fold))

        kw = dict(split=a.split, fold=fold, out=at(a.out), data_root=a.data_root, tta=a.tta,
                  tta_scales=scales, batch_size=a.batch_size, device=a.device,
                  soft_size=a.soft_size, cfg_options=a.cfg_options, overwrite=a.overwrite,
                  attribute_floor=a.attribute_floor, quiet=a.quiet)
        ckpts = ([str(c) for c in last_checkpoints(at(a.checkpoint), a.last_checkpoints)]
                 if a.last_checkpoints is not None else [at(c) for c in given])
        lead = f"fold {fold}: " if a.folds is not None else ""
        r = (predict_checkpoints(a.config, ckpts, **kw) if len(ckpts) > 1 else
             predict(a.config, ckpts[0], **kw))
        print(lead + predicted_line(r))
    return 0

#: command → the function that adds its parser
PARSERS = {"train": add_train, "predict": add_predict}
