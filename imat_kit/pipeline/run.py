"""``imat-kit run``: drive the steps of a run, each with its resume rule.

The order: prepare (when the data is not prepared) → train each (model, fold) → predict each
fold's validation images and the test set → fuse the models' validation predictions per fold
(more than one model) → evaluate (the fold table) → tune the attribute thresholds (attribute
models) → tune the post-processing on the out-of-fold predictions → fuse every test file →
submit with the tuned settings → validate → score (when the data has a ``test_solution.csv``,
as the synthetic sets do) → figures → report → manifest. Every step calls the function of its
own ``imat-kit`` command.

**Resume rules.** Training and prediction keep their own (``train``: a finished phase with the
same recorded settings is skipped, an interrupted one resumes from its last checkpoint, one
with other settings stops and names them unless ``--retrain``; ``predict``: a file made with
the same config, checkpoint (SHA-256), data and options is kept, a partial one is completed,
one made with other settings is predicted again and the run names what changed). Every later
step records what shaped it in ``RUN/.steps/STEP.json``: its settings and the SHA-256 of
every file it reads, and the SHA-256 of what it wrote. It is skipped when both are the same,
else it runs and the run names why (the first run, the inputs that changed, an output that
was removed or edited). So a second run with the same inputs runs nothing, a changed TTA
re-runs prediction and what follows it, and a killed run resumes where it stopped.

The run's files: ``RUN/work_dirs/MODEL/PHASE/foldK`` (training), ``RUN/predictions/MODEL/
foldK_{val,test}.jsonl``, ``RUN/predictions/ensemble/`` (fused), ``RUN/eval/`` (fold table,
tuned settings), the submission (``RUN/submission.csv`` unless named) with its manifest,
``RUN/figures/``, ``RUN/report.html``, ``RUN/run.log`` (every line of every step, the
commands the trainings ran) and ``RUN/manifest.json`` (configs, checkpoints with SHA-256,
settings, scores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imat_kit.errors import KitError
from imat_kit.files import atomic_open, file_fingerprint
from imat_kit.pipeline.schedule import Job, Outcome, run_jobs
from imat_kit.pipeline.spec import ModelSpec, RunSpec

STEPS_DIR = ".steps"
LOG = "run.log"
#: width of the step names in the terminal lines
NAME_WIDTH = 16


@dataclass
class StepReport:
    """How one step went: ``ran`` or ``skipped``, why, in how long, its headline figure."""

    name: str
    status: str
    why: str
    seconds: float
    headline: str


@dataclass(frozen=True)
class FoldFigures:
    """The fold table as the evaluate step records it: each fold's row, the mean and the std
    (records of the figures by column)."""

    rows: list[dict]
    mean: dict
    std: dict


@dataclass
class RunResult:
    """What a run did: each step's report, and each step's recorded result (JSON-able, as
    ``RUN/.steps/STEP.json`` holds it; what later steps read). The summaries read the typed
    views below."""

    out: Path
    steps: list[StepReport] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    @property
    def fold_table(self) -> FoldFigures:
        ev = self.results["evaluate"]
        return FoldFigures(rows=ev["rows"], mean=ev["mean"], std=ev["std"])

    @property
    def manifest(self) -> str:
        """The run's manifest file."""
        return self.results["manifest"]["manifest"]

    @property
    def report(self) -> str:
        """The run's HTML report."""
        return self.results["report"]["report"]

    def step(self, name: str) -> StepReport | None:
        """The report of the step ``name`` (None when the run has no such step)."""
        return next((s for s in self.steps if s.name == name), None)


