"""What checking every predictions line costs: reading the ensemble benchmark's 3,200-image
test files (5 fold models, 10–100 instances an image) with the checks against the reader
before them (commit 27fec37's ``from_json``, copied below as the baseline), in the same run.
Target: the checks cost ≤ 10% of reading the files.

    python benchmarks/pred_check.py [--images 3200] [--files 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import time

import numpy as np
from _common import machine
from ensemble_submit import make_inputs

from imat_kit.data.labels import load_labels
from imat_kit.predictions import (
    CHECK_CHUNK,
    Expected,
    ImagePrediction,
    attribute_sets,
    read_header,
    read_predictions,
)
from imat_kit.predictions.checks import chunk_problems, parse_line_fields


def unchecked_from_json(line: str, soft_size: int | None = None) -> ImagePrediction:
    """The reader before the checks (27fec37), verbatim but for its error handling."""
    d = json.loads(line)
    n = len(d["labels"])
    soft = None
    if d.get("soft") and soft_size:
        soft = np.frombuffer(base64.b64decode(d["soft"]), np.uint8).reshape(
            n, soft_size, soft_size).copy()
    probs = [{int(k): float(v) for k, v in a} for a in d.get("attr_probs", [])]
    attrs = [tuple(int(x) for x in a) for a in d.get("attributes", [])]
    if probs and not attrs:
        attrs = attribute_sets(probs)
    return ImagePrediction(d["image_key"], int(d["height"]), int(d["width"]),
                           np.asarray(d["labels"], np.int64), np.asarray(d["scores"], np.float32),
                           np.asarray(d["bboxes"], np.float32).reshape(n, 4), list(d["masks"]),
                           soft, attrs, probs)


def read_unchecked(path) -> dict:
    soft = read_header(path).get("soft_size")
    with open(path, encoding="utf-8") as f:
        f.readline()
        return {p.image_key: p for p in (unchecked_from_json(line, soft) for line in f)}


def chunk_checks_only(path, expected) -> float:
    """Seconds spent in the vectorised checks alone (lines parsed beforehand)."""
    with open(path, encoding="utf-8") as f:
        f.readline()
        items = [(i + 2, *parse_line_fields(json.loads(line), None)) for i, line in enumerate(f)]
    t = time.perf_counter()
    for k in range(0, len(items), CHECK_CHUNK):
        assert not chunk_problems(items[k:k + CHECK_CHUNK], expected)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3200)
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    files, sizes = make_inputs(a.images)
    files = files[: a.files]
    labels = load_labels()
    expected = Expected.of(labels, sizes, "the test set")
    n_inst = sum(len(p) for p in read_unchecked(files[0]).values())
    print(f"machine: {machine()}")
    print(f"{len(files)} files × {a.images} images ({n_inst:,} instances in the first), "
          f"{sum(f.stat().st_size for f in files) / 1e6:.0f} MB")
    best_old = best_new = best_chk = float("inf")
    for _ in range(a.repeat):  # alternated, best of each: the least disturbed by other load
        t = time.perf_counter()
        old = [read_unchecked(f) for f in files]
        best_old = min(best_old, time.perf_counter() - t)
        t = time.perf_counter()
        new = [read_predictions(f, expected)[1] for f in files]
        best_new = min(best_new, time.perf_counter() - t)
        best_chk = min(best_chk, sum(chunk_checks_only(f, expected) for f in files))
    for o, n in zip(old, new):
        assert o.keys() == n.keys()
        assert all(np.array_equal(o[k].labels, n[k].labels) and o[k].masks == n[k].masks
                   and np.array_equal(o[k].scores, n[k].scores) for k in o)
    print(f"read without checks (before): {best_old:.2f} s; with every check: {best_new:.2f} s "
          f"→ the checks cost {100 * (best_new / best_old - 1):+.1f}% (target ≤ 10%)")
    print(f"of which the vectorised chunk checks (masks' counts, ids, ranges): {best_chk:.2f} s "
          f"({100 * best_chk / best_old:.1f}% of the read)")


if __name__ == "__main__":
    main()
