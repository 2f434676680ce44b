"""Full-scale conversion: synthetic 2019-size train.csv → COCO json + folds, and the
per-annotation rate of the common notebook path against ours on the same rows.

1. ``imat-kit prepare --no-image-check`` on a full-size synthetic train.csv (45,625 images,
   333,415 rows): wall time and peak resident memory of the process and its workers.
   Target on 2 cores: < 30 s and < 3 GB.
2. On the same sample of rows, annotations/s of the notebook path (decode each RLE to an H×W
   mask, then ``pycocotools.mask.encode``, ``toBbox``, ``area``) against ours (the batch
   kernels the conversion uses, one process). Target: ours ≥ 8× faster.

    python benchmarks/convert.py [--data outputs/bench/full] [--sample 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import REPO, machine, run_measured
from pycocotools import mask as mask_util
from rle import notebook_decode  # benchmarks/rle.py

from imat_kit.data.coco import _chunk_runs


def notebook_path(rows: pd.DataFrame) -> list[dict]:
    out = []
    for ep, h, w in zip(rows.EncodedPixels, rows.Height, rows.Width):
        m = notebook_decode(ep, (h, w))
        seg = mask_util.encode(np.asfortranarray(m))
        out.append({"counts": seg["counts"].decode(), "bbox": mask_util.toBbox(seg).tolist(),
                    "area": int(mask_util.area(seg))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO / "outputs" / "bench" / "full"))
    ap.add_argument("--sample", type=int, default=3000)
    a = ap.parse_args()
    data = Path(a.data)
    exe = [sys.executable, "-m", "imat_kit.cli"]
    if not (data / "train.csv").exists():
        t = time.perf_counter()
        run_measured([*exe, "synth", "--scale", "full", "--out", str(data), "--seed", "0",
                      "--quiet"])
        print(f"generated {data / 'train.csv'} in {time.perf_counter() - t:.0f} s")
    size_mb = (data / "train.csv").stat().st_size / 1e6
    out = data / "prepared"
    wall, peak = run_measured([*exe, "prepare", "--data", str(data), "--out", str(out),
                               "--no-image-check", "--quiet"])
    rep = json.loads((out / "prepare_report.json").read_text())
    print(f"machine: {machine()}")
    print(f"prepare: {rep['images']:,} images, {rep['annotations']:,} annotations "
          f"({size_mb:.0f} MB train.csv) → all.json + {rep['folds']} folds: {wall:.1f} s, "
          f"peak RSS {peak:.2f} GiB (targets < 30 s, < 3 GB)")

    rows = pd.read_csv(data / "train.csv", nrows=60_000).sample(a.sample, random_state=0)
    t = time.perf_counter()
    ref = notebook_path(rows)
    t_nb = time.perf_counter() - t
    texts = rows.EncodedPixels.tolist()
    h, w = rows.Height.to_numpy(), rows.Width.to_numpy()
    t = time.perf_counter()
    bad, strings, bbox, area = _chunk_runs(texts, h, w)
    t_us = time.perf_counter() - t
    assert not bad.any()
    for i, r in enumerate(ref):  # same answers
        assert strings[i] == r["counts"] and bbox[i].tolist() == r["bbox"]
        assert area[i] == r["area"]
    n = len(rows)
    print(f"per annotation ({n} rows): notebook decode+encode {n / t_nb:,.0f}/s, "
          f"imat_kit {n / t_us:,.0f}/s, ratio {t_nb / t_us:.0f}x (target >= 8x)")


if __name__ == "__main__":
    main()
