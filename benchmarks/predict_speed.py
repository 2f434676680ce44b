"""Prediction speed by batch size, and what the resume bookkeeping costs.

``imat-kit predict`` batches only images that pad to the same shape as they do alone, so its
output does not depend on the batch size. This measures, on the synthetic fold-0 validation
images of ``outputs/bench/train_data`` (made once, shared with train_speed.py), the tiny config's
images/s at batch 1 (the baseline, in the same run), 2 and 4, checks that the three files are
byte-identical, and reports how many forward passes were full batches. Also timed: hashing a
checkpoint of the R50 recipe's size (the SHA-256 in every predictions header).

    python benchmarks/predict_speed.py [--device cpu]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from _common import machine
from train_speed import DATA, ensure_data

from imat_kit.io import file_fingerprint

R50_CHECKPOINT_BYTES = 177_000_000  # mask_rcnn_r50_fpn ms-poly 3x COCO: 169 MiB


def tiny_checkpoint(path: Path) -> None:
    """The tiny config's model, freshly initialised (seeded): enough to time inference."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from imat_kit.mmdet_ext.config import load_config

    register_all_modules()
    torch.manual_seed(0)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny_maskrcnn_imat.py",
                      fold=0, data_root=DATA)
    torch.save({"meta": {}, "state_dict": MODELS.build(cfg.model).state_dict()}, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    from imat_kit.mmdet_ext import predict as P

    ensure_data()
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny_maskrcnn_imat.py"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "tiny.pth"
        tiny_checkpoint(ckpt)
        sizes: list[int] = []
        real_collate = None

        def counting(items):  # record each forward pass's batch size
            sizes.append(len(items))
            return real_collate(items)

        from mmengine import dataset as mmds

        real_collate = mmds.pseudo_collate
        mmds.pseudo_collate = counting
        results = {}
        try:
            for bs in (1, 2, 4):
                sizes.clear()
                out = tmp / f"b{bs}.jsonl"
                torch.set_num_threads(os.cpu_count() or 1)
                t = time.perf_counter()
                r = P.predict(config, ckpt, split="val", fold=0, out=out, data_root=str(DATA),
                              batch_size=bs, device=args.device, quiet=True,
                              cfg_options=["model.test_cfg.rcnn.score_thr=0.0"])
                wall = time.perf_counter() - t
                results[bs] = (r["images"], wall, list(sizes), out.read_bytes())
        finally:
            mmds.pseudo_collate = real_collate
    base_n, base_wall = results[1][0], results[1][1]
    print(f"machine: {machine()}, device {args.device}")
    print(f"{'batch':>5} {'images':>6} {'s':>7} {'img/s':>7} {'vs batch 1':>10} "
          f"{'full batches':>12} {'same file':>9}")
    for bs, (n, wall, passes, data) in results.items():
        full = sum(1 for s in passes if s == bs)
        print(f"{bs:>5} {n:>6} {wall:>7.1f} {n / wall:>7.2f} {base_wall / wall:>9.2f}x "
              f"{full:>5}/{len(passes):<6} {data == results[1][3]!s:>9}")
    assert all(r[3] == results[1][3] for r in results.values()), "batch size changed the output"
    assert base_n > 0
    with tempfile.NamedTemporaryFile() as f:
        block = hashlib.sha256(b"x").digest() * (1 << 15)
        for _ in range(R50_CHECKPOINT_BYTES // len(block)):
            f.write(block)
        f.flush()
        t = time.perf_counter()
        file_fingerprint(f.name)
        dt = time.perf_counter() - t
    print(f"SHA-256 of a {R50_CHECKPOINT_BYTES / 2**20:.0f} MiB checkpoint (R50 recipe size): "
          f"{dt:.2f} s ({R50_CHECKPOINT_BYTES / 2**20 / dt:.0f} MiB/s)")


if __name__ == "__main__":
    main()
