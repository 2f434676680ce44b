"""What ``imat-kit evaluate`` costs at the real size, against the field's COCO evaluators, in
one run: one fold's validation split of the full-size synthetic data (``synth --scale full``,
``prepare --folds 5 --no-image-check``: ~9,100 images, ~66,600 truths, the real image sizes up
to 10717 × 6824) with 30–100 predicted instances an image (each a truth's mask shifted by a
few pixels or columns, in its category or another, at a random score), timed as four processes
on the same files:

* ``evaluate``: ``imat-kit evaluate`` (segm AP + the 2019 competition score: the fold table;
  ``evaluate_bbox``: the same with ``--bbox``, the box AP's pass added);
* ``before``: the evaluation before faster-coco-eval (commit d79f44a's ``evaluate_fold``,
  copied below: pycocotools segm and bbox passes, then the competition score's own IoUs);
* ``pycocotools``: plain pycocotools ``COCOeval``, segm only;
* ``faster``: plain faster-coco-eval ``COCOeval_faster``, segm only.

Each process reads the truth and the predictions file itself. Goal: ``evaluate`` no slower than
plain faster-coco-eval + 10 %, peak memory no higher than ``before``'s. The segm AP of all four
must agree to the last digit.

    python benchmarks/evaluate.py [--work DIR] [--fold 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO, machine, run_measured

ENGINES = ("evaluate", "before", "pycocotools", "faster", "evaluate_bbox")


# --- the data --------------------------------------------------------------------------------

def shifted(counts: np.ndarray, s: int) -> np.ndarray:
    """Uncompressed COCO counts moved by ``s`` pixels in column-major order (down a column,
    wrapping into the next: a multiple of the height moves whole columns), within the image."""
    c = counts.copy()
    if c.size % 2 == 0:  # the mask reaches the last pixel: no trailing zeros yet
        c = np.append(c, 0)
    s = int(np.clip(s, -c[0], c[-1]))
    c[0] += s
    c[-1] -= s
    return c


def make_data(work: Path, fold: int, seed: int) -> tuple[Path, Path]:
    """The prepared full-size data (made once, kept in ``work``) and fold ``fold``'s
    validation predictions."""
    from imat_kit.data import rle
    from imat_kit.predictions import ImagePrediction, write_predictions
    from imat_kit.progress import progress

    raw, prep = work / "raw", work / "prep"
    kit = [sys.executable, "-m", "imat_kit.cli"]
    if not (raw / "train.csv").exists():
        subprocess.run([*kit, "synth", "--scale", "full", "--out", str(raw), "--seed", "0"],
                       check=True)
    if not (prep / "annotations" / f"fold{fold}_val.json").exists():
        subprocess.run([*kit, "prepare", "--data", str(raw), "--out", str(prep), "--folds", "5",
                        "--no-image-check", "--quiet"], check=True)
    preds_path = work / f"fold{fold}_val_seed{seed}.jsonl"
    if preds_path.exists():
        return prep, preds_path
    gt = json.loads((prep / "annotations" / f"fold{fold}_val.json").read_text())
    rng = np.random.default_rng(seed)
    by_img: dict = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    n_cat = len(gt["categories"])
    preds = []
    for im in progress(gt["images"], desc="predictions", unit="img"):
        h, w = im["height"], im["width"]
        truths = by_img.get(im["id"], [])
        counts = [rle.coco_string_to_counts(a["segmentation"]["counts"]) for a in truths]
        n = int(rng.integers(30, 101)) if truths else 0
        labels, masks, boxes = [], [], []
        for _ in range(n):
            k = int(rng.integers(len(truths)))
            s = int(rng.integers(-3, 4)) + h * int(rng.integers(-8, 9))
            c = shifted(counts[k], s)
            masks.append(rle.counts_to_coco_string(c, h, w))
            labels.append(truths[k]["category_id"] if rng.random() < 0.5
                          else int(rng.integers(n_cat)))
            x, y, bw, bh = truths[k]["bbox"]
            boxes.append([x + s // h, y, bw, bh])
        preds.append(ImagePrediction(im["image_key"], h, w, np.array(labels, np.int64),
                                     rng.random(n).astype(np.float32),
                                     np.array(boxes, np.float32).reshape(-1, 4), masks))
    write_predictions(preds_path, {"split": "val", "fold": fold}, preds)
    return prep, preds_path


# --- the engines, each run in its own process --------------------------------------------------

def _plain_inputs(prep: Path, preds_path: Path, fold: int) -> tuple[dict, list[dict]]:
    """The truth json and the predictions as COCO segm results, read without the kit."""
    gt = json.loads((prep / "annotations" / f"fold{fold}_val.json").read_text())
    ids = {im["image_key"]: im["id"] for im in gt["images"]}
    res = []
    with open(preds_path, encoding="utf-8") as f:
        f.readline()
        for line in f:
            d = json.loads(line)
            size = [d["height"], d["width"]]
            iid = ids[d["image_key"]]
            res += [{"image_id": iid, "category_id": c, "score": s,
                     "segmentation": {"size": size, "counts": m}}
                    for c, s, m in zip(d["labels"], d["scores"], d["masks"])]
    return gt, res


def run_engine(engine: str, prep: Path, preds_path: Path, fold: int) -> dict:
    t0 = time.perf_counter()
    if engine in ("pycocotools", "faster"):
        gt, res = _plain_inputs(prep, preds_path, fold)
        t_read = time.perf_counter() - t0
        if engine == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        with contextlib.redirect_stdout(io.StringIO()):
            api = COCO()
            api.dataset = gt
            api.createIndex()
            ev = COCOeval(api, api.loadRes(res), "segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {"segm_AP": float(ev.stats[0]), "read_s": t_read,
                "eval_s": time.perf_counter() - t0 - t_read}
    from imat_kit.eval.runs import read_fold_runs

    run = read_fold_runs(prep, [str(preds_path)])[0]
    t_read = time.perf_counter() - t0
    row = before_evaluate_fold(run.gt, run.preds)
    return {"segm_AP": row["segm_AP"], "competition": row["competition"],
            "bbox_AP": row["bbox_AP"], "read_s": t_read,
            "eval_s": time.perf_counter() - t0 - t_read}


def before_coco_results(gt_coco: dict, preds: dict) -> list[dict]:
    """Commit d79f44a's ``metric.coco_results``."""
    ids = {im["image_key"]: im["id"] for im in gt_coco["images"]}
    out = []
    for key, p in preds.items():
        iid = ids.get(key)
        if iid is None:
            continue
        for j in range(len(p)):
            out.append({"image_id": iid, "category_id": int(p.labels[j]),
                        "score": float(p.scores[j]),
                        "bbox": [float(v) for v in p.bboxes[j]],
                        "segmentation": {"size": [p.height, p.width], "counts": p.masks[j]}})
    return out


