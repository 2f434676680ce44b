"""The steps of ``imat-kit run`` after training and prediction, each the function of its own
``imat-kit`` command, each recorded (:meth:`~imat_kit.pipeline.run.Run.step`): what it read,
with which settings, and what it wrote."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imat_kit.errors import KitError
from imat_kit.eval.evaluate import FoldTable
from imat_kit.files import atomic_open
from imat_kit.pipeline.run import Run
from imat_kit.postprocess import SCORE_THR

#: the demo's figures (file name → the ``imat-kit plot`` figure)
FIGURES = {"loss_curves.png": "losses", "pr_curves.png": "pr",
           "confusion_matrix.png": "confusion", "overlays.jpg": "overlays",
           "category_distribution.png": "categories", "attribute_f1.png": "attributes"}


@dataclass(frozen=True)
class PostStep:
    name: str
    applies: Callable[[Run], bool]
    do: Callable[[Run], dict]


def _always(_run: Run) -> bool:
    return True


# --- prepare ---------------------------------------------------------------------------------


def _raw_file(data: Path) -> Path | None:
    for name in ("train.csv", "instances_attributes_train2020.json"):
        if (data / name).is_file():
            return data / name
    return None


def prepare_step(run: Run) -> None:
    """Prepare the data unless it is: prepared by this run with the same input file and
    options (skipped), or prepared before by hand (used as it is)."""
    from imat_kit.data.prepare import prepare

    spec, data = run.spec, run.data
    report = data / "prepare_report.json"
    raw = _raw_file(data)
    recorded = (run.out / ".steps" / "prepare.json").exists()
    if report.exists() and not recorded:
        rep = json.loads(report.read_text())
        run.report_step("prepare", "skipped", "the data was prepared before",
                    0.0, f"{rep['folds']} {rep['split']} folds (seed {rep['seed']}) in {data}")
    else:
        if raw is None:
            raise KitError("the data folder holds neither train.csv nor a Fashionpedia "
                           "instances_attributes_train2020.json", file=str(data))

        def work() -> tuple[str, dict]:
            r = prepare(data, n_folds=spec.prepare_folds, split=spec.prepare_split,
                        seed=spec.seed, quiet=run.quiet)
            return (f"{r['images']:,} images, {r['annotations']:,} instances, {r['folds']} "
                    f"{r['split']} folds (seed {r['seed']})", {})

        run.step("prepare", {**run.files_in([raw]), "folds": spec.prepare_folds,
                             "split": spec.prepare_split, "seed": spec.seed},
                 [report, data / "annotations" / "all.json"], work)
    n = json.loads(report.read_text())["folds"]
    if max(spec.folds) >= n:
        raise KitError(f"the data is prepared with {n} folds; the run asks for fold "
                       f"{max(spec.folds)}", file=str(report), value=list(spec.folds))


# --- shared inputs ---------------------------------------------------------------------------


def fold_runs(run: Run) -> list:
    """The out-of-fold predictions with their truth, read once per run."""
    from imat_kit.eval.runs import read_fold_runs

    if run.fold_runs is None:
        run.fold_runs = read_fold_runs(run.data, [str(p) for p in run.oof_files()])
    return run.fold_runs


def labels(run: Run):
    from imat_kit.data.paths import find_labels

    return find_labels(run.data)


def test_input(run: Run) -> Path:
    files = run.test_files()
    return files[0] if len(files) == 1 else run.out / "predictions" / "test_ensemble.jsonl"


def _attribute_model(run: Run) -> bool:
    from imat_kit.predictions import read_header

    first = run.pred(run.spec.models[0], run.spec.folds[0], "val")
    return bool(read_header(first).get("attribute_model"))


def _thresholds(run: Run) -> Path | None:
    path = run.eval_dir / "attribute_thresholds.json"
    return path if _attribute_model(run) else None


def _done_files(run: Run) -> list[Path]:
    """Each training's record of its finished last phase (its checkpoint, small to hash)."""
    from imat_kit.mmdet_ext.train import DONE

    return [Path(w) / DONE for w in run.work_dirs.values()]


