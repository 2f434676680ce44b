"""``imat-kit train``: train folds one after another, each through its chain of phases.

A config may name the config of its next phase in ``imat_next_phase`` (a path relative to the
config), which names it back in ``imat_previous_phase``: the reference recipe's "heads" run is
followed by the "all layers" run, which starts from the heads run's last checkpoint. Each
phase of each fold is one ``mim train`` run in its own work dir,
``WORK_ROOT/<config name>/fold<k>``, so a run on N GPUs (or a cluster) is an ordinary mmengine
run and DDP wraps the model once per phase with exactly the parameters it trains.

Re-running the same command resumes, but only a run made with the same settings: every phase
records what shaped it (``imat_run.json``: the resolved config with the options, the launcher,
the GPUs, the content hash of the fold's train and validation annotation files, the checkpoint
it starts from and that checkpoint's content hash). A finished phase
(``imat_done.json``) with the same record is skipped, an interrupted one resumes from its last
checkpoint (``--resume``), a new one starts (phase 2 from phase 1's last checkpoint). When the
record differs (another config value, more iterations, a retrained phase 1), the command names
what differs and stops; ``overwrite=True`` (``--overwrite``) deletes that phase's work dir and
trains it afresh.

What a run prints goes to ``WORK_ROOT/<config name>/fold<k>/train.log`` (mmengine's
environment block, the resolved config, a line per logging interval; mmengine also writes its
own log under a timestamped folder there). The terminal shows one progress bar per run
(iterations, ETA, the current loss) instead; ``verbose=True`` (``--verbose``) shows the whole
output live. A failed run's error carries the tail of its log and the log's path.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imat_kit.data.paths import ann_relpath
from imat_kit.errors import KitError
from imat_kit.files import atomic_open, describe_differences, file_fingerprint
from imat_kit.mmdet_ext.checks import check_training_config
from imat_kit.mmdet_ext.config import CONFIG_LOCK, data_root_env, flat_settings, load_config
from imat_kit.mmdet_ext.runner import last_checkpoint

DONE = "imat_done.json"
RECORD = "imat_run.json"
LOG = "train.log"
#: lines of a failed run's log shown in its error
LOG_TAIL = 30

#: third-party warnings hidden in the training subprocess: their deprecation notices (torch.jit,
#: pkg_resources) concern mmcv/mmdet/mmengine's code, not the user's
THIRD_PARTY_WARNINGS = ",".join([
    "ignore::DeprecationWarning", "ignore::FutureWarning",
    "ignore:pkg_resources is deprecated as an API:UserWarning",
])


@dataclass
class Phase:
    config: Path
    name: str


def phase_chain(config: str | Path) -> list[Phase]:
    """The config and the configs it chains to through ``imat_next_phase``; each next phase
    must name the one before as its ``imat_previous_phase``."""
    from mmengine.config import Config

    chain: list[Phase] = []
    path = Path(config)
    while True:
        if not path.exists():
            raise KitError("config not found", file=str(path))
        if any(p.config.resolve() == path.resolve() for p in chain):
            raise KitError("imat_next_phase chain loops back", file=str(path))
        with CONFIG_LOCK:
            cfg = Config.fromfile(str(path))
        prev = cfg.get("imat_previous_phase")
        if chain and (not prev or (path.parent / prev).resolve() != chain[-1].config.resolve()):
            raise KitError(f"this config follows {chain[-1].config.name} (its imat_next_phase) "
                           f"but names {prev!r} as its imat_previous_phase", file=str(path))
        chain.append(Phase(path, path.stem))
        nxt = cfg.get("imat_next_phase")
        if not nxt:
            return chain
        path = path.parent / nxt


#: mixed precision: mmengine's AmpOptimWrapper (autocast + dynamic loss scaling), per dtype
AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def amp_options(amp: str) -> list[str]:
    """The cfg-options that turn a config's optimizer wrapper into mmengine's
    ``AmpOptimWrapper`` with ``amp`` (``bf16`` or ``fp16``) autocasting."""
    if amp not in AMP_DTYPES:
        raise KitError(f"--amp must be one of {', '.join(AMP_DTYPES)}", value=amp)
    return ["optim_wrapper.type=AmpOptimWrapper", "optim_wrapper.loss_scale=dynamic",
            f"optim_wrapper.dtype={AMP_DTYPES[amp]}"]


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


_ITER = re.compile(r"Iter\(train\)\s*\[\s*(\d+)/(\d+)\]")
_EPOCH = re.compile(r"Epoch\(train\)\s*\[(\d+)\]\s*\[\s*(\d+)/(\d+)\]")
_LOSS = re.compile(r"\sloss: ([-+0-9.eE]+|nan|inf)")


def training_progress(line: str, max_epochs: int | None) -> tuple[int, int] | None:
    """``(iterations done, iterations in all)`` from one of mmengine's training log lines
    (``Iter(train) [ 20/360]`` or, epoch-based, ``Epoch(train) [2][ 50/500]``); ``None`` for
    any other line."""
    m = _ITER.search(line)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = _EPOCH.search(line)
    if m:
        epoch, it, per_epoch = map(int, m.groups())
        return (epoch - 1) * per_epoch + it, per_epoch * (max_epochs or epoch)
    return None


def log_tail(log: Path, lines: int = LOG_TAIL) -> str:
    """The last ``lines`` lines of a log file."""
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(text[-lines:])


def run_logged(cmd: list[str], env: dict, log: Path, *, desc: str,
               max_epochs: int | None = None, verbose: bool = False,
               quiet: bool = False, position: int | None = None) -> int:
    """Run a training command with its whole output appended to ``log``; on the terminal one
    progress bar (or, ``verbose``, the output itself, live). Returns the exit code."""
    from tqdm import tqdm

    log.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(desc=desc, total=None, unit="it", disable=quiet or verbose, dynamic_ncols=True,
               leave=False, mininterval=0.5, position=position)
    with open(log, "a", encoding="utf-8") as f, bar:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            if verbose and not quiet:
                sys.stdout.write(line)
                sys.stdout.flush()
            done = training_progress(line, max_epochs)
            if done is not None:
                bar.total = done[1]
                bar.update(done[0] - bar.n)
                loss = _LOSS.search(line)
                if loss:
                    bar.set_postfix_str(f"loss {float(loss.group(1)):.4f}", refresh=False)
        return proc.wait()


def run_record(phase: Phase, fold: int, *, data_root: str | None, cfg_options: list[str],
               launcher: str, gpus: int, auto_scale_lr: bool,
               start_checkpoint: Path | None) -> dict:
    """Everything that shapes a phase's run on a fold, as recorded in ``imat_run.json``."""
    cfg = load_config(phase.config, fold=fold, data_root=data_root, options=cfg_options)
    check_training_config(cfg)  # what the family cannot do: refused before any run starts
    settings = flat_settings(cfg)
    settings.update({"(launcher)": launcher, "(gpus)": gpus if launcher != "none" else 1,
                     "(auto_scale_lr)": auto_scale_lr})
    # the data too: regenerated or re-prepared files under the same path are another run
    root = Path(str(cfg.train_dataloader.dataset.data_root))
    for split in ("train", "val"):
        path = root / ann_relpath(split, fold)
        settings[f"({split} data sha256)"] = (file_fingerprint(path)["sha256"] if path.exists()
                                              else None)
    if start_checkpoint is not None:
        settings["load_from"] = str(start_checkpoint)
        settings["(start checkpoint sha256)"] = (
            file_fingerprint(start_checkpoint)["sha256"] if start_checkpoint.exists() else None)
    return {"config": str(phase.config), "fold": fold, "settings": settings}


