"""What the command line and the demo print: tables and result lines, formatted from what the
steps return (the steps themselves print nothing)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from imat_kit.data.synth import SynthSummary
from imat_kit.ensemble import EnsembleSummary
from imat_kit.eval.evaluate import REFERENCE_TABLE3, FoldTable
from imat_kit.submission import SubmissionScore


def print_evaluation(table: FoldTable, average: str) -> None:
    """The fold table as ``imat-kit evaluate`` prints it."""
    frame = table.frame()
    show = frame[[c for c in ("fold", "segm_AP", "segm_AP50", "segm_AP75", "segm_APs",
                              "segm_APm", "segm_APl", "bbox_AP", "competition", "images")
                  if c in table.columns]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    m, sd = table.mean, table.std
    print(f"\nsegm AP {100 * m.segm_AP:.1f} ± {100 * sd.segm_AP:.1f}, AP50 {100 * m.segm_AP50:.1f},"
          f" AP75 {100 * m.segm_AP75:.1f}; competition score ({average}) "
          f"{m.competition:.4f} ± {sd.competition:.4f}")
    post = [c for c in table.columns if c.endswith("_post")]
    if post:
        cols = [c[: -len("_post")] for c in post]
        print("\nat the postprocess file's settings (beside the defaults; in-sample on the "
              "folds it was tuned on):")
        print(frame[["fold", *[x for c, p in zip(cols, post) for x in (c, p)
                               if x in table.columns]]].to_string(
            index=False, float_format=lambda v: f"{v:.4f}"))
    print("reference study (Matterport R50, 100 val images):")
    print(REFERENCE_TABLE3.to_string(index=False))


def print_attribute_figures(table: FoldTable) -> None:
    """The attribute columns of a fold table (when the predictions carried attributes)."""
    if "AP_iou_f1" not in table.columns:
        return
    m, sd = table.mean, table.std
    print(f"attributes: AP^IoU+F1 {100 * m.AP_iou_f1:.1f} ± {100 * sd.AP_iou_f1:.1f} "
          f"(AP^IoU {100 * m.AP_iou_fp:.1f}, AP^F1 {100 * m.AP_f1:.1f}; Fashionpedia's "
          f"definition); attribute micro F1 on matched instances {m.attr_micro_f1:.3f} vs "
          f"the per-category prior's {m.prior_micro_f1:.3f}")


def tune_lines(r: dict) -> list[str]:
    """What ``imat-kit tune`` prints: the settings, the scores, the honest figure."""
    st = r["settings"]
    cats = st["category_thr"]
    att = st["attributes"]
    dec = ("top-k per category" if att["decoding"] == "topk" else
           f"threshold {att['global_threshold']:g}"
           + (f" (+{len(att['per_attribute'])} per attribute)" if att["per_attribute"] else ""))
    out = [f"settings: score ≥ {st['score_thr']:g}"
           + (f" ({len(cats)} categories their own)" if cats else "")
           + f", ≤ {st['max_per_image']} per image, ≥ {st['min_area']} px, masks "
           + ("as stored" if st["mask_thr"] is None else f"at {st['mask_thr']:g}")
           + f", attributes: {dec}"
           + (", scores from the re-scorer" if st.get("rescore") else "")]
    sc = r["scores"]
    metric = r["metric"] + (" (TP/(TP+FP))" if r["metric"] == "competition2020"
                            and r.get("fn", "ignore") == "ignore" else
                            " (TP/(TP+FP+FN))" if r["metric"] == "competition2020" else "")
    out.append(f"{metric} on folds {r['folds']} (the data it was tuned on): "
               f"{sc['defaults']:.4f} at the defaults → {sc['tuned']:.4f} tuned")
    n = r["nested"]
    if n is not None:
        per = ", ".join(f"fold {p['fold']} {p['defaults']:.4f} → {p['nested']:.4f}"
                        for p in r["per_fold"])
        out.append(f"expected gain (each fold with settings tuned on the others): "
                   f"{n['gain']:+.4f} ± {n['gain_std']:.4f} ({n['defaults']:.4f} → "
                   f"{n['tuned']:.4f}; {per})")
        if "attr_micro_f1_tuned" in n:
            out.append(f"attribute micro F1, same nested folds: {n['attr_micro_f1_defaults']:.3f}"
                       f" at 0.5 → {n['attr_micro_f1_tuned']:.3f}")
    rs = r.get("rescoring")
    if rs and rs.get("nested"):
        out.append(f"re-scoring ({rs['model']['trees']} trees on {rs['predictions']} "
                   f"predictions' TP rates, {rs['seconds']:.1f} s): nested "
                   f"{rs['nested']['without']:.4f} without → {rs['nested']['with']:.4f} with "
                   f"({rs['nested']['gain']:+.4f} ± {rs['nested']['gain_std']:.4f}), "
                   + ("kept" if rs["kept"] else "left out"))
    for note in r["notes"]:
        out.append(f"note: {note}")
    s = r["search"]
    out.append(f"search: {s['evaluations']} settings scored in {s['seconds']:.1f} s "
               f"({s['iou_seconds']:.1f} s computing masks and IoUs)")
    return out


def threshold_lines(tuned: dict, labels, limit: int = 12) -> list[str]:
    """The tuned attributes of a thresholds file as lines of text, most frequent first."""
    rows = sorted(((int(a), v) for a, v in tuned["attributes"].items() if v["tuned"]),
                  key=lambda kv: -kv[1]["support"])
    names = {a["id"]: a["name"] for a in labels.attributes}
    out = [f"  {a:>4} {names.get(a, '?')[:28]:<28} threshold {v['threshold']:.3f}  support "
           f"{v['support']:>4}  F1 {v['f1']:.3f} (at {tuned['global_threshold']:g}: "
           f"{v['f1_at_global']:.3f})" for a, v in rows[:limit]]
    if len(rows) > limit:
        out.append(f"  … and {len(rows) - limit} more")
    return out


def demo_summary_lines(s: dict) -> list[str]:
    """The demo's closing lines, from its ``summary.json``."""
    out = [f"\n== done in {s['total_seconds'] / 60:.1f} min",
           f"validation segm AP (mean of folds {s['folds_trained']}): "
           f"{100 * s['val_segm_AP_mean']:.1f} (AP50 {100 * s['val_segm_AP50_mean']:.1f})",
           f"attributes: AP^IoU+F1 {100 * s['val_AP_iou_f1_mean']:.1f} (tuned thresholds from "
           f"the other folds: {100 * s['val_AP_iou_f1_tuned_mean']:.1f}); micro F1 "
           f"{s['val_attr_micro_f1_mean']:.3f} (tuned {s['val_attr_micro_f1_tuned_mean']:.3f}) "
           f"vs the per-category prior {s['val_prior_micro_f1_mean']:.3f}"]
    if s["val_score_tuned_nested_mean"] is not None:
        out.append(f"post-processing ({s['tune_metric']}): {s['val_score_defaults_mean']:.4f} at "
                   f"the defaults → {s['val_score_tuned_nested_mean']:.4f} with settings tuned "
                   f"on the other folds (gain {s['val_score_nested_gain']:+.4f} ± "
                   f"{s['val_score_nested_gain_std']:.4f}); attribute micro F1 "
                   f"{s['val_attr_micro_f1_nested_mean']:.3f}")
    if s.get("val_score_nested_with_rescore") is not None:
        out.append(f"re-scoring ({s['tune_metric']}, {s['tune_formula']}), each fold tuned on "
                   f"the others: {s['val_score_nested_without_rescore']:.4f} without → "
                   f"{s['val_score_nested_with_rescore']:.4f} with, "
                   + ("kept" if s["rescore_kept"] else "left out"))
    out.append(f"test competition score, {s['test_rule']} rule: ensemble "
               f"{s['test_competition_ensemble']:.4f}, single folds "
               + ", ".join(f"{v:.4f}" for v in s["test_competition_single_folds"])
               + (f"; masks and categories only {s['test_competition_masks_only']:.4f}"
                  if s["year"] == 2020 else ""))
    for key in ("data", "work_dirs", "predictions", "evaluation", "attribute_thresholds",
                "postprocess", "submission", "manifest", "figures", "report"):
        out.append(f"  {key:<12} {s[key]}")
    out.append(f"\nopen the report: {Path(s['report']).resolve()}")
    return out