def _table_result(table: FoldTable) -> dict:
    rows, mean, std = table.records(drop=("file",))
    return {"rows": rows, "mean": mean, "std": std}


# --- the steps -------------------------------------------------------------------------------


def _fuse_val(run: Run) -> dict:
    from imat_kit.ensemble import ensemble_files

    s = run.spec
    files = {k: [run.pred(m, k, "val") for m in s.models] for k in s.folds}
    outs = [run.pred("ensemble", k, "val") for k in s.folds]

    def work() -> tuple[str, dict]:
        for k, out in zip(s.folds, outs):
            ensemble_files(files[k], out, method=s.ensemble_method, iou=s.ensemble_iou,
                           weights=[m.weight for m in s.models], data=run.data,
                           quiet=run.quiet, scores=s.ensemble_scores)
        return (f"{len(s.models)} models fused on each of {len(s.folds)} folds' validation "
                "images", {})

    return run.step("fuse_val", {**run.files_in([f for fs in files.values() for f in fs]),
                                 **_ensemble_settings(run)}, outs, work)


def _ensemble_settings(run: Run) -> dict:
    s = run.spec
    return {"method": s.ensemble_method, "iou": s.ensemble_iou, "scores": s.ensemble_scores,
            "weights": {m.name: m.weight for m in s.models}}


def _evaluate(run: Run) -> dict:
    from imat_kit.eval.evaluate import evaluate_to

    s = run.spec
    per_model = len(s.models) > 1
    outs = [run.eval_dir / "evaluation.csv", run.eval_dir / "per_category_ap.csv"]
    if per_model:
        outs += [run.eval_dir / "models" / m.name / "evaluation.csv" for m in s.models]
    inputs = run.files_in(run.oof_files()) | (
        run.files_in([run.pred(m, k, "val") for m in s.models for k in s.folds])
        if per_model else {})

    def work() -> tuple[str, dict]:
        table, _ = evaluate_to(run.data, [str(p) for p in run.oof_files()], run.eval_dir,
                               runs=fold_runs(run), bbox=True)
        result = _table_result(table)
        if per_model:
            result["models"] = {}
            for m in s.models:
                t, _ = evaluate_to(run.data, [str(run.pred(m, k, "val")) for k in s.folds],
                                   run.eval_dir / "models" / m.name)
                result["models"][m.name] = _table_result(t)
        mean, std = result["mean"], result["std"]
        head = (f"competition {mean['competition']:.4f} ± {std['competition']:.4f}, segm AP "
                f"{100 * mean['segm_AP']:.1f} (mean of folds "
                f"{', '.join(map(str, s.folds))})")
        if per_model:
            head += "; single models: " + ", ".join(
                f"{n} {r['mean']['competition']:.4f}" for n, r in result["models"].items())
        return head, result

    return run.step("evaluate", {**inputs, "bbox": True, "score_thr": SCORE_THR}, outs, work)


def _tune_attributes(run: Run) -> dict:
    from imat_kit.eval.attr_eval import tune_thresholds, write_thresholds
    from imat_kit.eval.evaluate import attribute_columns
    from imat_kit.postprocess import thresholds_from

    out = run.eval_dir / "attribute_thresholds.json"

    def work() -> tuple[str, dict]:
        runs, lab = fold_runs(run), labels(run)
        ids = list(lab.attribute_id_list)
        tuned = tune_thresholds(runs, ids)
        write_thresholds(tuned, out, lab, run.data)
        cross = []
        for r in runs:  # each fold scored with thresholds tuned on the others
            others = [o for o in runs if o is not r] or [r]
            cross.append(attribute_columns(r, lab, thresholds_from(tune_thresholds(others,
                                                                                   ids))))
        cross_mean = {k: sum(c[k] for c in cross) / len(cross) for k in cross[0]}
        n_tuned = sum(v["tuned"] for v in tuned["attributes"].values())
        return (f"{n_tuned} attributes tuned; with thresholds from the other folds: "
                f"AP^IoU+F1 {100 * cross_mean['AP_iou_f1']:.1f}, attribute micro F1 "
                f"{cross_mean['attr_micro_f1']:.3f} (prior {cross_mean['prior_micro_f1']:.3f})",
                {"n_tuned": n_tuned, "cross_folds": cross_mean})

    return run.step("tune_attributes", {**run.files_in(run.oof_files()), "min_support": 10},
                    [out], work)


