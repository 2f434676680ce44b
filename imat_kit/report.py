"""``imat-kit report``: one self-contained HTML file about a fold run.

Built from what ``evaluate`` computes, for deciding the next experiment: the fold table beside
the reference study, where the numbers came from (configs, checkpoints, thresholds, code
version), per-category AP beside each category's training instances, the TIDE error breakdown,
precision-recall curves, the confusion matrix, loss curves, a gallery of the worst and best
validation images, and per-attribute F1 when the predictions carry attributes.

Every figure is embedded in the page (``data:`` URIs; PNG, JPEG for the photographs); the page
loads no script, font or style from anywhere, so it opens offline, from a Kaggle notebook's
output, or as a mail attachment.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imat_kit import __version__
from imat_kit.errors import KitError
from imat_kit.eval.evaluate import REFERENCE_TABLE3, FoldTable, evaluate_files, read_fold_runs
from imat_kit.files import atomic_open
from imat_kit.postprocess import SCORE_THR

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
padding:1em 2em;color:#222;line-height:1.4}
h1{margin-bottom:0}h2{border-bottom:2px solid #3b75af;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:13px;margin:.6em 0;display:block;overflow-x:auto;
max-width:100%}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eef3f8}
td:first-child,th:first-child{text-align:left}
tr.summary td{font-weight:bold;background:#f6f6f6}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
.note{color:#666;font-size:13px}.mono{font-family:monospace;font-size:12px}
nav a{margin-right:1em}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    mime = "jpeg" if path.suffix == ".jpg" else "png"
    return f'<img alt="{html.escape(alt)}" src="data:image/{mime};base64,{data}">'


def _counts(column: object) -> bool:
    """Columns of counts, shown without decimals."""
    name = str(column)
    return name in ("images", "rows", "support", "tp", "fp", "fn", "training instances") \
        or name.startswith("# ")


def _table(df: pd.DataFrame, *, floats: str = "{:.4f}", summary_rows: tuple = ()) -> str:
    cols = list(df.columns)
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols) + "</tr>"]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float) and v == v and v.is_integer() and _counts(c):
                text = str(int(v))
            elif isinstance(v, float):
                text = "–" if v != v else floats.format(v)
            else:
                text = html.escape(str(v))
            cells.append(f"<td>{text}</td>")
        cls = ' class="summary"' if str(r[cols[0]]) in summary_rows else ""
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _provenance(heads: dict[str, dict], manifest: dict | None) -> str:
    rows = []
    for f, h in heads.items():
        rows.append({"fold": h.get("fold"), "predictions": Path(f).name,
                     "config": h.get("config", "–"), "checkpoint": h.get("checkpoint", "–"),
                     "checkpoint sha256": str(h.get("checkpoint_sha256") or "–")[:12],
                     "tta": h.get("tta") or "none", "soft size": h.get("soft_size") or "–",
                     "cfg options": " ".join(h.get("cfg_options") or []) or "–"})
    parts = ["<h3>Validation predictions</h3>", _table(pd.DataFrame(rows))]
    if manifest:
        t = manifest.get("thresholds", {})
        src = manifest.get("source", {}) or {}
        inputs = src.get("inputs") or ([src] if src else [])
        parts += ["<h3>Submission</h3>", _table(pd.DataFrame([{
            "file": manifest.get("submission"), "rows": manifest.get("rows"),
            "images": manifest.get("images"),
            "without a mask": manifest.get("images_without_prediction"),
            "code version": manifest.get("code_version"),
            **{k.replace("_", " "): v for k, v in t.items()}}]))]
        if inputs:
            weights = src.get("weights") or [1.0] * len(inputs)
            parts.append(_table(pd.DataFrame([{
                "input": Path(str(i.get("file", "–"))).name, "split": i.get("split"),
                "weight": float(w), "config": i.get("config", "–"),
                "checkpoint": i.get("checkpoint", "–"), "tta": i.get("tta") or "none"}
                for i, w in zip(inputs, weights)]), floats="{:.2f}"))
    return "\n".join(parts)


#: the fold table's attribute columns, shown in the attributes section
ATTRIBUTE_COLUMNS = ("AP_iou_f1", "AP_iou_f1_50", "AP_iou_fp", "AP_f1", "attr_micro_f1",
                     "prior_micro_f1")


def _tuned_folds(path: str | Path | None) -> list[int]:
    """The folds a thresholds file was tuned on (none for no file)."""
    if path is None:
        return []
    from imat_kit.data.readers import read_json
    from imat_kit.fields import is_int

    try:
        d = read_json(path, what="thresholds file")
    except (KitError, OSError):
        return []
    folds = d.get("folds") if isinstance(d, dict) else None
    return [k for k in folds if is_int(k)] if isinstance(folds, list) else []


def _post_section(table: pd.DataFrame, cols: list[str], content: dict, file: str) -> str:
    """The fold figures at the tuned post-processing settings beside the defaults, and the
    file's honest (nested) figure."""
    pairs = []
    for c in cols:
        base = c[: -len("_post")] if c.endswith("_post") else None
        if base and base in table.columns:
            pairs += [base, c]
        elif c not in pairs:
            pairs.append(c)
    n = content.get("nested")
    honest = (f"settings tuned on the other folds gain <b>{n['gain']:+.4f}</b> ± "
              f"{n['gain_std']:.4f} ({html.escape(content['metric'])}, {n['defaults']:.4f} → "
              f"{n['tuned']:.4f}: the expected gain on unseen data)" if n else
              "tuned on one fold: no honest (nested) figure exists")
    return (f"<h3>At the tuned post-processing settings</h3><p>{html.escape(file)}: {honest}. "
            "The columns ending <code>_post</code> are on the folds the settings were tuned "
            "on (in-sample).</p>" + _table(table[["fold", *pairs]], summary_rows=("mean", "std")))