def _reusable(work_dir: Path, record: dict, *, overwrite: bool,
              echo: Callable[[str], None], overwrite_flag: str = "--overwrite") -> bool:
    """Whether the work dir holds a run with exactly ``record``'s settings. A run with other
    settings is deleted (``overwrite``) or refused with what differs."""
    if not work_dir.exists() or not any(work_dir.iterdir()):
        return False
    path = work_dir / RECORD
    old = json.loads(path.read_text()) if path.exists() else None
    if old is not None and old.get("settings") == record["settings"]:
        return True
    diffs = (describe_differences(old["settings"], record["settings"]) if old is not None
             else ["the run has no record of its settings (imat_run.json)"])
    if not overwrite:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise KitError(f"{work_dir} holds a run made with other settings: {shown}. Pass "
                       f"{overwrite_flag} to delete it and train afresh, or use another "
                       "--work-root", file=record["config"])
    echo(f"{overwrite_flag}: deleting {work_dir} ({len(diffs)} setting(s) differ: "
         + "; ".join(diffs[:3]) + ")")
    shutil.rmtree(work_dir)
    return False


@dataclass(frozen=True)
class PhaseRun:
    """What ``train_folds`` did with one phase of one fold: ``status`` (started, resumed,
    skipped (finished), dry run), its work dir and last checkpoint; for a dry run, what it
    would be and the command it would run."""

    fold: int
    phase: str
    work_dir: str
    status: str
    checkpoint: str | None = None
    would_be: str | None = None
    command: list[str] | None = None


