"""Prediction speed by batch size, and what the resume bookkeeping costs.

``imat-kit predict`` batches only images that pad to the same shape as they do alone, so its
output does not depend on the batch size. This measures, on the synthetic fold-0 validation
images of ``outputs/bench/train_data`` (made once, shared with train_speed.py), the tiny config's
images/s at batch 1 (the baseline, in the same run), 2 and 4, checks that the three files are
byte-identical, and reports how many forward passes were full batches. Also timed: hashing a
checkpoint of the R50 recipe's size (the SHA-256 in every predictions header). And the cost of
test-time augmentation: seconds per image with ``--tta flip``, ``scales`` (0.8, 1.0, 1.2) and
``scales+flip`` against no TTA (the baseline, in the same run; batch 2; the passes' fusion
included).

    python benchmarks/predict_speed.py [--device cpu] [--what all|batch|tta]
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

from imat_kit.files import file_fingerprint

R50_CHECKPOINT_BYTES = 177_000_000  # mask_rcnn_r50_fpn ms-poly 3x COCO: 169 MiB


def tiny_checkpoint(path: Path, config: Path | None = None) -> None:
    """The tiny config's model (or ``config``'s), freshly initialised (seeded): enough to time
    inference."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from imat_kit.mmdet_ext.config import load_config

    register_all_modules()
    torch.manual_seed(0)
    cfg = load_config(config or Path(__file__).resolve().parents[1] / "configs"
                      / "tiny_maskrcnn_imat.py", fold=0, data_root=DATA)
    torch.save({"meta": {}, "state_dict": MODELS.build(cfg.model).state_dict()}, path)


def tta_costs(P, config: Path, ckpt: Path, tmp: Path, device: str) -> None:
    """Seconds per image of each TTA against none, on the same images, in this run."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for tta in (None, "flip", "scales", "scales+flip"):
        out = tmp / f"tta_{tta}.jsonl"
        t = time.perf_counter()
        r = P.predict(config, ckpt, split="val", fold=0, out=out, data_root=str(DATA),
                      batch_size=2, device=device, quiet=True, tta=tta,
                      cfg_options=["model.test_cfg.rcnn.score_thr=0.0"])
        rows.append((tta or "none", r["images"], time.perf_counter() - t))
    base = rows[0][2] / rows[0][1]
    print(f"machine: {machine()}, device {device}; TTA cost (batch 2, scales 0.8/1.0/1.2)")
    print(f"{'tta':>12} {'passes':>6} {'s/image':>8} {'vs none':>8}")
    for (name, n, wall), k in zip(rows, (1, 2, 3, 6)):
        print(f"{name:>12} {k:>6} {wall / n:>8.3f} {wall / n / base:>7.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--what", choices=["all", "batch", "tta"], default="all")
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
        if args.what in ("all", "tta"):
            tta_costs(P, config, ckpt, tmp, args.device)
        if args.what == "tta":
            return
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
