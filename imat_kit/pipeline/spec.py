"""What ``imat-kit run`` runs: the models, the folds, the data, the settings of every step.

It comes from the command line (``imat-kit run CONFIG [CONFIG …] --data DATA --folds 0,1
--out RUN``) or from a YAML run file (``imat-kit run RUN.yaml``) for what does not fit on a line:
per-model TTA, checkpoint ensembles, soft-mask size, cfg-options, fusion weights. A run file's
paths are relative to the file. Everything is checked before the run writes anything: an
unknown key, a value of the wrong kind, a config that is not there or does not load, each is
one error naming the file, the line and the value.

A run file::

    data: ../data/imat2019          # the competition files (prepared here when not yet)
    out: ../runs/r50x2              # the run's folder
    folds: [0, 1, 2, 3, 4]
    gpus: [0, 1, 2, 3]              # one (model, fold) job per GPU; or with launcher: 4
    models:
      - config: ../configs/maskrcnn_r50_imat.py
        tta: flip
        checkpoints: 2              # the last 2 checkpoints, fused
      - config: ../configs/htc_x101_dcn_imat.py
        cfg_options: [train_cfg.max_epochs=24]
        soft_size: 28
        weight: 2
    tune: {rescore: true}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from imat_kit.errors import KitError

TTA = (None, "flip", "scales", "scales+flip")
LAUNCHERS = ("none", "pytorch", "slurm")
CHECKPOINT_CHOICES = ("last", "best")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the run: its config and how it is trained and predicted."""

    config: Path
    name: str = ""
    #: config overrides for training and prediction (as ``mim``'s --cfg-options)
    cfg_options: tuple[str, ...] = ()
    #: config overrides for prediction only (e.g. ``model.test_cfg.rcnn.score_thr=0.01``)
    predict_options: tuple[str, ...] = ()
    tta: str | None = None
    tta_scales: tuple[float, ...] | None = None
    soft_size: int = 0
    #: predict with the last N checkpoints of the run, fused (a checkpoint ensemble)
    checkpoints: int = 1
    #: ``last`` or ``best`` (the checkpoint save_best kept: the competition score on the fold)
    checkpoint: str = "last"
    batch_size: int = 2
    weight: float = 1.0
    amp: str | None = None
    auto_scale_lr: bool = False
    attribute_floor: float = 0.05

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", Path(self.config).stem)


@dataclass(frozen=True)
class RunSpec:
    """The whole run. ``source`` is the run file (None from the command line)."""

    data: Path
    out: Path
    models: tuple[ModelSpec, ...]
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    seed: int = 0
    #: GPU ids, one (model, fold) job on each (``CUDA_VISIBLE_DEVICES``); with a launcher,
    #: ``gpus`` is the count of processes of each fold's DDP run
    gpus: tuple[str, ...] = ()
    launcher: str = "none"
    launcher_gpus: int = 1
    #: without GPUs: (model, fold) jobs run at once on the CPU, each with its share of the cores
    jobs: int = 1
    prepare_folds: int = 5
    prepare_split: str = "stratified"
    ensemble_method: str = "fusion"
    ensemble_iou: float = 0.5
    ensemble_scores: str = "members"
    tune_metric: str | None = None
    tune_rescore: bool = True
    tune_min_support: int = 20
    tune_fn: str = "ignore"
    submission: Path | None = None
    figures: bool = True
    source: Path | None = field(default=None, compare=False)

    @property
    def submission_path(self) -> Path:
        return self.submission or self.out / "submission.csv"

    def describe(self) -> dict:
        """The spec as JSON-able values (for the manifest)."""
        def plain(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, ModelSpec):
                return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
            return v
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)
                if f.name != "source"}


# --- checks shared by both sources ----------------------------------------------------------


