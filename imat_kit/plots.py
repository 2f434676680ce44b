"""Every figure of the kit (PNG, matplotlib, headless): loss curves, precision-recall curves,
confusion matrix, ground-truth/prediction overlays, the category distribution.

A figure with too little to draw (a run that logged no training loss yet, nothing predicted)
still gets written, showing what exists and saying on the chart what is missing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pycocotools import mask as mask_util

from imat_kit.data.masks import pair_ious, score_order
from imat_kit.errors import KitError
from imat_kit.eval.matching import greedy_pairs
from imat_kit.files import atomic_open
from imat_kit.postprocess import SCORE_THR


def _save(fig, out: str | Path) -> None:
    """PNG, or JPEG (quality 85) for a ``.jpg`` name: photographs compress 10× better."""
    jpeg = Path(out).suffix.lower() in (".jpg", ".jpeg")
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="jpeg" if jpeg else "png", dpi=110,
                    **({"pil_kwargs": {"quality": 85}} if jpeg else {}))
    plt.close(fig)


def read_scalars(work_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """Train and validation entries of an mmengine work dir (``*/vis_data/scalars.json``, all
    runs in time order). Each entry gets ``x``: the training iteration it belongs to (a
    validation entry: the last training iteration logged before it)."""
    files = sorted(Path(work_dir).glob("*/vis_data/scalars.json"))
    if not files:
        raise KitError("no mmengine logs (*/vis_data/scalars.json) in the work dir",
                       file=str(work_dir))
    train, val, last = [], [], 0
    for f in files:
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                d = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue  # a line torn by a killed run
            if not isinstance(d, dict):
                continue
            if "coco/segm_mAP" in d or "val_loss" in d or "coco/bbox_mAP" in d:
                val.append({**d, "x": last})
            elif "loss" in d:
                last = int(d.get("iter", d.get("step", last + 1)))
                train.append({**d, "x": last})
    return train, val


def moving_average(y: np.ndarray, k: int) -> np.ndarray:
    """Mean of each window of ``k`` values (``len(y) - k + 1`` values; none when ``y`` is
    shorter than ``k``)."""
    y = np.asarray(y, dtype=np.float64)
    if k < 1 or len(y) < k:
        return np.zeros(0)
    c = np.cumsum(np.concatenate(([0.0], y)))
    return (c[k:] - c[:-k]) / k


def plot_losses(work_dirs: list[str | Path], out: str | Path,
                labels: list[str] | None = None) -> int:
    """Train loss (moving average) and validation loss per work dir; validation segm AP on a
    second axis. Returns the number of training-loss points drawn (0: the chart says so and
    shows the validation points alone, by validation round, their iteration being unknown)."""
    fig, ax = plt.subplots(figsize=(9, 5))
    ax2 = ax.twinx()
    drawn = shown = 0
    runs = [(labels[i] if labels else Path(wd).name, *read_scalars(wd))
            for i, wd in enumerate(work_dirs)]
    by_round = not any(train for _, train, _ in runs)
    for i, (name, train, val) in enumerate(runs):
        colour = f"C{i % 10}"
        x = np.array([t["x"] for t in train])
        y = np.array([t["loss"] for t in train])
        k = max(1, len(y) // 50)
        smooth = moving_average(y, k)
        if len(smooth):
            ax.plot(x[k - 1:], smooth, "-" if len(smooth) > 1 else "o", color=colour,
                    label=f"{name} train loss")
        drawn += len(smooth)
        vx = (np.arange(1, len(val) + 1) if by_round else [v["x"] for v in val])
        vl = [(xv, v["val_loss"]) for xv, v in zip(vx, val) if "val_loss" in v]
        if vl:
            ax.plot(*zip(*vl), "o--", color=colour, label=f"{name} val loss")
        ap = [(xv, v["coco/segm_mAP"]) for xv, v in zip(vx, val) if "coco/segm_mAP" in v]
        if ap:
            ax2.plot(*zip(*ap), "s:", color=colour, alpha=0.7, label=f"{name} val segm AP")
        shown += len(vl) + len(ap)
    if not drawn:
        ax.text(0.5, 0.96, "no training loss logged yet", ha="center", va="top",
                transform=ax.transAxes)
    ax.set_xlabel("validation round" if by_round else "iteration")
    ax.set_ylabel("loss")
    ax2.set_ylabel("segm AP")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    if drawn + shown:
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
    ax.set_title("Loss curves")
    fig.tight_layout()
    _save(fig, out)
    return drawn


def plot_pr_curves(ev: dict, out: str | Path, title: str = "") -> None:
    """Precision-recall per IoU threshold (mean over categories), from :func:`metric.coco_eval`."""
    fig, ax = plt.subplots(figsize=(7, 5))
    if "pr_curves" not in ev:  # nothing predicted: say so on an empty chart
        ax.text(0.5, 0.5, "nothing was predicted", ha="center", va="center")
        ev = {**ev, "pr_curves": [], "iou_thresholds": [], "recall_points": []}
    cmap = plt.get_cmap("viridis")
    for t, (thr, prec) in enumerate(zip(ev["iou_thresholds"], ev["pr_curves"])):
        ap = np.nanmean(prec)
        ax.plot(ev["recall_points"], prec, color=cmap(t / len(ev["iou_thresholds"])),
                label=f"IoU {thr:.2f} (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if len(ev["pr_curves"]):
        ax.legend(fontsize=7)
    ax.set_title(title or f"Precision-recall (segm AP {ev['AP']:.3f})")
    fig.tight_layout()
    _save(fig, out)


def confusion_matrix(gt_coco: dict, preds: dict, n_classes: int = 46, iou: float = 0.5,
                     score_thr: float = SCORE_THR) -> np.ndarray:
    """(C+1)×(C+1) counts, rows = truth, columns = prediction, index C = background. Each
    truth is matched (greedy by score, mask IoU ≥ ``iou``, any class) to at most one
    prediction; unmatched truths count as background predictions, unmatched predictions as
    background truths."""
    cm = np.zeros((n_classes + 1, n_classes + 1), dtype=np.int64)
    by_img: dict[int, list] = {}
    for a in gt_coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    for im in gt_coco["images"]:
        gts = by_img.get(im["id"], [])
        p = preds.get(im["image_key"])
        keep = np.flatnonzero(p.scores >= score_thr) if p is not None else np.zeros(0, int)
        keep = keep[score_order(p.scores[keep])] if keep.size else keep
        g_lab = [a["category_id"] for a in gts]
        rles = p.rles() if keep.size else []
        ious = pair_ious([rles[j] for j in keep], [a["segmentation"] for a in gts])
        hits = dict(greedy_pairs(ious, iou))
        free = np.ones(len(gts), dtype=bool)
        for r, j in enumerate(keep.tolist()):
            hit = hits.get(r, -1)
            if hit >= 0:
                free[hit] = False
                cm[g_lab[hit], int(p.labels[j])] += 1
            else:
                cm[n_classes, int(p.labels[j])] += 1
        for gi in np.flatnonzero(free):
            cm[g_lab[gi], n_classes] += 1
    return cm


def plot_confusion(cm: np.ndarray, names: tuple[str, ...], out: str | Path) -> None:
    """Row-normalised confusion matrix (each truth row sums to 1)."""
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    labels = [f"{i} {n[:18]}" for i, n in enumerate(names)] + ["background"]
    fig, ax = plt.subplots(figsize=(13, 12))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix (mask IoU ≥ 0.5, rows normalised)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    _save(fig, out)


def category_colour(cat: int) -> np.ndarray:
    """A fixed colour (RGB 0–1) per category, the same in every figure: hues spread by the
    golden ratio, so the 46 categories get 46 distinct colours."""
    from matplotlib.colors import hsv_to_rgb

    return hsv_to_rgb((((cat * 0.618034) % 1.0), 0.8, 0.95 if cat % 2 else 0.7))


def _ink(col: np.ndarray) -> str:
    """Black or white text, whichever reads better on ``col``."""
    return "black" if float(np.dot(col, [0.299, 0.587, 0.114])) > 0.6 else "white"


def _draw(ax, img: np.ndarray, masks: list[np.ndarray], cats: list[int], labels: list[str],
          title: str) -> None:
    """The image with each instance outlined and lightly filled in its category's colour, a
    label at the top-left of each instance."""
    overlay = img.copy()
    for m, c in zip(masks, cats):
        col = category_colour(c)
        overlay[m] = 0.78 * overlay[m] + 0.22 * col
        overlay[_outline(m)] = col
    ax.imshow(overlay)
    for m, c, text in zip(masks, cats, labels):
        ys, xs = np.nonzero(m)
        if not ys.size:
            continue
        col = category_colour(c)
        ax.text(xs.min(), ys.min(), text, fontsize=6, color=_ink(col), va="bottom",
                bbox=dict(facecolor=col, alpha=0.85, pad=1, linewidth=0))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _attr_text(attrs, attr_names: dict | None) -> str:
    if not attrs:
        return ""
    shown = [attr_names.get(a, str(a)) if attr_names else str(a) for a in attrs][:3]
    return " [" + ", ".join(shown) + (", …" if len(attrs) > 3 else "") + "]"


def plot_overlays(gt_coco: dict, preds: dict, image_dir: str | Path, out: str | Path, *,
                  image_keys: list[str] | None = None, n: int = 6, seed: int = 0,
                  score_thr: float = SCORE_THR, titles: dict[str, str] | None = None) -> list[str]:
    """Truth and prediction side by side for chosen (or ``n`` random) images: every instance
    outlined in its category's colour and labelled with its category name (and attributes when
    they are known; predictions with their score), and a legend of the categories drawn.
    Returns the image keys drawn."""
    from matplotlib.patches import Patch
    from PIL import Image

    by_key = {im["image_key"]: im for im in gt_coco["images"]}
    names = {c["id"]: c["name"] for c in gt_coco.get("categories", [])}
    attr_names = {a["id"]: a["name"] for a in gt_coco.get("attributes", [])}
    if image_keys is None:
        keys = sorted(by_key)
        rng = np.random.default_rng(seed)
        image_keys = [keys[i] for i in rng.choice(len(keys), min(n, len(keys)), replace=False)]
    missing = [k for k in image_keys if k not in by_key]
    if missing:
        raise KitError(f"image(s) not in the set: {missing[:3]}")
    anns: dict[int, list] = {}
    for a in gt_coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    if not image_keys:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no images to draw", ha="center", va="center")
        _save(fig, out)
        return []
    fig, axes = plt.subplots(len(image_keys), 2, figsize=(9, 4.2 * len(image_keys) + 0.6),
                             squeeze=False)
    seen: set[int] = set()
    for row, key in zip(axes, image_keys):
        im = by_key[key]
        with Image.open(Path(image_dir) / im["file_name"]) as f:
            img = np.asarray(f.convert("RGB"), dtype=np.float32) / 255
        g = anns.get(im["id"], [])
        gm = [mask_util.decode(a["segmentation"]).astype(bool) for a in g]
        gc = [int(a["category_id"]) for a in g]
        gl = [names.get(c, str(c)) + _attr_text(a.get("attribute_ids"), attr_names)
              for c, a in zip(gc, g)]
        p = preds.get(key)
        keep = [j for j in range(len(p)) if p.scores[j] >= score_thr] if p is not None else []
        pm = [mask_util.decode(p.rles()[j]).astype(bool) for j in keep]
        pc = [int(p.labels[j]) for j in keep]
        pl = [f"{names.get(c, str(c))} {p.scores[j]:.2f}"
              + _attr_text(p.attributes[j] if p.attributes else (), attr_names)
              for c, j in zip(pc, keep)]
        head = (titles or {}).get(key, key[:20])
        _draw(row[0], img, gm, gc, gl, f"{head}: truth, {len(gm)} instances")
        _draw(row[1], img, pm, pc, pl, f"prediction, {len(pm)} with score ≥ {score_thr:g}")
        seen.update(gc + pc)
    handles = [Patch(color=category_colour(c), label=f"{c} {names.get(c, '')}"[:30])
               for c in sorted(seen)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7,
                   frameon=False)
    fig.tight_layout(rect=(0, 0.12 / len(image_keys) if handles else 0, 1, 1))
    _save(fig, out)
    return image_keys


def _outline(m: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels of ``m`` within ``width`` of its border."""
    inner = m.copy()
    for _ in range(width):
        inner[1:-1, 1:-1] &= (inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2]
                              & inner[1:-1, 2:])
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
    return m & ~inner