def before_coco_eval(gt_coco: dict, preds: dict, iou_type: str) -> float:
    """Commit d79f44a's ``metric.coco_eval`` (pycocotools), its AP figure."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO()
        api.dataset = gt_coco
        api.createIndex()
        res = before_coco_results(gt_coco, preds)
        if iou_type == "segm":
            for r in res:
                r.pop("bbox")
        ev = COCOeval(api, api.loadRes(res), iou_type)
        ev.params.imgIds = [im["id"] for im in gt_coco["images"]]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def before_evaluate_fold(gt_coco: dict, preds: dict) -> dict:
    """Commit d79f44a's ``evaluate.evaluate_fold``: segm and bbox pycocotools passes, then the
    competition score computing its own IoUs."""
    from imat_kit.eval.metric import competition_score, pred_instances, truth_instances

    segm = before_coco_eval(gt_coco, preds, "segm")
    bbox = before_coco_eval(gt_coco, preds, "bbox")
    comp = competition_score(truth_instances(gt_coco), pred_instances(preds, False, 0.3))
    return {"segm_AP": segm, "bbox_AP": bbox, "competition": comp["score"]}


# --- the run -----------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(REPO / "outputs" / "bench_evaluate"),
                    help="where the data is made (once) and kept")
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--engine", default=None, help=argparse.SUPPRESS)  # one engine, in-process
    ap.add_argument("--prep", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--preds", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.engine:  # a child process: one engine, its figures as JSON on the last line
        print(json.dumps(run_engine(a.engine, Path(a.prep), Path(a.preds), a.fold)))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prep, preds_path = make_data(work, a.fold, a.seed)
    n_img = len(json.loads((prep / "annotations" / f"fold{a.fold}_val.json").read_text())
                ["images"])
    with open(preds_path, encoding="utf-8") as f:
        f.readline()
        n_pred = sum(len(json.loads(line)["labels"]) for line in f)
    print(f"machine: {machine()}")
    print(f"fold {a.fold} validation: {n_img:,} images, {n_pred:,} predicted instances, "
          f"{preds_path.stat().st_size / 1e6:.0f} MB (data ready in "
          f"{time.perf_counter() - t0:.0f} s)")
    out: dict = {"machine": machine(), "images": n_img, "predictions": n_pred,
                 "file_mb": round(preds_path.stat().st_size / 1e6), "engines": {}}
    for engine in a.engines.split(","):
        if engine.startswith("evaluate"):
            folder = work / f"{engine}_out"
            folder.mkdir(exist_ok=True)
            cmd = [sys.executable, "-m", "imat_kit.cli", "evaluate", "--quiet", "--data",
                   str(prep), "--predictions", str(preds_path), "--out", str(folder),
                   *(["--bbox"] if engine == "evaluate_bbox" else [])]
            wall, peak = run_measured(cmd, stdout=subprocess.DEVNULL)
            import pandas as pd

            t = pd.read_csv(folder / "evaluation.csv")
            figs = {"segm_AP": float(t.segm_AP[0]), "competition": float(t.competition[0]),
                    **({"bbox_AP": float(t.bbox_AP[0])} if "bbox_AP" in t else {})}
        else:
            tmp = work / f"engine_{engine}.json"
            cmd = [sys.executable, __file__, "--engine", engine, "--prep", str(prep),
                   "--preds", str(preds_path), "--fold", str(a.fold)]
            with open(tmp, "w") as f:
                wall, peak = run_measured(cmd, stdout=f)
            figs = json.loads(tmp.read_text().splitlines()[-1])
        out["engines"][engine] = {"wall_s": round(wall, 1), "peak_gib": round(peak, 2), **figs}
        print(f"{engine:>12}: {wall:6.1f} s, peak {peak:.2f} GiB  "
              + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) and not k.endswith("_s")
                          else f"{k} {v:.1f}" for k, v in figs.items()), flush=True)
    e = out["engines"]
    if {"evaluate", "faster"} <= e.keys():
        r = e["evaluate"]["wall_s"] / e["faster"]["wall_s"]
        out["evaluate_over_faster"] = round(r, 3)
        print(f"evaluate / plain faster-coco-eval: {r:.2f} (goal ≤ 1.10)")
    if {"evaluate", "before"} <= e.keys():
        out["before_over_evaluate"] = round(e["before"]["wall_s"] / e["evaluate"]["wall_s"], 2)
        print(f"before / evaluate: {out['before_over_evaluate']:.2f}× faster; peak "
              f"{e['evaluate']['peak_gib']:.2f} vs {e['before']['peak_gib']:.2f} GiB before "
              "(goal: no higher)")
    if {"evaluate", "pycocotools"} <= e.keys():
        print(f"pycocotools / evaluate: "
              f"{e['pycocotools']['wall_s'] / e['evaluate']['wall_s']:.2f}×")
    aps = {k: v["segm_AP"] for k, v in e.items()}
    print("segm AP of each:", aps)
    if "evaluate" in e:  # the CSV holds 4 decimals; the engines' own figures are exact
        assert all(abs(v - aps["evaluate"]) < 5e-5 for v in aps.values()), aps
    exact = {v for k, v in aps.items() if not k.startswith("evaluate")}
    assert len(exact) <= 1, aps
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
