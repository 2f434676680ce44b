"""Every model family's tiny variant on the same synthetic set, for the same training time.

Generates ``--images`` synthetic 2019 images (seed ``--seed``), prepares 5 folds, and for each
family: measures its training speed (``--calib`` iterations), trains it from scratch on the
other folds for as many iterations as fit in ``--budget`` seconds on this machine (the tiny
recipe's warm-up and its x0.1 drop at 85% scaled to that length), predicts the held-out fold
``--fold`` with ``imat-kit predict`` and scores it with ``imat-kit``'s evaluation: segm AP
(pycocotools), the competition score, training s/iter and inference s/image.

Tiny models (R18-size, 256 px, from scratch) on synthetic data for minutes of CPU: the table
shows that each family trains, predicts and evaluates in the kit, not which family is best on
real data; the published COCO figures of each full-size family stand beside it for scale.

    python benchmarks/model_zoo.py [--images 300] [--budget 300] [--families HTC YOLACT]
    python benchmarks/model_zoo.py --families YOLACT --iters 1500     # a fixed length
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, machine

from imat_kit.data.paths import read_ann
from imat_kit.eval.evaluate import evaluate_fold
from imat_kit.mmdet_ext.predict import predict
from imat_kit.predictions import read_predictions

CONFIGS = REPO / "imat_kit" / "configs"
#: family -> (tiny config, full config of the README table, COCO box AP / mask AP of mmdet's
#: checkpoint that the full config starts from)
FAMILIES = {
    "Mask R-CNN": ("tiny_maskrcnn_imat.py", "maskrcnn_r50_imat.py", "40.9 / 37.1"),
    "Cascade Mask R-CNN": ("tiny/cascade_imat.py", "cascade_maskrcnn_r50_imat.py",
                           "41.9 / 36.5"),
    "HTC": ("tiny/htc_imat.py", "htc_r50_imat.py", "43.3 / 38.3"),
    "RTMDet-Ins": ("tiny/rtmdet_ins_imat.py", "rtmdet_ins_s_imat.py", "44.5 / 38.7"),
    "Mask2Former": ("tiny/mask2former_imat.py", "mask2former_r50_imat.py", "45.7 / 42.9"),
    "YOLACT": ("tiny/yolact_imat.py", "yolact_r50_imat.py", "- / 29.0"),
}


def _train(config: Path, data: Path, work: Path, iters: int, fold: int) -> float:
    """Train ``iters`` iterations with ``mim train``; returns the wall time."""
    env = {**os.environ, "IMAT_DATA_ROOT": f"{data}/", "IMAT_FOLD": str(fold),
           "PYTHONWARNINGS": "ignore"}
    warm = max(1, min(100, iters // 6))
    t = time.perf_counter()
    r = subprocess.run(
        [str(Path(sys.executable).parent / "mim"), "train", "mmdet", str(config),
         "--work-dir", str(work), "--cfg-options", f"train_cfg.max_iters={iters}",
         f"train_cfg.val_interval={iters * 10}", f"default_hooks.checkpoint.interval={iters}",
         "default_hooks.checkpoint.save_best=None", "default_hooks.logger.interval=1",
         f"param_scheduler.0.end={warm}", f"param_scheduler.1.end={iters}",
         f"param_scheduler.1.milestones=[{max(1, int(iters * 0.85))}]"],
        env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"training {config.name} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return time.perf_counter() - t


def _iter_times(work: Path, fold: int) -> list[float]:
    scalars = next((work / f"fold{fold}").glob("*/vis_data/scalars.json"))
    rows = [json.loads(line) for line in scalars.read_text().splitlines()]
    return [r["time"] for r in rows if "time" in r and "loss" in r]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per family")
    ap.add_argument("--calib", type=int, default=12, help="iterations to measure s/iter")
    ap.add_argument("--iters", type=int, default=None,
                    help="train this many iterations instead of what fits in --budget")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "model_zoo"))
    a = ap.parse_args()
    out = Path(a.out)
    data = out / "data"
    kit = [sys.executable, "-m", "imat_kit.cli"]
    if not (data / "annotations" / "all.json").exists():
        subprocess.run([*kit, "synth", "--out", str(data), "--images", str(a.images), "--seed",
                        str(a.seed), "-q"], check=True)
        subprocess.run([*kit, "prepare", "--data", str(data), "-q"], check=True)
    gt = read_ann(data, "val", a.fold)
    rows = []
    for family in a.families:
        tiny, full, coco = FAMILIES[family]
        config = CONFIGS / tiny
        name = Path(tiny).stem
        _train(config, data, out / "calib" / name, a.calib, a.fold)
        times = sorted(_iter_times(out / "calib" / name, a.fold)[2:])  # warm iterations
        s_iter = times[len(times) // 2]
        iters = a.iters or max(a.calib, int(a.budget / s_iter))
        wall = _train(config, data, out / "work" / name, iters, a.fold)
        ckpt = out / "work" / name / f"fold{a.fold}" / f"iter_{iters}.pth"
        preds_path = out / f"{name}_fold{a.fold}_val.jsonl"
        t = time.perf_counter()
        predict(config, ckpt, split="val", fold=a.fold, out=preds_path, data_root=str(data),
                batch_size=1, device="cpu", overwrite=True, quiet=True)
        infer = (time.perf_counter() - t) / len(gt["images"])
        row = evaluate_fold(gt, read_predictions(preds_path)[1])["row"]
        rows.append({"family": family, "tiny_config": tiny, "full_config": full,
                     "iters": iters, "train_s_per_iter": round(s_iter, 3),
                     "train_wall_s": round(wall, 1), "infer_s_per_image": round(infer, 3),
                     "segm_AP": round(row["segm_AP"], 4), "segm_AP50": round(row["segm_AP50"], 4),
                     "competition": round(row["competition"], 4), "coco_box_mask_AP": coco})
        print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine(), "images": a.images, "val_images": len(gt["images"]),
              "fold": a.fold, "seed": a.seed, "budget_s": a.budget, "rows": rows}
    (out / "model_zoo.json").write_text(json.dumps(result, indent=2))
    print("| family | tiny config | iters in budget | train s/iter | infer s/img | segm AP | "
          "segm AP50 | competition | COCO box / mask AP (full config) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | `{r['tiny_config']}` | {r['iters']} | "
              f"{r['train_s_per_iter']:.2f} | {r['infer_s_per_image']:.3f} | "
              f"{r['segm_AP']:.3f} | {r['segm_AP50']:.3f} | {r['competition']:.3f} | "
              f"{r['coco_box_mask_AP']} (`{r['full_config']}`) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