def run_summary_lines(result) -> list[str]:
    """The closing table of ``imat-kit run``: the fold scores, the tuned gain, the test score
    where the data has a solution, the submission and the run's files."""
    table = result.fold_table
    out = ["", f"{'fold':<6}{'competition':>13}{'segm AP':>10}{'AP50':>8}"]
    for row in [*table.rows, {**table.mean, "fold": "mean"}, {**table.std, "fold": "std"}]:
        out.append(f"{row['fold']!s:<6}{row['competition']:>13.4f}{100 * row['segm_AP']:>10.1f}"
                   f"{100 * row['segm_AP50']:>8.1f}")
    for name in ("tune", "score", "submit"):
        step = result.step(name)
        if step is not None:
            out.append(f"{name:<8}{step.headline}")
    out.append(f"manifest {result.manifest}; report {result.report}")
    return out


def synth_line(s: SynthSummary, out, scale: str) -> str:
    """What ``imat-kit synth`` prints."""
    if scale == "full":
        return (f"wrote {out}/train.csv: {s.train_images:,} images, {s.rows:,} rows "
                "(full scale, no images)")
    if scale == "real":
        w, h = s.mean_size
        return (f"wrote {out}: {s.train_images} train images at real sizes (mean "
                f"{w:.0f} × {h:.0f}, the largest 10717 × 6824), {s.rows} instances, "
                f"{s.test_images} test images")
    return (f"wrote {out} ({s.year} layout): {s.train_images} train images ({s.rows} "
            f"instances, {s.attr_rows} with attributes), {s.test_images} test images")