def tuning_table(tuned: dict):
    """Per fold: the tuned metric at the defaults, with settings tuned on the other folds
    (the honest figure; also without the re-scorer where it was kept) and on every fold
    (in-sample); mean and std rows."""
    import pandas as pd

    rows = [{"fold": str(p["fold"]), "defaults": p["defaults"],
             "tuned_on_other_folds": p.get("nested", float("nan")),
             "without_rescore_other_folds": p.get("nested_without_rescore",
                                                  p.get("nested", float("nan"))),
             "tuned_in_sample": p["tuned_in_sample"],
             "attr_micro_f1_defaults": p.get("attr_micro_f1_defaults", float("nan")),
             "attr_micro_f1_other_folds": p.get("attr_micro_f1_nested", float("nan"))}
            for p in tuned["per_fold"]]
    return FoldTable.of(pd.DataFrame(rows)).frame()


def tune_metric(run: Run) -> str:
    return run.spec.tune_metric or ("competition2020" if labels(run).year == 2020
                                    else "competition")


def _tune(run: Run) -> dict:
    from imat_kit.postprocess import write_postprocess
    from imat_kit.tune.nested import tune

    s = run.spec
    metric = tune_metric(run)
    pp_file, table_file = run.eval_dir / "postprocess.json", run.eval_dir / "tuning.csv"

    def work() -> tuple[str, dict]:
        tuned = tune(fold_runs(run), labels(run), metric=metric, quiet=run.quiet,
                     data=run.data, rescore=s.tune_rescore, seed=s.seed,
                     min_support=s.tune_min_support, fn=s.tune_fn)
        write_postprocess(tuned, pp_file)
        with atomic_open(table_file, "w", newline="") as f:
            tuning_table(tuned).to_csv(f, index=False, float_format="%.4f")
        n = tuned.get("nested")
        head = (f"{metric}: {n['defaults']:.4f} at the defaults → {n['tuned']:.4f} with settings "
                f"tuned on the other folds (gain {n['gain']:+.4f} ± {n['gain_std']:.4f})"
                if n else f"{metric}: tuned on one fold (no honest figure without another fold)")
        return head, {"metric": metric}

    return run.step("tune", {**run.files_in(run.oof_files()), "metric": metric,
                             "rescore": s.tune_rescore, "seed": s.seed,
                             "min_support": s.tune_min_support, "fn": s.tune_fn},
                    [pp_file, table_file], work)


def _ensemble(run: Run) -> dict:
    from imat_kit.ensemble import ensemble_files

    s = run.spec
    out = test_input(run)

    def work() -> tuple[str, dict]:
        weights = [m.weight for m in s.models for _ in s.folds]
        r = ensemble_files(run.test_files(), out, method=s.ensemble_method, iou=s.ensemble_iou,
                           weights=weights, data=run.data, quiet=run.quiet,
                           scores=s.ensemble_scores)
        return (f"{r.inputs} test files ({len(s.models)} model(s) × {len(s.folds)} folds) "
                f"→ {r.images} images, {r.instances} instances", {})

    return run.step("ensemble", {**run.files_in(run.test_files()), **_ensemble_settings(run)},
                    [out], work)


def _submit(run: Run) -> dict:
    from imat_kit.submission import submit

    sub = run.spec.submission_path
    pp_file, evaluation = run.eval_dir / "postprocess.json", run.eval_dir / "evaluation.csv"
    sample = run.data / "sample_submission.csv"

    def work() -> tuple[str, dict]:
        man, problems = submit(test_input(run), run.data, sub, evaluation=evaluation,
                               postprocess=pp_file, manifest={"data": str(run.data),
                                                              "run": str(run.out)},
                               quiet=run.quiet)
        if problems:
            raise KitError("the submission failed validation: "
                           + "; ".join(map(str, problems[:5])), file=str(sub))
        return (f"{man['rows']} rows for {man['images']} images ({man['layout']} layout) → "
                f"{sub}", {"rows": man["rows"], "images": man["images"]})

    return run.step("submit", {**run.files_in([test_input(run), pp_file, evaluation, sample]),
                               "submission": str(sub)},
                    [sub, sub.with_suffix(".json")], work)