def plot_category_distribution(per_cat, out: str | Path) -> None:
    """Horizontal bar chart of instances per category (log scale), most frequent on top;
    ``per_cat`` is the ``categories`` table of :func:`imat_kit.data.stats.dataset_stats`."""
    d = per_cat.sort_values("instances")
    fig, ax = plt.subplots(figsize=(8, 10))
    ax.barh([f"{i} {n[:28]}" for i, n in zip(d["category_id"], d["name"])],
            np.maximum(d["instances"], 0.5), color="#3b75af")
    ax.set_xscale("log")
    ax.set_xlabel("instances (log scale)")
    ax.set_title(f"Category distribution: {int(d['instances'].sum()):,} instances")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    _save(fig, out)


PLOTS = ("losses", "pr", "confusion", "overlays", "categories", "attributes")
#: what each figure is made from
PLOT_INPUTS = {"losses": ("work_dirs",), "categories": ("data",), "pr": ("data", "predictions"),
               "confusion": ("data", "predictions"), "overlays": ("data", "predictions"),
               "attributes": ("data", "predictions")}


@dataclass(frozen=True)
class Drawn:
    """What ``make_plot`` drew, per figure: ``points`` (losses: logged points), ``curves`` and
    ``iou_thresholds`` (pr: the mean precision at the 101 recall points per IoU threshold),
    ``matrix`` (confusion: counts, truth × prediction, the last row and column the
    background), ``images`` (overlays: the ImageIds), ``attributes`` (attributes with truth
    among the matched instances); a field a figure does not produce is None."""

    points: int | None = None
    curves: np.ndarray | None = None
    iou_thresholds: np.ndarray | None = None
    matrix: np.ndarray | None = None
    images: list[str] | None = None
    attributes: int | None = None


