"""``imat-kit train``: train folds one after another, each through its chain of phases.

A config may name the config of its next phase in ``imat_next_phase`` (a path relative to the
config): the reference recipe's "heads" run is followed by the "all layers" run, which starts
from the heads run's last checkpoint. Each phase of each fold is one ``mim train`` run in its own
work dir, ``WORK_ROOT/<config name>/fold<k>``, so a run on N GPUs (or a cluster) is an ordinary
mmengine run and DDP wraps the model once per phase with exactly the parameters it trains.

Re-running the same command resumes: a finished phase (``imat_done.json`` in its work dir) is
skipped, an interrupted one resumes from its last checkpoint (``--resume``), a new one starts
(phase 2 from phase 1's last checkpoint).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import KitError
from ..io import atomic_open

DONE = "imat_done.json"


@dataclass
class Phase:
    config: Path
    name: str


def phase_chain(config: str | Path) -> list[Phase]:
    """The config and the configs it chains to through ``imat_next_phase``."""
    from mmengine.config import Config

    chain: list[Phase] = []
    path = Path(config)
    while True:
        if not path.exists():
            raise KitError("config not found", file=str(path))
        if any(p.config.resolve() == path.resolve() for p in chain):
            raise KitError("imat_next_phase chain loops back", file=str(path))
        chain.append(Phase(path, path.stem))
        nxt = Config.fromfile(str(path)).get("imat_next_phase")
        if not nxt:
            return chain
        path = path.parent / nxt


def last_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine last saved in ``work_dir`` (its ``last_checkpoint`` file)."""
    marker = work_dir / "last_checkpoint"
    if not marker.exists():
        return None
    ckpt = Path(marker.read_text().strip())
    return ckpt if ckpt.exists() else None


#: what DDP on CPU processes needs (gloo, and no device_ids, which CPU modules reject);
#: added to every run with a launcher when CUDA is absent.
CPU_DIST_OPTIONS = [
    "env_cfg.dist_cfg.backend=gloo",
    "model_wrapper_cfg.type=MMDistributedDataParallel",
    "model_wrapper_cfg.device_ids=None",
    "model_wrapper_cfg.broadcast_buffers=False",
    "model_wrapper_cfg.find_unused_parameters=False",
]


def _mim_command(config: Path, work_dir: Path, *, resume: bool, load_from: Path | None,
                 cfg_options: list[str], launcher: str, gpus: int,
                 auto_scale_lr: bool = False) -> list[str]:
    mim = str(Path(sys.executable).parent / "mim")
    cmd = [mim, "train", "mmdet", str(config), "--work-dir", str(work_dir)]
    if auto_scale_lr:
        cmd.append("--auto-scale-lr")
    if launcher != "none":
        cmd += ["--launcher", launcher, "--gpus", str(gpus)]
    if resume:
        cmd.append("--resume")
    opts = list(cfg_options)
    if load_from is not None and not resume:
        opts.append(f"load_from={load_from}")
    if opts:
        cmd += ["--cfg-options", *opts]
    return cmd


def train_folds(config: str | Path, folds: list[int], *, work_root: str | Path = "work_dirs",
                data_root: str | None = None, cfg_options: list[str] | None = None,
                launcher: str = "none", gpus: int = 1, auto_scale_lr: bool = False,
                dry_run: bool = False, quiet: bool = False) -> list[dict]:
    """Train each fold through the config's phase chain; returns one record per phase run."""
    chain = phase_chain(config)
    cfg_options = list(cfg_options or [])
    if launcher != "none":
        import torch

        if not torch.cuda.is_available():
            cfg_options = CPU_DIST_OPTIONS + cfg_options
    env = dict(os.environ)
    if data_root is not None:
        env["IMAT_DATA_ROOT"] = data_root if data_root.endswith("/") else data_root + "/"
    records = []
    for fold in folds:
        env["IMAT_FOLD"] = str(fold)
        previous: Path | None = None
        for i, phase in enumerate(chain):
            work_dir = Path(work_root) / phase.name / f"fold{fold}"
            done = work_dir / DONE
            rec = {"fold": fold, "phase": phase.name, "work_dir": str(work_dir)}
            if done.exists():
                info = json.loads(done.read_text())
                previous = Path(info["checkpoint"])
                records.append({**rec, "status": "skipped (finished)", **info})
                if not quiet:
                    print(f"fold {fold} {phase.name}: finished before, skipped")
                continue
            resume = last_checkpoint(work_dir) is not None
            if i > 0 and previous is None:
                raise KitError(f"phase {phase.name} of fold {fold} needs the checkpoint of "
                               f"{chain[i - 1].name}, which did not finish")
            cmd = _mim_command(phase.config, work_dir, resume=resume,
                               load_from=previous if i > 0 else None,
                               cfg_options=cfg_options, launcher=launcher, gpus=gpus,
                               auto_scale_lr=auto_scale_lr)
            status = "resumed" if resume else "started"
            if not quiet or dry_run:
                print(f"fold {fold} {phase.name} ({status}): IMAT_FOLD={fold} {shlex.join(cmd)}",
                      flush=True)
            if dry_run:
                records.append({**rec, "status": "dry run", "command": cmd})
                previous = work_dir / "<its last checkpoint>"
                continue
            r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None)
            if r.returncode != 0:
                raise KitError(f"training fold {fold} phase {phase.name} failed with exit code "
                               f"{r.returncode}; its log is in {work_dir}; re-run the same "
                               "command to resume", file=str(phase.config))
            ckpt = last_checkpoint(work_dir)
            if ckpt is None:
                raise KitError(f"fold {fold} phase {phase.name} finished without a checkpoint "
                               f"in {work_dir}", file=str(phase.config))
            info = {"checkpoint": str(ckpt), "config": str(phase.config)}
            with atomic_open(done, "w") as f:
                json.dump(info, f, indent=2)
            previous = ckpt
            records.append({**rec, "status": status, **info})
    return records
