"""Fusion of 5 fold prediction files + submission writing at test-set scale.

3,200 test images of realistic sizes, 5 prediction files (one per fold model), up to 100
instances per image (10–100, the folds agreeing on most instances with masks shifted by a few
pixels and scores jittered, plus their own false positives). Timed: reading the 5 files, fusing
them (``imat_kit.ensemble``, fusion) and writing the submission. Target on 2 cores:
< 120 s. Baseline in the same run, on a subset of images: the naive path that decodes every
instance to a full H×W mask, fuses by averaging full masks, removes overlaps on full masks and
encodes with the notebook kernel.

    python benchmarks/ensemble_submit.py [--images 3200] [--baseline-images 30]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
from _common import REPO, machine
from pycocotools import mask as mask_util
from rle import notebook_encode

from imat_kit.data import rle, rle_batch
from imat_kit.data.synth import SHAPES, category_weights
from imat_kit.data.synth_real import _convex_runs, real_image_sizes
from imat_kit.ensemble import ensemble
from imat_kit.postprocess import PostProcess
from imat_kit.predictions import ImagePrediction, PredictionsWriter, read_predictions
from imat_kit.submission import write_submission

OUT = REPO / "outputs" / "bench" / "ensemble"


def make_inputs(n_images: int, k: int = 5, seed: int = 0) -> tuple[list[Path], dict]:
    files = [OUT / f"fold{f}_test.jsonl" for f in range(k)]
    keys = [f"{i:032x}.jpg" for i in range(n_images)]
    sizes_path = OUT / f"sizes_{n_images}.npy"
    if all(f.exists() for f in files) and sizes_path.exists():
        hw = np.load(sizes_path)
        return files, {kk: (int(h), int(w)) for kk, (h, w) in zip(keys, hw)}
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hgt, wid = real_image_sizes(rng, n_images)
    hgt[0], wid[0] = 1500, 1000  # no 10717×6824 outlier: it would dominate the naive baseline
    np.save(sizes_path, np.stack([hgt, wid], 1))
    stack = contextlib.ExitStack()
    handles = [stack.enter_context(PredictionsWriter(
        f, {"split": "test", "config": "synthetic", "checkpoint": f.stem})) for f in files]
    p = category_weights(1.0)
    for i, key in enumerate(keys):
        h, w = int(hgt[i]), int(wid[i])
        irng = np.random.default_rng([seed, i])
        n = int(irng.integers(10, 101))
        cats = irng.choice(46, n, p=p)
        base = [(int(c), *_convex_runs(irng, h, w, SHAPES[int(c)][2] * irng.uniform(0.6, 1.4),
                                        1.0 / SHAPES[int(c)][1])) for c in cats]
        for fold, fh in enumerate(handles):
            frng = np.random.default_rng([seed, i, fold])
            labels, scores, texts = [], [], []
            for c, s, ln in base:
                if frng.random() < 0.15:
                    continue
                shift = int(frng.integers(-3, 4)) * h + int(frng.integers(-3, 4))
                s2 = np.clip(s + shift, 0, h * w - 1)
                ln2 = np.minimum(ln, h * w - s2)
                labels.append(c)
                scores.append(float(np.clip(frng.normal(0.7, 0.15), 0.05, 1)))
                texts.append(rle.runs_to_string(s2, ln2))
            for _ in range(int(frng.integers(0, 6))):  # this fold's own false positives
                c = int(frng.choice(46, p=p))
                s, ln = _convex_runs(frng, h, w, 0.1, 1.0)
                labels.append(c)
                scores.append(float(frng.uniform(0.05, 0.5)))
                texts.append(rle.runs_to_string(s, ln))
            order = np.argsort(-np.array(scores))[:100]
            texts = [texts[j] for j in order]
            batch = rle_batch.parse_runs_batch(texts, np.full(len(texts), h),
                                               np.full(len(texts), w))
            counts, coff = rle_batch.counts_batch(batch, np.full(len(texts), h * w))
            strings = rle_batch.coco_strings_batch(counts, coff)
            bbox, _ = rle_batch.bbox_area_batch(batch, np.full(len(texts), h))
            fh.write(ImagePrediction(key, h, w, np.array(labels)[order],
                                     np.array(scores, np.float32)[order],
                                     bbox.astype(np.float32), strings))
    stack.close()
    return files, {kk: (int(h), int(w)) for kk, h, w in zip(keys, hgt, wid)}


def naive(inputs: list[dict], keys: list[str], cfg: PostProcess) -> list[tuple]:
    """Full-mask baseline: decode everything, average masks per greedy group, remove overlaps
    on full masks, encode with the notebook kernel."""
    rows = []
    for key in keys:
        preds = [d[key] for d in inputs]
        ref = preds[0]
        h, w = ref.height, ref.width
        inst = [(int(p.labels[j]), float(p.scores[j]), mask_util.decode(p.rles()[j]), m)
                for m, p in enumerate(preds) for j in range(len(p))]
        inst.sort(key=lambda t: -t[1])
        used = [False] * len(inst)
        fused = []
        for a, (c, s, m, mod) in enumerate(inst):
            if used[a]:
                continue
            used[a] = True
            acc, ws = m.astype(np.float32) * s, s
            for b in range(a + 1, len(inst)):
                c2, s2, m2, mod2 = inst[b]
                if used[b] or c2 != c or mod2 == mod:
                    continue
                inter = np.logical_and(m, m2).sum()
                if inter / max(np.logical_or(m, m2).sum(), 1) >= 0.5:
                    used[b] = True
                    acc += m2 * s2
                    ws += s2
            fused.append((c, ws / len(preds), acc / ws >= 0.5))
        taken: dict[int, np.ndarray] = {}
        for c, s, m in sorted(fused, key=lambda t: -t[1]):
            if s < cfg.score_thr:
                continue
            own = m & ~taken.get(c, np.zeros((h, w), bool))
            taken[c] = taken.get(c, np.zeros((h, w), bool)) | m
            if own.sum() >= cfg.min_area:
                rows.append((key, notebook_encode(own.astype(np.uint8)), str(c)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3200)
    ap.add_argument("--baseline-images", type=int, default=30)
    a = ap.parse_args()
    t = time.perf_counter()
    files, sizes = make_inputs(a.images)
    print(f"inputs: {len(files)} files × {a.images} images ({time.perf_counter() - t:.0f} s to "
          f"make or find), {sum(f.stat().st_size for f in files) / 1e6:.0f} MB")
    cfg = PostProcess(score_thr=0.3)
    t0 = time.perf_counter()
    inputs = [read_predictions(f)[1] for f in files]
    t1 = time.perf_counter()
    fused = ensemble(inputs, quiet=True)
    t2 = time.perf_counter()
    keys = list(sizes)
    out = OUT / "submission.csv"
    man = write_submission(fused, keys, out, cfg, quiet=True)
    t3 = time.perf_counter()
    n_in = sum(len(p) for d in inputs for p in d.values())
    print(f"machine: {machine()}")
    print(f"imat-kit: read {t1 - t0:.1f} s + fuse {t2 - t1:.1f} s + submission "
          f"{t3 - t2:.1f} s = {t3 - t0:.1f} s for {a.images} images, {n_in:,} input instances, "
          f"{man['rows']:,} rows (target < 120 s)")
    sub = keys[: a.baseline_images]
    t = time.perf_counter()
    naive([{k: d[k] for k in sub} for d in inputs], sub, cfg)
    t_nb = (time.perf_counter() - t) / len(sub)
    t_us = (t3 - t1) / a.images
    print(f"per image (fuse + write): naive full-mask {t_nb * 1000:.0f} ms "
          f"(on {len(sub)} images; {t_nb * a.images:.0f} s extrapolated), imat-kit "
          f"{t_us * 1000:.1f} ms: {t_nb / t_us:.0f}x")


if __name__ == "__main__":
    main()