def make_plot(what: str, out: str | Path, *, work_dirs: list | None = None,
              labels: list[str] | None = None, data: str | Path | None = None,
              predictions: str | Path | None = None, score_thr: float = SCORE_THR,
              images: list[str] | None = None, n: int = 6, seed: int = 0,
              attribute_thresholds: str | Path | None = None) -> Drawn:
    """The ``imat-kit plot WHAT`` step: read the inputs of one figure and draw it into ``out``.
    Returns what was drawn: ``points`` (losses), ``curves`` (pr: the mean precision at the 101
    recall points per IoU threshold, ``iou_thresholds``), ``matrix`` (confusion: counts, truth
    rows × predicted columns, background last), ``images`` (overlays), ``attributes``
    (attributes: how many have truth). ``attribute_thresholds`` cut the attribute
    probabilities (overlays, attributes)."""
    from imat_kit.data.paths import find_labels, image_dir, read_ann
    from imat_kit.eval.runs import FoldRun
    from imat_kit.predictions import Expected, read_header, read_predictions

    if what not in PLOTS:
        raise KitError(f"figure must be one of {', '.join(PLOTS)}", value=what)
    given = {"work_dirs": work_dirs, "data": data, "predictions": predictions}
    lacking = [k for k in PLOT_INPUTS[what] if not given[k]]
    if lacking:
        raise KitError(f"plot {what} needs --{lacking[0].replace('_', '-')}")
    if what == "losses":
        return Drawn(points=plot_losses(work_dirs, out, labels))
    data = Path(data)
    if what == "categories":
        from imat_kit.data.stats import dataset_stats

        plot_category_distribution(dataset_stats(data / "train.csv", find_labels(data))
                                   ["categories"], out)
        return Drawn()
    from imat_kit.eval.metric import coco_eval

    head = read_header(predictions)
    split = "val" if head.get("split") == "val" and head.get("fold") is not None else "test"
    gt = read_ann(data, split, head.get("fold") or 0)
    _, preds = read_predictions(predictions, Expected.of_split(
        find_labels(data), gt, head["fold"] if split == "val" else None))
    if what == "pr":
        where = f"fold {head['fold']} validation" if split == "val" else "test"
        ev = coco_eval(gt, preds, "segm")
        plot_pr_curves(ev, out, f"Precision-recall, {where}")
        return Drawn(curves=ev.get("pr_curves"), iou_thresholds=ev.get("iou_thresholds"))
    if what == "confusion":
        names = find_labels(data).class_names
        cm = confusion_matrix(gt, preds, len(names), score_thr=score_thr)
        plot_confusion(cm, names, out)
        return Drawn(matrix=cm)
    from imat_kit.eval.attr_eval import attribute_table
    from imat_kit.postprocess import apply_thresholds, load_thresholds

    thr = load_thresholds(attribute_thresholds, find_labels(data))
    preds = apply_thresholds(preds, thr)
    if what == "attributes":
        if split != "val":
            raise KitError("plot attributes needs validation predictions (a fold's truth)",
                           file=str(predictions), row=1)
        labels = find_labels(data)
        run = FoldRun(str(predictions), int(head["fold"]), head, preds, gt, Path(data))
        table = attribute_table([run], labels, thr, score_thr=score_thr)
        plot_attribute_f1(table, {a["id"]: a["name"] for a in labels.attributes}, out,
                          title=f"fold {head['fold']}, matched instances")
        return Drawn(attributes=int((table.support > 0).sum()))
    keys = plot_overlays(gt, preds, image_dir(data, split), out, image_keys=images, n=n,
                         seed=seed, score_thr=score_thr)
    return Drawn(images=keys)