def _validate(run: Run) -> dict:
    from imat_kit.data.paths import sample_image_ids, test_image_sizes
    from imat_kit.submission import validate_submission

    sub = run.spec.submission_path

    def work() -> tuple[str, dict]:
        problems = validate_submission(sub, sample_image_ids(run.data),
                                       test_image_sizes(run.data, quiet=run.quiet),
                                       labels(run))
        if problems:
            raise KitError(f"{len(problems)} problem(s), the first: {problems[0]}",
                           file=str(sub))
        return f"{sub}: valid", {"problems": 0}

    return run.step("validate", run.files_in([sub, run.data / "sample_submission.csv"]), [],
                    work)


def _has_solution(run: Run) -> bool:
    return (run.data / "test_solution.csv").is_file()


def _score(run: Run) -> dict:
    from imat_kit.submission import score_submission, submit

    s = run.spec
    sub, solution = s.submission_path, run.data / "test_solution.csv"
    pp_file = run.eval_dir / "postprocess.json"
    year = labels(run).year
    singles = {f"{m.name}/fold{k}": (run.pred(m, k, "test"),
                                     run.eval_dir / "single" / f"{m.name}_fold{k}.csv")
               for m in s.models for k in s.folds}

    def score(path: Path, y: int = year, quiet: bool = True) -> float:
        return score_submission(path, solution, run.data, year=y, quiet=quiet).score

    def work() -> tuple[str, dict]:
        ens = score(sub, quiet=run.quiet)
        masks = score(sub, 2019) if year == 2020 else ens  # the 2019 rule: masks, categories
        single = {}
        for key, (pred, own) in singles.items():  # each fold model's own submission
            submit(pred, run.data, own, postprocess=pp_file, quiet=True)
            single[key] = score(own)
        rule = "2020 (IoU + attribute F1)" if year == 2020 else "2019 (categories)"
        head = (f"test score ({rule} rule) {ens:.4f}; each fold model alone: "
                + ", ".join(f"{v:.4f}" for v in single.values()))
        return head, {"rule": rule, "ensemble": ens, "masks_only": masks, "single": single}

    return run.step("score", {**run.files_in([sub, solution, pp_file,
                                              *[p for p, _ in singles.values()]]),
                              "year": year}, [o for _, o in singles.values()], work)


def _figures(run: Run) -> dict:
    from imat_kit.plots import make_plot

    s = run.spec
    figs = run.out / "figures"
    thr = _thresholds(run)
    wanted = {n: w for n, w in FIGURES.items() if w != "attributes" or thr is not None}
    val0 = run.oof_files()[0]
    work_dirs = [run.work_dirs[(m.name, k)] for m in s.models for k in s.folds]
    names = [f"{m.name} fold {k}" if len(s.models) > 1 else f"fold {k}"
             for m in s.models for k in s.folds]

    def work() -> tuple[str, dict]:
        for name, what in wanted.items():
            kw = dict(data=run.data, predictions=val0)
            if what == "losses":
                kw = dict(work_dirs=work_dirs, labels=names)
            elif what == "categories":
                kw = dict(data=run.data)
            elif what == "overlays":
                kw.update(n=6, seed=s.seed, attribute_thresholds=thr)
            elif what == "attributes":
                kw.update(attribute_thresholds=thr)
            make_plot(what, figs / name, **kw)
        return f"{len(wanted)} figures → {figs}", {}

    inputs = run.files_in([val0, *_done_files(run), *([thr] if thr else [])])
    return run.step("figures", {**inputs, "seed": s.seed},
                    [figs / n for n in wanted], work)