class Run:
    """One run of a :class:`RunSpec`: its folders, its log and the steps' shared state."""

    def __init__(self, spec: RunSpec, *, retrain: bool = False, verbose: bool = False,
                 quiet: bool = False, echo: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.out = Path(spec.out)
        self.data = Path(spec.data)
        self.retrain, self.verbose, self.quiet = retrain, verbose, quiet
        self._echo = echo or (lambda _line: None)
        self.result = RunResult(self.out)
        self._shas: dict = {}
        #: (model name, fold) → the checkpoints predictions use
        self.checkpoints: dict[tuple[str, int], list[str]] = {}
        self.work_dirs: dict[tuple[str, int], Path] = {}
        #: the out-of-fold predictions with their truth, read once (steps.fold_runs)
        self.fold_runs: list | None = None

    # --- folders ---------------------------------------------------------------------------

    def pred(self, model: ModelSpec | str, fold: int, split: str) -> Path:
        name = model if isinstance(model, str) else model.name
        return self.out / "predictions" / name / f"fold{fold}_{split}.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.out / "eval"

    def oof_files(self) -> list[Path]:
        """The out-of-fold predictions the fold table and the tuning read: each fold's model
        fusion (several models) or the model's own files."""
        if len(self.spec.models) > 1:
            return [self.pred("ensemble", k, "val") for k in self.spec.folds]
        return [self.pred(self.spec.models[0], k, "val") for k in self.spec.folds]

    def test_files(self) -> list[Path]:
        return [self.pred(m, k, "test") for m in self.spec.models for k in self.spec.folds]

    # --- output ----------------------------------------------------------------------------

    def log(self, line: str) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / LOG, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def say(self, line: str) -> None:
        """A terminal line (also in the run's log)."""
        self.log(line)
        self._echo(line)

    def sha(self, path: str | Path) -> str:
        """A file's SHA-256, computed once per content (size and mtime) in this run."""
        p = Path(path)
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        if key not in self._shas:
            self._shas[key] = file_fingerprint(p)["sha256"]
        return self._shas[key]

    @property
    def devices(self) -> tuple[str, ...]:
        """The scheduler's slots: GPU ids, or ``cpu0``, ``cpu1``, … for CPU jobs at once."""
        if self.spec.gpus:
            return self.spec.gpus
        return tuple(f"cpu{i}" for i in range(self.spec.jobs)) if self.spec.jobs > 1 else ()

    def slot_env(self, device: str | None) -> dict | None:
        """What a job on ``device`` adds to its processes' environment: its GPU (a CPU slot:
        none), and its share of the cores. Jobs at once each with every core's worth of
        OpenMP threads spin against each other: measured 9.2 s per iteration of the tiny
        model, two jobs on 2 cores, against 1.5 with one thread each."""
        if device is None:
            return None
        threads = str(max(1, (os.cpu_count() or 1) // len(self.devices)))
        return {"CUDA_VISIBLE_DEVICES": "" if device.startswith("cpu") else device,
                "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def rel(self, path: str | Path) -> str:
        p = Path(path)
        try:
            return str(p.relative_to(self.out))
        except ValueError:
            return str(p)

    # --- a recorded step -------------------------------------------------------------------

    def step(self, name: str, inputs: dict, outputs: list[Path],
             work: Callable[[], tuple[str, dict]]) -> dict:
        """Run ``work`` (returning its headline and result) unless the step's record holds the
        same ``inputs`` and every output is as it wrote it; returns the result."""
        record_path = self.out / STEPS_DIR / f"{name}.json"
        old = json.loads(record_path.read_text()) if record_path.exists() else None
        why = _why(old, inputs, outputs, self)
        if why is None:
            self.report_step(name, "skipped", "same inputs as before", 0.0, old["headline"])
            self.result.results[name] = old["result"]
            return old["result"]
        self.say(f"{name:<{NAME_WIDTH}} started: {why}")
        t = time.perf_counter()
        headline, result = work()
        seconds = time.perf_counter() - t
        record = {"inputs": inputs, "outputs": {self.rel(p): self.sha(p) for p in outputs},
                  "headline": headline, "result": result}
        with atomic_open(record_path, "w") as f:
            json.dump(record, f, indent=1, default=str)
        self.report_step(name, "ran", why, seconds, headline)
        self.result.results[name] = result
        return result

    def report_step(self, name: str, status: str, why: str, seconds: float, headline: str) -> None:
        self.result.steps.append(StepReport(name, status, why, seconds, headline))
        if status == "skipped":
            self.say(f"{name:<{NAME_WIDTH}} skipped ({why}): {headline}")
        else:
            self.say(f"{name:<{NAME_WIDTH}} done in {_duration(seconds)}: {headline}")

    def files_in(self, paths: list[Path]) -> dict:
        """The SHA-256 of each input file, by its path (relative to the run)."""
        return {f"file {self.rel(p)}": self.sha(p) for p in paths}


def _why(old: dict | None, inputs: dict, outputs: list[Path], run: Run) -> str | None:
    """Why a step must run (None: it need not)."""
    if old is None:
        return "first run"
    recorded = old.get("inputs", {})
    if recorded != inputs:
        changed = []
        for k in sorted(set(recorded) | set(inputs)):
            a, b = recorded.get(k), inputs.get(k)
            if a == b:
                continue
            if k.startswith("file "):
                what = "new" if a is None else "no longer read" if b is None else "changed"
                changed.append(f"{k[5:]} {what}")
            else:
                changed.append(f"{k}: was {json.dumps(a, default=str)}, now "
                               f"{json.dumps(b, default=str)}")
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return "inputs changed: " + "; ".join(changed[:3]) + more
    for p in outputs:
        if not p.exists():
            return f"{run.rel(p)} is missing"
        if old.get("outputs", {}).get(run.rel(p)) != run.sha(p):
            return f"{run.rel(p)} was changed since the step wrote it"
    return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- training and prediction: the (model, fold) jobs -------------------------------------------


def _train_options(run: Run, model: ModelSpec) -> list[str]:
    return [*model.cfg_options, f"randomness.seed={run.spec.seed}"]


def _train(run: Run, model: ModelSpec, fold: int, device: str | None, slot: int | None
           ) -> dict:
    from imat_kit.mmdet_ext.predict import last_checkpoints
    from imat_kit.mmdet_ext.train import train_folds

    env = run.slot_env(device)
    recs = train_folds(model.config, [fold], work_root=run.out / "work_dirs" / model.name,
                       data_root=str(run.data), cfg_options=_train_options(run, model),
                       launcher=run.spec.launcher, gpus=run.spec.launcher_gpus,
                       auto_scale_lr=model.auto_scale_lr, amp=model.amp,
                       overwrite=run.retrain, verbose=run.verbose, quiet=run.quiet,
                       echo=run.log, env=env, overwrite_flag="--retrain", position=slot)
    last = recs[-1]
    work_dir = Path(last.work_dir)
    if model.checkpoints > 1:
        ckpts = [str(c) for c in last_checkpoints(work_dir, model.checkpoints)]
    elif model.checkpoint == "best":
        best = sorted(work_dir.glob("best_*.pth"), key=lambda p: p.stat().st_mtime)
        if not best:
            raise KitError("checkpoint: best, but the run kept no best_*.pth (its config's "
                           "default_hooks.checkpoint.save_best)", file=str(model.config),
                           value=str(work_dir))
        ckpts = [str(best[-1])]
    else:
        ckpts = [last.checkpoint]
    run.checkpoints[(model.name, fold)] = ckpts
    run.work_dirs[(model.name, fold)] = work_dir
    statuses = [r.status for r in recs]
    return {"statuses": statuses, "checkpoints": ckpts, "work_dir": str(work_dir)}


def _predict_kwargs(run: Run, model: ModelSpec, fold: int, split: str) -> dict:
    return dict(split=split, fold=fold, out=str(run.pred(model, fold, split)),
                data_root=str(run.data), tta=model.tta,
                tta_scales=list(model.tta_scales) if model.tta_scales else None,
                batch_size=model.batch_size, soft_size=model.soft_size,
                cfg_options=[*_train_options(run, model), *model.predict_options],
                overwrite=True, attribute_floor=model.attribute_floor)


def _predict(run: Run, model: ModelSpec, fold: int, split: str, device: str | None):
    kw = _predict_kwargs(run, model, fold, split)
    ckpts = run.checkpoints[(model.name, fold)]
    if device is None:
        from imat_kit.mmdet_ext.predict import predict, predict_checkpoints

        if len(ckpts) > 1:
            return predict_checkpoints(str(model.config), ckpts, quiet=run.quiet, **kw)
        return predict(str(model.config), ckpts[0], quiet=run.quiet, **kw)
    # a process per job: CUDA_VISIBLE_DEVICES chooses its GPU (a CPU job: its threads)
    log = run.out / "logs" / f"predict_{model.name}_fold{fold}_{split}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = log.with_suffix(".json")
    task = {"config": str(model.config), "checkpoints": ckpts, "kwargs": kw,
            "result": str(result)}
    env = {**os.environ, **run.slot_env(device)}
    with open(log, "a", encoding="utf-8") as f:
        code = subprocess.call([sys.executable, "-m", "imat_kit.pipeline.worker",
                                json.dumps(task)], env=env, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        from imat_kit.mmdet_ext.train import log_tail

        raise KitError(f"prediction failed with exit code {code}; the end of its log ({log}):"
                       f"\n{log_tail(log, 10)}")
    from imat_kit.mmdet_ext.predict import Predicted

    return Predicted(**json.loads(result.read_text()))


def model_jobs(run: Run) -> list[Job]:
    """Each (model, fold)'s training, then its validation and test predictions."""
    jobs = []
    slots = {d: i for i, d in enumerate(run.devices)}
    logs = run.out / "logs"
    for m in run.spec.models:
        for k in run.spec.folds:
            train_key = f"train {m.name} fold {k}"
            jobs.append(Job(train_key, lambda dev, m=m, k=k: _train(run, m, k, dev,
                                                                     slots.get(dev)),
                            log=logs / f"train_{m.name}_fold{k}.log"))
            for split in ("val", "test"):
                jobs.append(Job(f"predict {m.name} fold {k} {split}",
                                lambda dev, m=m, k=k, s=split: _predict(run, m, k, s, dev),
                                after=(train_key,),
                                log=logs / f"predict_{m.name}_fold{k}_{split}.log"))
    return jobs


def train_and_predict(run: Run) -> None:
    """The model jobs on the run's devices, with one line for the step (and, on several
    devices, one per job)."""
    jobs = model_jobs(run)
    parallel = len(run.devices) > 1
    n_train = sum(j.key.startswith("train") for j in jobs)
    run.say(f"{'train + predict':<{NAME_WIDTH}} started: {n_train} training run(s), "
            f"{len(jobs) - n_train} prediction file(s)"
            + (f" on GPUs {','.join(run.spec.gpus)}" if run.spec.gpus else
               f", {run.spec.jobs} at once on the CPU" if run.spec.jobs > 1 else ""))
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    def event(kind: str, o: Outcome) -> None:
        if kind == "start":
            times[o.key] = time.perf_counter()
            run.log(f"{o.key}: started" + (f" on {o.device}" if o.device else ""))
            return
        took = _duration(time.perf_counter() - times.get(o.key, time.perf_counter()))
        line = f"{o.key}: {kind}" + (f" in {took}" if kind != "blocked" else "") + (
            f" ({o.error})" if o.error else "")
        (run.say if parallel or kind != "done" else run.log)("  " + line)

    if parallel:  # what threads must not initialise at the same time (pkg_resources' set of
        # installed packages, which mmengine reads when it loads a config)
        from mmengine.utils import is_installed

        is_installed("mmdet")
    outcomes = run_jobs(jobs, run.devices, on_event=event)
    trained = [o.result for k, o in outcomes.items() if k.startswith("train")]
    predicted = [o.result for k, o in outcomes.items() if k.startswith("predict")]
    n_runs = sum(len(t["statuses"]) for t in trained)
    n_skipped = sum(s.startswith("skipped") for t in trained for s in t["statuses"])
    redone = [c for p in predicted for c in p.changed]
    now = sum(p.predicted_now for p in predicted)
    headline = (f"{n_runs - n_skipped} of {n_runs} training run(s) trained "
                f"({n_skipped} finished before with the same settings); "
                f"{now} image(s) predicted into {sum(p.predicted_now > 0 for p in predicted)}"
                f" of {len(predicted)} file(s)")
    if redone:
        headline += " (predicted again: " + "; ".join(sorted(set(redone))[:3]) + ")"
    status = "ran" if (n_runs - n_skipped) or now else "skipped"
    why = ("same settings and checkpoints as before" if status == "skipped"
           else "training or predictions to do")
    run.result.results["models"] = {
        "checkpoints": {f"{m}/fold{k}": c for (m, k), c in run.checkpoints.items()},
        "work_dirs": {f"{m}/fold{k}": str(w) for (m, k), w in run.work_dirs.items()}}
    run.report_step("train + predict", status, why, time.perf_counter() - t0, headline)