def plot_category_ap(per_cat, train_counts: dict[int, int], out: str | Path) -> None:
    """Per-category segm AP (mean over folds) as sorted bars, beside each category's training
    instance count (log scale): a weak category can be told from a rare one. ``per_cat`` is
    the ``per_category_ap`` table (index ``category_id``, columns ``category`` and ``mean``)."""
    d = per_cat.dropna(subset=["mean"]).sort_values("mean")
    labels = [f"{i} {n[:24]}" for i, n in zip(d.index, d["category"])]
    counts = [max(train_counts.get(int(i), 0), 0.5) for i in d.index]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, max(3, 0.22 * len(d) + 1.2)), sharey=True,
                                  gridspec_kw={"width_ratios": [3, 2]})
    ax.barh(labels, d["mean"], color=[category_colour(int(i)) for i in d.index])
    ax.set_xlabel("segm AP (mean over folds)")
    ax.set_xlim(0, max(0.05, float(d["mean"].max()) * 1.1) if len(d) else 1)
    ax.tick_params(axis="y", labelsize=7)
    ax2.barh(labels, counts, color="#999999")
    ax2.set_xscale("log")
    ax2.set_xlabel("training instances (log)")
    for y, c in enumerate(counts):
        ax2.text(c, y, f" {int(c)}", va="center", fontsize=6)
    ax.set_title("Per-category segm AP")
    ax2.set_title("beside the training instances")
    if not len(d):
        ax.text(0.5, 0.5, "no category evaluated", ha="center", va="center",
                transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, out)