def _report(run: Run) -> dict:
    from imat_kit.report import build_report

    s = run.spec
    out = run.out / "report.html"
    thr, pp = _thresholds(run), run.eval_dir / "postprocess.json"
    work_dirs = [run.work_dirs[(m.name, k)] for m in s.models for k in s.folds]
    sub = s.submission_path

    def work() -> tuple[str, dict]:
        build_report(run.data, [str(p) for p in run.oof_files()], out, work_dirs=work_dirs,
                     submission=sub, attribute_thresholds=thr, postprocess=pp,
                     quiet=run.quiet)
        return f"→ {out}", {"report": str(out)}

    inputs = run.files_in([*run.oof_files(), sub, sub.with_suffix(".json"), pp,
                           *_done_files(run), *([thr] if thr else [])])
    return run.step("report", inputs, [out], work)


def _manifest(run: Run) -> dict:
    """``RUN/manifest.json``: the spec, each config (SHA-256), each fold model's checkpoints
    (SHA-256, from its predictions' headers: the files they were made with), every
    predictions file (SHA-256), the tuned settings, the scores and the submission."""
    from imat_kit.predictions import read_header

    s = run.spec
    out = run.out / "manifest.json"
    sub = s.submission_path
    pp = run.eval_dir / "postprocess.json"
    preds = [run.pred(m, k, sp) for m in s.models for k in s.folds for sp in ("val", "test")]
    files = [sub, sub.with_suffix(".json"), pp, run.eval_dir / "evaluation.csv", *preds,
             *run.oof_files(), *([test_input(run)] if len(run.test_files()) > 1 else []),
             *[Path(m.config) for m in s.models],
             *([run.data / "test_solution.csv"] if _has_solution(run) else [])]

    def work() -> tuple[str, dict]:
        models = []
        for m in s.models:
            folds = {}
            for k in s.folds:
                h = read_header(run.pred(m, k, "val"))
                ckpts = h.get("checkpoints") or [{"checkpoint": h.get("checkpoint"),
                                                  "sha256": h.get("checkpoint_sha256")}]
                folds[str(k)] = {"work_dir": run.rel(run.work_dirs[(m.name, k)]),
                                 "checkpoints": ckpts}
            models.append({"name": m.name, "config": str(m.config),
                           "config_sha256": run.sha(m.config), "folds": folds})
        r = run.result.results
        tuned = json.loads(pp.read_text())  # read once: its settings and its figures
        content = {
            "format": "imat-kit-run", "spec": s.describe(), "models": models,
            "files": {run.rel(p): run.sha(p) for p in dict.fromkeys(files)},
            "settings": {"postprocess": tuned.get("settings"),
                         "postprocess_sha256": run.sha(pp)},
            "scores": {"folds": r["evaluate"], "tune": _json_safe(
                {k: tuned.get(k) for k in ("metric", "fn", "nested", "groups_kept", "rescoring")}),
                       "test": r.get("score")},
            "submission": {"path": str(sub), "sha256": run.sha(sub),
                           "manifest": str(sub.with_suffix(".json"))},
            "steps": [st.name for st in run.result.steps]}
        with atomic_open(out, "w") as f:
            json.dump(_json_safe(content), f, indent=1, allow_nan=False)
        return f"→ {out}", {"manifest": str(out)}

    return run.step("manifest", {**run.files_in(files),
                                 "spec": json.dumps(s.describe(), sort_keys=True, default=str)},
                    [out], work)



def _json_safe(v):
    """NaN and infinities as None (JSON has neither)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


POST_STEPS = (
    PostStep("fuse_val", lambda r: len(r.spec.models) > 1, _fuse_val),
    PostStep("evaluate", _always, _evaluate),
    PostStep("tune_attributes", _attribute_model, _tune_attributes),
    PostStep("tune", _always, _tune),
    PostStep("ensemble", lambda r: len(r.test_files()) > 1, _ensemble),
    PostStep("submit", _always, _submit),
    PostStep("validate", _always, _validate),
    PostStep("score", _has_solution, _score),
    PostStep("figures", lambda r: r.spec.figures, _figures),
    PostStep("report", _always, _report),
    PostStep("manifest", _always, _manifest),
)