def ensemble_line(r: EnsembleSummary, method: str, out: str) -> str:
    """What ``imat-kit ensemble`` prints (``out`` as the user named it)."""
    return f"{r.inputs} inputs → {r.images} images, {r.instances} instances ({method}) → {out}"


#: how each ``--fn`` choice is named in a score's line
FN_TEXT = {"ignore": "TP/(TP+FP)", "count": "TP/(TP+FP+FN)"}


def score_line(r: SubmissionScore, *, average: str, year: int, fn: str, f1: str, sweep: str,
               attributes: bool) -> str:
    """What ``imat-kit score`` prints: the score and the rule it was computed with."""
    rule = (f"2020 rule: {FN_TEXT[fn]}, IoU and attribute F1 ({f1}, {sweep} sweep)"
            if year == 2020 else f"attributes {'matched' if attributes else 'ignored'}")
    return (f"competition score ({average} average, {rule}): {r.score:.4f} over "
            f"{r.count} {'images' if average == 'image' else 'units'}")


def plot_lines(r, what: str, out: str) -> list[str]:
    """What ``imat-kit plot`` prints about what it drew (a :class:`imat_kit.plots.Drawn`)."""
    lines = []
    if r.images is not None:
        lines.append("images: " + " ".join(r.images))
    if r.points == 0:
        lines.append("no training loss logged yet: the figure says so")
    if r.attributes is not None:
        lines.append(f"{r.attributes} attributes with truth among the matched instances")
    return [*lines, f"{what} → {out}"]


def predicted_line(r) -> str:
    """What ``imat-kit predict`` prints of one file (an :class:`imat_kit.mmdet_ext.predict.
    Predicted`)."""
    if r.checkpoints > 1:
        return (f"{r.images} images ({r.predicted_now} predicted now) × {r.checkpoints} "
                f"checkpoints, fused → {r.out}")
    return f"{r.images} images ({r.predicted_now} predicted now) → {r.out}"