def plot_error_breakdown(breakdowns: dict[str, dict], out: str | Path) -> None:
    """TIDE's dAP per error type (grouped bars, one group per fold)."""
    from imat_kit.eval.analysis import ERROR_NAMES, ERROR_TYPES

    fig, ax = plt.subplots(figsize=(8, 4))
    k = max(len(breakdowns), 1)
    x = np.arange(len(ERROR_TYPES))
    for i, (name, r) in enumerate(breakdowns.items()):
        ax.bar(x + (i - (k - 1) / 2) * 0.8 / k, [r["dAP"][t] for t in ERROR_TYPES], 0.8 / k,
               label=f"{name} (AP50 {r['AP50']:.1f})")
    ax.set_xticks(x, [ERROR_NAMES[t] for t in ERROR_TYPES], fontsize=8)
    ax.set_ylabel("dAP: mask AP50 points gained if fixed")
    ax.set_title("Error breakdown (TIDE)")
    if breakdowns:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)


def plot_attribute_f1(f1: pd.DataFrame, attr_names: dict[int, str], out: str | Path, *,
                      title: str | None = None) -> None:
    """Per-attribute F1 against its support (log scale), the 8 most frequent labelled; with a
    ``prior_f1`` column (:func:`attr_eval.attribute_table`) the per-category prior's F1 of each
    attribute is drawn beside it as a hollow marker."""
    fig, ax = plt.subplots(figsize=(8, 5))
    d = f1[f1["support"] > 0]
    ax.scatter(d["support"], d["f1"].fillna(0), s=14, color="#3b75af", label="model")
    if "prior_f1" in d.columns:
        ax.scatter(d["support"], d["prior_f1"].fillna(0), s=22, facecolors="none",
                   edgecolors="#d0602a", label="per-category prior")
        for _, r in d.iterrows():
            ax.plot([r.support] * 2, [0 if np.isnan(r.prior_f1) else r.prior_f1,
                                      0 if np.isnan(r.f1) else r.f1], color="#bbbbbb", lw=0.6,
                    zorder=0)
        ax.legend(fontsize=8, loc="lower right")
    for _, r in d.nlargest(8, "support").iterrows():
        ax.annotate(attr_names.get(int(r.attribute_id), str(r.attribute_id))[:20],
                    (r.support, 0 if np.isnan(r.f1) else r.f1), fontsize=6,
                    textcoords="offset points", xytext=(3, 3))
    if len(d):  # a log axis needs a positive value
        ax.set_xscale("log")
    ax.set_xlabel("support (truth instances among the matched ones)" if "prior_f1" in d.columns
                  else "support (truth instances, matched or missed)")
    ax.set_ylabel("F1")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Attribute F1 against support ({len(d)} attributes"
                 + (f"; {title}" if title else "") + ")")
    if not len(d):
        ax.text(0.5, 0.5, "no attribute in the truth", ha="center", va="center",
                transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, out)
