"""Loading a config the way ``mim train`` / ``mim test`` do, for the kit's own commands.

``--cfg-options`` go through mmengine's ``DictAction`` (so ``False``, ``None``, numbers and
``[a,b]`` lists mean what they mean to ``mim``), and the fold / data root reach the config
through ``IMAT_FOLD`` / ``IMAT_DATA_ROOT`` only while it is read: the caller's environment is
left as it was.

The fold is also a config value: ``--cfg-options imat_fold=K`` (with ``mim train`` as with the
kit's commands) moves every fold-dependent setting to fold K (:func:`apply_fold_option`); the
environment variable stays as the default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from imat_kit.errors import KitError

ENV_KEYS = ("IMAT_FOLD", "IMAT_DATA_ROOT")
#: the transforms that load annotations: mmdet's, and the kit's (masks kept as runs until the
#: pipeline has resized them, :mod:`imat_kit.mmdet_ext.run_masks`)
LOAD_ANNOTATIONS = ("LoadAnnotations", "IMatLoadAnnotations")
#: held while a config is read: the fold and data root reach it through the process's
#: environment, and ``imat-kit run --gpus`` reads configs from several threads
CONFIG_LOCK = threading.RLock()


def data_root_env(data_root: str | Path) -> str:
    """``IMAT_DATA_ROOT`` as the configs expect it: with a trailing slash."""
    text = str(data_root)
    return text if text.endswith("/") else text + "/"


@contextlib.contextmanager
def imat_env(fold: int | None = None, data_root: str | Path | None = None) -> Iterator[None]:
    """Set ``IMAT_FOLD``/``IMAT_DATA_ROOT`` for the duration of the block, then restore them."""
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    try:
        if fold is not None:
            os.environ["IMAT_FOLD"] = str(int(fold))
        if data_root is not None:
            os.environ["IMAT_DATA_ROOT"] = data_root_env(data_root)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parse_cfg_options(options: list[str] | None) -> dict:
    """``KEY=VALUE`` strings → a dict, parsed exactly as ``mim``'s ``--cfg-options``."""
    from mmengine.config import DictAction

    options = list(options or [])
    for o in options:
        if "=" not in o:
            raise KitError("--cfg-options takes KEY=VALUE pairs", value=o)
    if not options:
        return {}
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--cfg-options", nargs="+", action=DictAction)
    return dict(p.parse_args(["--cfg-options", *options]).cfg_options)


def quiet_mmengine_log() -> None:
    """Keep mmengine's INFO lines (``Using env variable …``, ``Loads checkpoint by …``) out of
    the kit's own commands' output: they log to the current MMLogger, made here at WARNING."""
    from mmengine.logging import MMLogger

    if not MMLogger.check_instance_created("imat_kit"):
        MMLogger.get_instance("imat_kit", log_level="WARNING")


def load_config(path: str | Path, *, fold: int | None = None,
                data_root: str | Path | None = None, options: list[str] | None = None):
    """The config at ``path`` for ``fold``/``data_root`` with ``options`` merged."""
    from mmengine.config import Config

    quiet_mmengine_log()
    if not Path(path).is_file():
        raise KitError("config not found", file=str(path))
    with CONFIG_LOCK, imat_env(fold, data_root):
        cfg = Config.fromfile(str(path))
    opts = parse_cfg_options(options)
    if fold is not None and "imat_fold" in opts and str(opts["imat_fold"]) != str(int(fold)):
        raise KitError(f"--cfg-options imat_fold={opts['imat_fold']} with fold {fold}: the kit's "
                       "commands take the fold from --fold/--folds", file=str(path))
    if opts:
        cfg.merge_from_dict(opts)
    apply_fold_option(cfg)
    return cfg


#: the kit's datasets and metrics that depend on the fold
FOLD_DATASETS = ("IMatDataset",)
FOLD_METRICS = ("IMatCocoMetric", "IMatCompetitionMetric")
_VAL_FILE = re.compile(r"fold\d+_val\.json$")


def apply_fold_option(cfg) -> None:
    """``imat_fold`` in a config (``--cfg-options imat_fold=K``) → ``fold`` and every dataset
    and evaluator that was built for the fold the config was read with, moved to fold K (in
    place). The config reads the fold from ``IMAT_FOLD`` (default 0) when it is parsed; the
    option wins over it. Without the option nothing changes."""
    if cfg.get("imat_fold") is None:
        return
    try:
        fold = int(str(cfg.imat_fold))
    except ValueError:
        raise KitError("imat_fold must be a fold number", value=cfg.imat_fold) from None
    if fold < 0:
        raise KitError("imat_fold must be a fold number", value=cfg.imat_fold)
    cfg.fold = fold

    def move(node: object) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in FOLD_DATASETS and "fold" in node and node.get("split") != "test":
                node["fold"] = fold
            if kind in FOLD_METRICS and isinstance(node.get("ann_file"), str):
                node["ann_file"] = _VAL_FILE.sub(f"fold{fold}_val.json", node["ann_file"])
            for v in node.values():
                move(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                move(v)

    for key in ("train_dataloader", "val_dataloader", "test_dataloader", "val_evaluator",
                "test_evaluator"):
        if cfg.get(key) is not None:
            move(cfg[key])


def flat_settings(cfg, drop: tuple[str, ...] = ("work_dir", "resume")) -> dict[str, object]:
    """Every value of a config as ``{"a.b.0.c": value}`` (JSON types), for recording what a
    run was made with and naming what changed since."""
    tree = json.loads(json.dumps(cfg.to_dict(), default=repr))
    out: dict[str, object] = {}

    def walk(prefix: str, v: object) -> None:
        if isinstance(v, dict) and v:
            for k in v:
                walk(f"{prefix}.{k}" if prefix else str(k), v[k])
        elif isinstance(v, list) and v and any(isinstance(x, (dict, list)) for x in v):
            for i, x in enumerate(v):
                walk(f"{prefix}.{i}", x)
        else:
            out[prefix] = v

    walk("", tree)
    return {k: v for k, v in out.items() if k.split(".")[0] not in drop}


#: the RoI heads with the kit's attribute branch (:mod:`imat_kit.mmdet_ext.roi_heads`)
ATTRIBUTE_ROI_HEADS = ("AttributeRoIHead", "AttributeCascadeRoIHead", "AttributeHTCRoIHead")


def is_attribute_model(cfg) -> bool:
    """Whether the config's model has the kit's attribute branch."""
    roi_head = cfg.model.get("roi_head") or {}
    return roi_head.get("type") in ATTRIBUTE_ROI_HEADS