def phase_line(r) -> str:
    """What ``imat-kit train`` prints of one phase of one fold (an
    :class:`imat_kit.mmdet_ext.train.PhaseRun`)."""
    if r.command is not None:
        return (f"fold {r.fold} {r.phase} ({r.would_be}, dry run): IMAT_FOLD={r.fold} "
                + shlex.join(r.command))
    return f"fold {r.fold} {r.phase}: {r.status}" + (f" → {r.checkpoint}" if r.checkpoint
                                                     else "")


def prepare_lines(r: dict) -> list[str]:
    """What ``imat-kit prepare`` prints, from its report (``prepare_report.json``)."""
    out = Path(r["out"])
    b = r["balance"]
    lines = [f"{r['images']:,} images, {r['annotations']:,} instances ({r['layout']} layout, "
             f"{r['attributes']} attributes) → {out / 'annotations'}/all.json",
             f"{r['folds']} {r['split']} folds (seed {r['seed']}), images per fold "
             f"{r['images_per_fold']} → {out / 'folds.csv'}",
             f"category balance (images per fold): mean max relative deviation "
             f"{b['mean_max_rel_dev']:.4f}, worst {b['worst_max_rel_dev']:.4f} "
             f"({b['worst_category']}) → {out / 'fold_balance.csv'}"]
    if r["test_images"] is not None:
        lines.append(f"{r['test_images']} test images → {out / 'annotations'}/test.json")
    lines += [f"size fix: {fix}" for fix in r["size_fixes"]]
    if r["rejected_rows"]:
        lines.append(f"{r['rejected_rows']} row(s) left out, listed in "
                     f"{out / 'rejected_rows.csv'}")
    return lines


def stats_lines(s: dict, *, as_json: bool) -> list[str]:
    """What ``imat-kit stats`` prints: the counts and the tables, or (``as_json``) one JSON
    document."""
    cats = s["categories"]
    if as_json:
        out = {k: v for k, v in s.items() if k not in ("categories", "attributes")}
        out["categories"] = cats.to_dict(orient="records")
        out["attributes"] = s["attributes"].to_dict(orient="records")
        return [json.dumps(out, indent=2, default=int)]
    lines = [f"{s['rows']:,} instances on {s['images']:,} images ({s['layout']} layout); "
             f"{s['instances_per_image']['mean']:.2f} per image (max "
             f"{s['instances_per_image']['max']}); {s['rows_with_attributes']:,} rows with "
             "attributes",
             f"height {s['height']}, width {s['width']}; smallest {s['smallest'][0]}x"
             f"{s['smallest'][1]}, largest {s['largest'][0]}x{s['largest'][1]} (HxW)",
             cats.sort_values("instances", ascending=False).to_string(index=False)]
    if len(s["attributes"]):
        top = s["attributes"].sort_values("rows", ascending=False).head(15)
        lines += ["\nmost frequent attributes:", top.to_string(index=False)]
    return lines


def submitted_line(man: dict, written: Path) -> str:
    """What ``imat-kit submit`` prints of the CSV it wrote (from its manifest)."""
    return (f"{man['layout']} layout: {man['rows']} rows for {man['images']} images "
            f"({man['images_without_prediction']} without a mask) → {written}, manifest "
            f"{written.with_suffix('.json')}")


def tuned_attributes_line(r: dict, min_support: int, out) -> str:
    """What ``imat-kit tune-attributes`` prints in the end (from its tuning figures)."""
    tuned = [v for v in r["attributes"].values() if v["tuned"]]
    gain = sum(v["f1"] - v["f1_at_global"] for v in tuned) / max(len(tuned), 1)
    return (f"{len(tuned)} of {len(r['attributes'])} attributes with truth tuned (support >= "
            f"{min_support}) over {r['matched_instances']} matched instances of folds "
            f"{r['folds']}; mean F1 gain of the tuned ones {gain:+.3f}; global threshold "
            f"{r['global_threshold']:.3f}{' (tuned)' if r['global_tuned'] else ''}; micro F1 "
            f"{r['micro_f1_at_0.5']:.3f} at 0.5 → {r['micro_f1']:.3f} (on the folds it was "
            f"tuned on) → {out}")