def check_models(models: tuple[ModelSpec, ...], where=lambda i, key: (None, None)) -> None:
    """Each config exists and loads as an mmengine config, names are unique, every option is in
    range. ``where(i, key)`` locates model ``i``'s ``key`` as ``(file, line)``."""
    from imat_kit.mmdet_ext.train import phase_chain

    if not models:
        raise KitError("a run needs at least one model config")
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        file, line = where(i, "config")
        if not Path(m.config).is_file():
            raise KitError("config not found", file=file, row=line, value=str(m.config))
        try:
            phase_chain(m.config)
        except KitError as e:
            raise KitError(f"config does not load: {e}", file=file, row=line,
                           value=str(m.config)) from None
        except Exception as e:  # mmengine's own error, on one line
            raise KitError(f"config does not load: {type(e).__name__}: {e}", file=file,
                           row=line, value=str(m.config)) from None
        if m.name in seen:
            file, line = where(i, "name")
            raise KitError(f"two models are named {m.name!r} (give each a name)", file=file,
                           row=line, value=m.name)
        seen[m.name] = i
        if any(c in m.name for c in "/\\") or m.name in (".", "..", "ensemble"):
            raise KitError("a model's name becomes a folder: no slashes, not 'ensemble'",
                           file=where(i, "name")[0], row=where(i, "name")[1], value=m.name)
        for key, ok, what in (
                ("tta", m.tta in TTA, "one of flip, scales, scales+flip"),
                ("checkpoints", m.checkpoints >= 1, "at least 1"),
                ("checkpoint", m.checkpoint in CHECKPOINT_CHOICES, "last or best"),
                ("soft_size", m.soft_size >= 0, "0 (off) or a size like 28"),
                ("batch_size", m.batch_size >= 1, "at least 1"),
                ("weight", 0 < m.weight < float("inf"), "a positive number"),
                ("tta_scales", m.tta_scales is None or all(0 < f <= 8 for f in m.tta_scales),
                 "factors within (0, 8]"),
                ("amp", m.amp in (None, "bf16", "fp16"), "bf16 or fp16"),
                ("attribute_floor", 0 < m.attribute_floor < 1, "within (0, 1)")):
            if not ok:
                file, line = where(i, key)
                raise KitError(f"{key} must be {what}", file=file, row=line,
                               value=getattr(m, key))
        if m.checkpoints > 1 and m.checkpoint == "best":
            file, line = where(i, "checkpoint")
            raise KitError("checkpoint: best is one checkpoint; a checkpoint ensemble "
                           "(checkpoints: N) takes the last N", file=file, row=line,
                           value=m.checkpoint)


def check_run(spec: RunSpec, where=lambda key: (None, None)) -> None:
    """The run-level settings in range (``where(key)`` locates a key as ``(file, line)``)."""
    from imat_kit.data.folds import METHODS as SPLITS
    from imat_kit.ensemble import METHODS
    from imat_kit.eval.metric import FN_RULES

    checks = (
        ("folds", bool(spec.folds) and min(spec.folds) >= 0
         and len(set(spec.folds)) == len(spec.folds), "distinct non-negative fold numbers"),
        ("folds", not spec.folds or max(spec.folds) < spec.prepare_folds,
         f"below prepare's fold count ({spec.prepare_folds})"),
        ("launcher", spec.launcher in LAUNCHERS, "none, pytorch or slurm"),
        ("gpus", spec.launcher_gpus >= 1, "at least 1"),
        ("jobs", spec.jobs >= 1, "at least 1"),
        ("jobs", spec.jobs == 1 or (not spec.gpus and spec.launcher == "none"),
         "1 with gpus or a launcher (then one job runs per GPU, or each fold over all)"),
        ("prepare", spec.prepare_folds >= 2, "folds: at least 2"),
        ("prepare", spec.prepare_split in SPLITS, "split: " + ", ".join(SPLITS)),
        ("ensemble", spec.ensemble_method in METHODS, "method: " + ", ".join(METHODS)),
        ("ensemble", 0 < spec.ensemble_iou < 1, "iou: within (0, 1)"),
        ("ensemble", spec.ensemble_scores in ("members", "mean"), "scores: members or mean"),
        ("tune", spec.tune_metric in (None, "competition", "competition2020", "ap_iou_f1"),
         "metric: competition, competition2020 or ap_iou_f1"),
        ("tune", spec.tune_fn in FN_RULES, "fn: " + ", ".join(FN_RULES)),
        ("tune", spec.tune_min_support >= 1, "min_support: at least 1"),
    )
    for key, ok, what in checks:
        if not ok:
            file, line = where(key)
            raise KitError(f"{key} must be {what}", file=file, row=line,
                           value=_shown_value(spec, key))
    data = Path(spec.data)
    if not data.is_dir():
        file, line = where("data")
        raise KitError("the data folder does not exist", file=file, row=line, value=str(data))
    if spec.out.exists() and not spec.out.is_dir():
        file, line = where("out")
        raise KitError("the run's folder is a file", file=file, row=line, value=str(spec.out))


