"""The order of ``imat-kit run``'s steps (:mod:`~imat_kit.pipeline.run` has the rules each
follows, :mod:`~imat_kit.pipeline.steps` the steps after prediction), and the plan a dry run
prints."""

from __future__ import annotations

import json
from collections.abc import Callable

from imat_kit.files import json_fingerprint
from imat_kit.pipeline.run import Run, RunResult, model_jobs, train_and_predict
from imat_kit.pipeline.spec import RunSpec
from imat_kit.pipeline.steps import POST_STEPS, prepare_step


def plan(spec: RunSpec) -> list[str]:
    """What a run of ``spec`` would do, as lines (``imat-kit run --dry-run``): its folders,
    its (model, fold) jobs in order with their dependencies, and the steps after them."""
    run = Run(spec)
    lines = [f"run folder {spec.out}; data {spec.data}; folds "
             f"{', '.join(map(str, spec.folds))}; seed {spec.seed}"
             + (f"; GPUs {','.join(spec.gpus)} (one job each)" if spec.gpus else "")
             + (f"; {spec.jobs} jobs at once on the CPU" if spec.jobs > 1 else "")
             + (f"; launcher {spec.launcher} × {spec.launcher_gpus}"
                if spec.launcher != "none" else "")]
    for m in spec.models:
        extra = [f"{k}={v}" for k, v in (("tta", m.tta), ("checkpoints", m.checkpoints),
                                         ("checkpoint", m.checkpoint),
                                         ("soft_size", m.soft_size), ("weight", m.weight))
                 if v not in (None, 1, 1.0, 0, "last")]
        lines.append(f"model {m.name}: {m.config}" + (f" ({', '.join(extra)})" if extra
                                                      else ""))
    for j in model_jobs(run):
        lines.append(f"  job {j.key}" + (f" (after {', '.join(j.after)})" if j.after else ""))
    steps = ["fuse_val" if len(spec.models) > 1 else None, "evaluate",
             "tune_attributes (attribute models)", "tune",
             "ensemble" if len(run.test_files()) > 1 else None, "submit", "validate",
             "score (with a test_solution.csv)", "figures" if spec.figures else None,
             "report", "manifest"]
    lines.append("then: " + ", ".join(s for s in steps if s)
                 + f"; the submission: {spec.submission_path}")
    return lines


def run_pipeline(spec: RunSpec, *, retrain: bool = False, verbose: bool = False,
                 quiet: bool = False, echo: Callable[[str], None] | None = None,
                 before: Callable[[Run], None] | None = None) -> RunResult:
    """Run (or resume) every step of ``spec``; ``before`` runs first (the demo's synthetic
    data). Returns the steps' reports and results."""
    run = Run(spec, retrain=retrain, verbose=verbose, quiet=quiet, echo=echo)
    run.log(f"imat-kit run: {json_fingerprint(spec.describe())[:12]} "
            + json.dumps(spec.describe(), default=str))
    if before is not None:
        before(run)
    prepare_step(run)
    train_and_predict(run)
    for step in POST_STEPS:
        if step.applies(run):
            step.do(run)
    return run.result