@dataclass(frozen=True)
class ReportSummary:
    """What ``build_report`` wrote: the page, its sections, the fold table, the error
    breakdown per fold, and the gallery's worst and best images."""

    out: str
    sections: list[str]
    table: FoldTable
    errors: pd.DataFrame
    worst: list[str]
    best: list[str]


@dataclass
class ReportData:
    """Everything the report shows, computed once; each section renders a part of it."""

    data: Path
    labels: object
    runs: list
    table: FoldTable
    cats: pd.DataFrame  # per-category AP per fold
    train_counts: dict[int, int]
    attr_names: dict[int, str]
    tide: dict[str, dict]  # error breakdown per fold
    worst: pd.DataFrame
    best: pd.DataFrame
    thresholds: object
    attribute_thresholds: str | Path | None
    post_file: dict | None
    postprocess: str | Path | None
    manifest: dict | None
    work_dirs: list | None
    average: str
    score_thr: float
    segm: dict  # fold → its whole segm COCO result (the precision-recall curves)

    @property
    def folds(self) -> list[tuple[int, list]]:
        return [(r.fold, r.preds) for r in self.runs]

    @property
    def gts(self) -> dict[int, dict]:
        return {r.fold: r.gt for r in self.runs}


def collect_report(data: str | Path, predictions: list[str], *,
                   work_dirs: list[str | Path] | None = None,
                   submission: str | Path | None = None, gallery: int = 6,
                   average: str = "image", score_thr: float = SCORE_THR,
                   attribute_thresholds: str | Path | None = None, quiet: bool = True,
                   postprocess: str | Path | None = None) -> ReportData:
    """Read the folds' predictions once and compute every table the report shows."""
    from imat_kit.data.paths import find_labels, read_ann
    from imat_kit.eval.analysis import error_breakdown, image_scores
    from imat_kit.postprocess import apply_thresholds, load_thresholds
    from imat_kit.progress import progress

    data = Path(data)
    if not predictions:
        raise KitError("the report needs validation predictions (one file per fold)")
    labels = find_labels(data)
    thresholds = load_thresholds(attribute_thresholds, labels)
    post, post_file = None, None
    if postprocess is not None:
        from imat_kit.postprocess import load_postprocess

        post, post_file = load_postprocess(postprocess, labels)
    runs = read_fold_runs(data, predictions)
    runs = [r.with_preds(apply_thresholds(r.preds, thresholds)) for r in runs]
    segm: dict = {}
    table, cats = evaluate_files(data, predictions, average=average, score_thr=score_thr,
                                 runs=runs, thresholds=thresholds, postprocess=post, bbox=True,
                                 segm=segm)
    cats.insert(0, "category", [labels.class_names[i] for i in cats.index])
    manifest = None
    if submission is not None:
        from imat_kit.data.readers import read_json

        manifest = read_json(Path(submission).with_suffix(".json"), what="submission manifest")
    all_gt = read_ann(data, "all")
    train_counts: dict[int, int] = {}
    for a in all_gt["annotations"]:
        train_counts[a["category_id"]] = train_counts.get(a["category_id"], 0) + 1

    tide, scored = {}, []
    for run in progress(runs, desc="report: error analysis", quiet=quiet, unit="fold"):
        tide[f"fold {run.fold}"] = error_breakdown(run.gt, run.preds)
        s = image_scores(run.gt, run.preds, score_thr=score_thr)
        s.insert(0, "fold", run.fold)
        scored.append(s)
    scores = pd.concat(scored, ignore_index=True).sort_values(["score", "fold", "image_key"],
                                                              kind="stable")
    n = min(gallery, len(scores) // 2) if len(scores) > 1 else len(scores)
    return ReportData(
        data=data, labels=labels, runs=runs, table=table, cats=cats, train_counts=train_counts,
        attr_names={a["id"]: a["name"] for a in all_gt.get("attributes", [])}, tide=tide,
        worst=scores.head(n), best=scores.tail(n).iloc[::-1], thresholds=thresholds,
        attribute_thresholds=attribute_thresholds, post_file=post_file, postprocess=postprocess,
        manifest=manifest, work_dirs=work_dirs, average=average, score_thr=score_thr,
        segm=segm)


def _folds_section(r: ReportData, tmp: Path) -> str:

    table, mean = r.table.frame(), r.table.mean
    out = [f'<h2>Fold table</h2><p>{len(r.runs)} fold(s), '
           f'{int(r.table.rows.images.sum())} validation images. segm AP '
           f'<b>{100 * mean.segm_AP:.1f}</b> ± {100 * r.table.std.segm_AP:.1f}, '
           f'competition score ({html.escape(r.average)} average, score ≥ {r.score_thr:g})'
           f' <b>{mean.competition:.4f}</b>.</p>']
    attr_cols = [c for c in ATTRIBUTE_COLUMNS if c in table.columns]
    post_cols = [c for c in table.columns if c.endswith("_post") or c == "competition2020"]
    out.append(_table(table.drop(columns=["file", *attr_cols, *post_cols]),
                      summary_rows=("mean", "std")))
    if r.post_file is not None:
        out.append(_post_section(table, post_cols, r.post_file, str(r.postprocess)))
    out.append("<p class='note'>The reference study (Matterport Mask R-CNN R50, COCO weights, "
               "real data, AP on 100 validation images), for scale:</p>")
    out.append(_table(REFERENCE_TABLE3, floats="{:.1f}"))
    return "".join(out)


def _provenance_section(r: ReportData, tmp: Path) -> str:
    return "<h2>Provenance</h2>" + _provenance({run.file: run.head for run in r.runs}, r.manifest)


def _categories_section(r: ReportData, tmp: Path) -> str:
    from imat_kit import plots

    plots.plot_category_ap(r.cats, r.train_counts, tmp / "cat.png")
    weakest = r.cats.dropna(subset=["mean"]).sort_values("mean").head(10)
    weak = pd.DataFrame({"category": [f"{i} {c}" for i, c in zip(weakest.index,
                                                                 weakest.category)],
                         "segm AP": weakest["mean"].to_numpy(),
                         "training instances": [r.train_counts.get(int(i), 0)
                                                for i in weakest.index]})
    weak_html = ("<h3>The ten weakest categories</h3>" + _table(weak) if len(weak) else
                 "<p class='note'>No category has an AP yet (nothing was predicted).</p>")
    return ("<h2>Per-category AP</h2>"
            + _img(tmp / "cat.png", "per-category AP and training instances") + weak_html)


def _errors_section(r: ReportData, tmp: Path) -> str:
    from imat_kit import plots
    from imat_kit.eval.analysis import ERROR_NAMES, ERROR_TYPES

    plots.plot_error_breakdown(r.tide, tmp / "tide.png")
    et = pd.DataFrame([{"fold": name, "mask AP50": e["AP50"],
                        **{f"dAP {ERROR_NAMES[t]}": e["dAP"][t] for t in ERROR_TYPES},
                        **{f"# {ERROR_NAMES[t]}": e["counts"][t] for t in ERROR_TYPES}}
                       for name, e in r.tide.items()])
    return ("<h2>Error breakdown (TIDE)</h2><p class='note'>"
            "Each false positive is a classification error (IoU ≥ 0.5 with a truth of another "
            "category), a localisation error (0.1–0.5 with its own category), both, a "
            "duplicate, or background (IoU ≤ 0.1); a truth no detection explains is missed. "
            "dAP: the mask AP50 points (TIDE's 101-point AP) fixing every error of that type "
            "alone would add.</p>"
            + _img(tmp / "tide.png", "TIDE error breakdown") + _table(et, floats="{:.2f}"))


def _curves_section(r: ReportData, tmp: Path) -> str:
    from imat_kit import plots

    k0, p0 = r.folds[0]
    gt0 = r.gts[k0]
    plots.plot_pr_curves(r.segm[k0], tmp / "pr.png",
                         f"Precision-recall, fold {k0} validation")
    names = r.labels.class_names
    plots.plot_confusion(plots.confusion_matrix(gt0, p0, len(names), score_thr=r.score_thr),
                         names, tmp / "cm.png")
    curves = [_img(tmp / "pr.png", "precision-recall curves"),
              _img(tmp / "cm.png", "confusion matrix")]
    if r.work_dirs:
        plots.plot_losses(r.work_dirs, tmp / "loss.png", [Path(w).name for w in r.work_dirs])
        curves.insert(0, _img(tmp / "loss.png", "loss curves"))
    return "<h2>Curves</h2>" + "".join(curves)


def _gallery_section(r: ReportData, tmp: Path) -> str:
    from imat_kit import plots
    from imat_kit.data.paths import image_dir

    preds, gts = dict(r.folds), r.gts
    gal = ["<h2>Gallery</h2><p class='note'>Validation images by their own competition "
           "score; truth on the left, prediction on the right, each instance labelled with its "
           "category.</p>"]
    for title, sel in (("Worst", r.worst), ("Best", r.best)):
        gal.append(f"<h3>{title} {len(sel)}</h3>")
        for k, group in sel.groupby("fold", sort=False):
            png = tmp / f"gallery_{title}_{k}.jpg"
            plots.plot_overlays(gts[k], preds[k], image_dir(r.data, "val"), png,
                                image_keys=group.image_key.tolist(), score_thr=r.score_thr,
                                titles={g.image_key: f"fold {k}, score {g.score:.3f}"
                                        for g in group.itertuples()})
            gal.append(_img(png, f"{title.lower()} validation images of fold {k}"))
    return "".join(gal)


def _attributes_section(r: ReportData, tmp: Path) -> str:
    from imat_kit import plots
    from imat_kit.eval.attr_eval import attribute_table, micro_f1

    with_attr = [run for run in r.runs if run.attributes]
    f1 = (attribute_table(with_attr, r.labels, r.thresholds, score_thr=r.score_thr)
          if with_attr else pd.DataFrame())
    if not len(f1):
        return "<h2>Attributes</h2><p class='note'>The predictions carry no attributes.</p>"
    plots.plot_attribute_f1(f1, r.attr_names, tmp / "attr.png",
                            title="matched instances, all folds")
    top = f1.sort_values("support", ascending=False).head(15)[
        ["attribute_id", "name", "support", "precision", "recall", "f1",
         "prior_precision", "prior_recall", "prior_f1", "threshold"]]
    where = ("thresholds of " + html.escape(str(r.attribute_thresholds))
             if r.attribute_thresholds else "a global threshold of 0.5")
    tuned_on = set(_tuned_folds(r.attribute_thresholds)) & {run.fold for run in r.runs}
    if tuned_on:
        where += (", tuned on fold(s) " + ", ".join(map(str, sorted(tuned_on)))
                  + " shown here: a flattering figure")
    mean = r.table.mean
    attr_cols = [c for c in ATTRIBUTE_COLUMNS if c in r.table.columns]
    return ("<h2>Attributes</h2>"
            f"<p>Fashionpedia's AP<sup>IoU+F1</sup> <b>{100 * mean.AP_iou_f1:.1f}</b> "
            f"(AP<sup>IoU</sup> {100 * mean.AP_iou_fp:.1f}, AP<sup>F1</sup> "
            f"{100 * mean.AP_f1:.1f}); attribute micro F1 over matched instances "
            f"<b>{micro_f1(f1):.3f}</b> against the per-category prior's "
            f"{micro_f1(f1, 'prior_'):.3f} ({where}).</p>"
            + _table(r.table.frame()[["fold", *attr_cols]], summary_rows=("mean", "std"))
            + _img(tmp / "attr.png", "attribute F1 against support")
            + _table(top, floats="{:.3f}"))


#: the report's sections in page order: (anchor, renderer)
SECTION_RENDERERS: tuple[tuple[str, Callable[[ReportData, Path], str]], ...] = (
    ("folds", _folds_section), ("provenance", _provenance_section),
    ("categories", _categories_section), ("errors", _errors_section),
    ("curves", _curves_section), ("gallery", _gallery_section),
    ("attributes", _attributes_section),
)
SECTIONS = tuple(name for name, _ in SECTION_RENDERERS)


def render_report(r: ReportData) -> str:
    """The report's HTML page: every section rendered, its figures embedded."""
    with tempfile.TemporaryDirectory() as tmp:
        body = [f'<section id="{name}">{render(r, Path(tmp))}</section>'
                for name, render in SECTION_RENDERERS]
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>imat-kit report</title><style>{_CSS}</style></head><body>"
            f"<h1>imat-kit report</h1><p class='note'>data <span class='mono'>"
            f"{html.escape(str(r.data))}</span> · made {dt.datetime.now():%Y-%m-%d %H:%M} by "
            f"imat-kit {__version__}</p><nav>{nav}</nav>" + "\n".join(body) + "</body></html>")


def build_report(data: str | Path, predictions: list[str], out: str | Path, *,
                 work_dirs: list[str | Path] | None = None,
                 submission: str | Path | None = None, gallery: int = 6,
                 average: str = "image", score_thr: float = SCORE_THR,
                 attribute_thresholds: str | Path | None = None, quiet: bool = True,
                 postprocess: str | Path | None = None) -> ReportSummary:
    """Write the report to ``out`` (atomically); returns what it holds (``sections``, the fold
    table, the error breakdown per fold, the gallery's images). ``attribute_thresholds`` (a
    ``tune-attributes`` file) cuts the attribute probabilities (default a global 0.5);
    ``postprocess`` (an ``imat-kit tune`` file) adds the fold figures at its settings beside
    the defaults, with its nested cross-fold figure."""
    r = collect_report(data, predictions, work_dirs=work_dirs, submission=submission,
                       gallery=gallery, average=average, score_thr=score_thr,
                       attribute_thresholds=attribute_thresholds, quiet=quiet,
                       postprocess=postprocess)
    page = render_report(r)
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return ReportSummary(out=str(out), sections=list(SECTIONS), table=r.table, errors=r.tide,
                         worst=r.worst.image_key.tolist(), best=r.best.image_key.tolist())