def _shown_value(spec: RunSpec, key: str) -> object:
    return {"folds": spec.folds, "launcher": spec.launcher, "gpus": spec.launcher_gpus,
            "jobs": spec.jobs,
            "prepare": (spec.prepare_folds, spec.prepare_split),
            "ensemble": (spec.ensemble_method, spec.ensemble_iou, spec.ensemble_scores),
            "tune": (spec.tune_metric, spec.tune_fn, spec.tune_min_support)}.get(key)


def parse_gpus(text: str | int | list, launcher: str) -> tuple[tuple[str, ...], int]:
    """``(device ids, DDP process count)`` from ``--gpus``: a comma list of ids (one job on each)
    without a launcher, a count with one (``--launcher pytorch --gpus 4``)."""
    if isinstance(text, list):
        items = [str(x).strip() for x in text]
    else:
        items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items or not all(x.isdigit() for x in items):
        raise KitError("gpus takes GPU ids like 0,1,2,3 (or, with a launcher, a count)",
                       value=text)
    if launcher != "none":
        if len(items) != 1 or int(items[0]) < 1:
            raise KitError("with a launcher, gpus is the count of processes of each fold's "
                           "run, like 4", value=text)
        return (), int(items[0])
    if len(set(items)) != len(items):
        raise KitError("a GPU id is given twice", value=text)
    return tuple(items), 1


def spec_from_options(configs: list[str], *, data: str | None, out: str | None,
                      folds: list[int], seed: int = 0, gpus: str | None = None,
                      jobs: int = 1,
                      launcher: str = "none", cfg_options: list[str] | None = None,
                      predict_options: list[str] | None = None, tta: str | None = None,
                      tta_scales: list[float] | None = None, soft_size: int = 0,
                      checkpoints: int = 1, checkpoint: str = "last",
                      submission: str | None = None, rescore: bool = True,
                      figures: bool = True) -> RunSpec:
    """The spec of ``imat-kit run CONFIG [CONFIG …] --data … --out …`` (every model with the
    same options), checked as a run file is."""
    if data is None or out is None:
        raise KitError("imat-kit run CONFIG … needs --data and --out (or give a run file)")
    ids, count = parse_gpus(gpus, launcher) if gpus is not None else ((), 1)
    models = tuple(ModelSpec(config=Path(c), cfg_options=tuple(cfg_options or ()),
                             predict_options=tuple(predict_options or ()), tta=tta,
                             tta_scales=tuple(tta_scales) if tta_scales else None,
                             soft_size=soft_size, checkpoints=checkpoints,
                             checkpoint=checkpoint) for c in configs)
    spec = RunSpec(data=Path(data), out=Path(out), models=models, folds=tuple(folds),
                   seed=seed, gpus=ids, launcher=launcher, launcher_gpus=count, jobs=jobs,
                   submission=Path(submission) if submission else None,
                   tune_rescore=rescore, figures=figures)
    check_run(spec)
    check_models(spec.models)
    return spec
