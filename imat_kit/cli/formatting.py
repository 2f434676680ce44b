"""What the command line and the demo print: tables and result lines, formatted from what the
steps return (the steps themselves print nothing)."""

from __future__ import annotations

from pathlib import Path

from imat_kit.eval.evaluate import REFERENCE_TABLE3, FoldTable


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
