"""``imat-kit`` commands on the whole chain: run. Each command's options (``add_…``) sit beside what
it runs (``run_…``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imat_kit.cli.formatting import run_summary_lines
from imat_kit.cli.options import (
    cfg_options_option,
    echo,
    jobs_option,
    parse_folds,
    tta_scales,
    verbose_option,
)
from imat_kit.errors import KitError
from imat_kit.pipeline.chain import plan, run_pipeline
from imat_kit.pipeline.runfile import RUN_FILE_SUFFIXES, read_run_file
from imat_kit.pipeline.spec import spec_from_options


def add_run(sub, parents) -> None:
    s = sub.add_parser("run", parents=parents, help="the whole chain for every model and fold, "
                       "to a tuned, validated submission: prepare, train, predict, evaluate, "
                       "tune, ensemble, submit, validate, report (resumable)")
    s.add_argument("targets", nargs="+", metavar="CONFIG|RUN.yaml",
                   help="one or more model configs, or one run file (docs/run.md)")
    s.add_argument("--data", default=None, help="the competition files (prepared when not "
                   "yet)")
    s.add_argument("--out", default=None, help="the run's folder")
    s.add_argument("--folds", type=parse_folds, default=[0, 1, 2, 3, 4],
                   help="folds to train (default 0,1,2,3,4)")
    s.add_argument("--seed", type=int, default=0,
                   help="the folds', the trainings' and the re-scorer's seed")
    s.add_argument("--gpus", default=None, metavar="IDS|N",
                   help="GPU ids (0,1,2,3): the (model, fold) trainings and predictions run "
                   "at once, one per GPU; with --launcher, the count of each fold's processes")
    jobs_option(s, 1)
    s.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="pytorch: each fold in DDP over --gpus N processes; slurm: through "
                   "srun (mim)")
    cfg_options_option(s, "train_cfg.max_epochs=24 (every model, training and prediction)")
    s.add_argument("--tta", choices=["flip", "scales", "scales+flip"], default=None,
                   help="test-time augmentation of every model's predictions")
    s.add_argument("--tta-scales", default=None, metavar="F,F,…",
                   help="factors of the test resize for --tta scales")
    s.add_argument("--soft-size", type=int, default=0,
                   help="keep soft masks at SxS for the fusion (e.g. 28)")
    s.add_argument("--checkpoints", type=int, default=1, metavar="N",
                   help="predict with each fold's last N checkpoints, fused")
    s.add_argument("--checkpoint", choices=["last", "best"], default="last",
                   help="best: the checkpoint save_best kept (the competition score on the "
                   "fold)")
    s.add_argument("--submission", default=None, help="default RUN/submission.csv")
    s.add_argument("--no-rescore", action="store_true",
                   help="tune without the learned re-scorer")
    s.add_argument("--no-figures", action="store_true", help="skip the figures")
    s.add_argument("--retrain", action="store_true",
                   help="train again a fold whose work dir holds a run made with other "
                   "settings (default: stop and say what differs)")
    s.add_argument("--dry-run", action="store_true",
                   help="check the configs and the run file, print the jobs and steps, run "
                   "and write nothing")
    verbose_option(s)
    s.set_defaults(func=run_run)


def run_run(a: argparse.Namespace) -> int:
    files = [t for t in a.targets if Path(t).suffix in RUN_FILE_SUFFIXES]
    if files:
        if len(a.targets) > 1:
            raise KitError("give one run file, or configs, not both", value=" ".join(a.targets))
        given = [flag for flag, v in (("--data", a.data), ("--out", a.out),
                                      ("--gpus", a.gpus), ("--cfg-options", a.cfg_options),
                                      ("--tta", a.tta), ("--submission", a.submission))
                 if v is not None]
        if given:
            raise KitError(f"{', '.join(given)}: the run file holds these settings (give them "
                           "there)", file=files[0])
        spec = read_run_file(files[0])
    else:
        spec = spec_from_options(a.targets, data=a.data, out=a.out, folds=a.folds,
                                 seed=a.seed, gpus=a.gpus, jobs=a.jobs,
                                 launcher=a.launcher,
                                 cfg_options=a.cfg_options, tta=a.tta,
                                 tta_scales=tta_scales(a.tta_scales),
                                 soft_size=a.soft_size, checkpoints=a.checkpoints,
                                 checkpoint=a.checkpoint, submission=a.submission,
                                 rescore=not a.no_rescore, figures=not a.no_figures)
    if a.dry_run:
        for line in plan(spec):
            print(line)
        return 0
    result = run_pipeline(spec, retrain=a.retrain, verbose=a.verbose, quiet=a.quiet,
                          echo=echo)
    for line in run_summary_lines(result):
        print(line)
    return 0

#: command → the function that adds its parser
PARSERS = {"run": add_run}