def train_folds(config: str | Path, folds: list[int], *, work_root: str | Path = "work_dirs",
                data_root: str | None = None, cfg_options: list[str] | None = None,
                launcher: str = "none", gpus: int = 1, auto_scale_lr: bool = False,
                amp: str | None = None, dry_run: bool = False, overwrite: bool = False,
                verbose: bool = False, quiet: bool = False,
                echo: Callable[[str], None] | None = None, env: dict | None = None,
                overwrite_flag: str = "--overwrite", position: int | None = None
                ) -> list[PhaseRun]:
    """Train each fold through the config's phase chain; returns one record per phase run.
    ``amp`` (``bf16``/``fp16``) trains with mixed precision (needs a CUDA GPU). ``echo``
    receives a line per decision (a run started, resumed, skipped or deleted); the command
    line passes ``print``. ``env`` adds variables to the runs' environment (``imat-kit run``
    sets ``CUDA_VISIBLE_DEVICES`` per job); ``overwrite_flag`` is the option that errors name
    (``run`` calls it ``--retrain``); ``position`` places the progress bar (one per device)."""
    echo = echo or (lambda _line: None)
    chain = phase_chain(config)
    cfg_options = list(cfg_options or [])
    if amp is not None:
        cfg_options += amp_options(amp)
        if not dry_run:
            import torch

            if not torch.cuda.is_available():
                raise KitError(f"--amp {amp} needs a CUDA GPU (mmengine's AmpOptimWrapper); "
                               "none is visible here")
    if launcher != "none":
        import torch

        if not torch.cuda.is_available():
            cfg_options = CPU_DIST_OPTIONS + cfg_options
    env = {**os.environ, **(env or {})}
    if data_root is not None:
        env["IMAT_DATA_ROOT"] = data_root_env(data_root)
    env.setdefault("PYTHONWARNINGS", THIRD_PARTY_WARNINGS)
    records = []
    for fold in folds:
        env["IMAT_FOLD"] = str(fold)
        previous: Path | None = None
        for i, phase in enumerate(chain):
            work_dir = Path(work_root) / phase.name / f"fold{fold}"
            done = work_dir / DONE
            rec = {"fold": fold, "phase": phase.name, "work_dir": str(work_dir)}  # PhaseRun
            if i > 0 and previous is None:
                raise KitError(f"phase {phase.name} of fold {fold} needs the checkpoint of "
                               f"{chain[i - 1].name}, which did not finish")
            record = run_record(phase, fold, data_root=data_root, cfg_options=cfg_options,
                                launcher=launcher, gpus=gpus, auto_scale_lr=auto_scale_lr,
                                start_checkpoint=previous if i > 0 else None)
            reuse = not dry_run and _reusable(work_dir, record, overwrite=overwrite, echo=echo,
                                              overwrite_flag=overwrite_flag)
            if reuse and done.exists():
                info = json.loads(done.read_text())
                previous = Path(info["checkpoint"])
                records.append(PhaseRun(**rec, status="skipped (finished)",
                                        checkpoint=info["checkpoint"]))
                echo(f"fold {fold} {phase.name}: finished before with the same settings, "
                     "skipped")
                continue
            resume = reuse and last_checkpoint(work_dir) is not None
            cmd = _mim_command(phase.config, work_dir, resume=resume,
                               load_from=previous if i > 0 else None,
                               cfg_options=cfg_options, launcher=launcher, gpus=gpus,
                               auto_scale_lr=auto_scale_lr)
            status = "resumed" if resume else "started"
            if dry_run:
                records.append(PhaseRun(**rec, status="dry run", would_be=status, command=cmd))
                previous = work_dir / "<its last checkpoint>"
                continue
            log = work_dir / LOG
            echo(f"fold {fold} {phase.name} ({status}): IMAT_FOLD={fold} {shlex.join(cmd)}\n"
                 f"  its output → {log}")
            work_dir.mkdir(parents=True, exist_ok=True)
            with atomic_open(work_dir / RECORD, "w") as f:
                json.dump(record, f, indent=1)
            code = run_logged(cmd, env, log, desc=f"fold {fold} {phase.name}",
                              max_epochs=record["settings"].get("train_cfg.max_epochs"),
                              verbose=verbose, quiet=quiet, position=position)
            if code != 0:
                raise KitError(f"training fold {fold} phase {phase.name} failed with exit code "
                               f"{code}; the end of its log ({log}):\n{log_tail(log)}\n"
                               "Re-run the same command to resume", file=str(phase.config))
            ckpt = last_checkpoint(work_dir)
            if ckpt is None:
                raise KitError(f"fold {fold} phase {phase.name} finished without a checkpoint "
                               f"in {work_dir}", file=str(phase.config))
            info = {"checkpoint": str(ckpt), "config": str(phase.config)}
            with atomic_open(done, "w") as f:
                json.dump(info, f, indent=2)
            previous = ckpt
            records.append(PhaseRun(**rec, status=status, checkpoint=str(ckpt)))
    return records
