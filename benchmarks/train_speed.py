"""Training speed: seconds per iteration and images/s, on this machine.

Runs each config for a few iterations on the synthetic dataset (generated and prepared once
under outputs/bench/train_data) through ``mim train`` and reads mmengine's per-iteration
``time`` from ``vis_data/scalars.json``; the first iterations (warm-up) are dropped and the
median is reported. On CPU: the tiny config (what the demo and the tests train), and the R50
recipe's two phases (heads: backbone frozen; all: everything trained, augmentation). With a
GPU (``--device cuda``, e.g. through the device tool) the R50 phases at full size.

The attribute branch's cost: the tiny config with and without it (``tiny_maskrcnn_imat_attr``,
92 attributes, same data), training s/iter and inference s/image (``test_step`` over the
fold-0 validation images at ``score_thr=0``, so both models finish the same 30 detections per
image), alternated twice in the same run; the ratio is the overhead (target <= 10%).

    python benchmarks/train_speed.py [--iters 30] [--r50-iters 6] [--attributes-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, machine

from imat_kit.mmdet_ext.config import LOAD_ANNOTATIONS
from imat_kit.plots import read_scalars

DATA = REPO / "outputs" / "bench" / "train_data"


def ensure_data() -> None:
    if (DATA / "annotations" / "fold0_train.json").exists():
        return
    kit = [sys.executable, "-m", "imat_kit.cli"]
    subprocess.run([*kit, "synth", "--out", str(DATA), "--images", "200", "--seed", "0", "-q"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*kit, "prepare", "--data", str(DATA), "-q"], check=True,
                   stdout=subprocess.DEVNULL)


def run(config: str, iters: int, batch: int, extra: list[str]) -> tuple[float, int]:
    """Median seconds per iteration (after warm-up) of ``iters`` training iterations."""
    mim = str(Path(sys.executable).parent / "mim")
    with tempfile.TemporaryDirectory() as wd:
        opts = [f"train_dataloader.batch_size={batch}", "train_dataloader.num_workers=2",
                "train_dataloader.persistent_workers=False", "default_hooks.logger.interval=1",
                "log_processor.window_size=1", "load_from=None",
                "default_hooks.checkpoint.interval=100000",
                "default_hooks.checkpoint.save_best=None",
                *extra]
        env = {**os.environ, "IMAT_DATA_ROOT": str(DATA) + "/"}
        subprocess.run([mim, "train", "mmdet", str(REPO / "configs" / config), "--work-dir", wd,
                        "--cfg-options", *opts], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        train, _ = read_scalars(Path(wd) / "fold0")  # IMatRunner's per-fold work dir
    times = [r["time"] for r in train if "time" in r][:iters]
    warm = min(3, len(times) - 1)
    return statistics.median(times[warm:]), len(times) - warm


def inference_s_per_image(config: str, images: int = 30) -> float:
    """Seconds per image of ``test_step`` (batch 1, CPU) of a freshly initialised model over
    the first ``images`` fold-0 validation images, every detection kept (score_thr=0)."""
    import time

    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope

    from imat_kit.data.paths import read_ann
    from imat_kit.mmdet_ext.config import load_config

    register_all_modules()
    init_default_scope("mmdet")
    cfg = load_config(REPO / "configs" / config, fold=0, data_root=f"{DATA}/",
                      options=["model.test_cfg.rcnn.score_thr=0.0"])
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    pipe = Compose([t for t in cfg.test_dataloader.dataset.pipeline
                    if t["type"] not in LOAD_ANNOTATIONS])
    ims = read_ann(DATA, "val", 0)["images"][:images]
    items = [pipe(dict(img_path=str(DATA / "train" / im["file_name"]), img_id=im["id"]))
             for im in ims]
    with torch.no_grad():
        model.test_step(pseudo_collate(items[:2]))  # warm-up
        t = time.perf_counter()
        for it in items:
            model.test_step(pseudo_collate([it]))
    return (time.perf_counter() - t) / len(items)


def attribute_overhead(iters: int) -> None:
    iter_opts = [f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={iters + 1}"]
    train = {"tiny_maskrcnn_imat.py": [], "tiny_maskrcnn_imat_attr.py": []}
    infer = {k: [] for k in train}
    for _ in range(2):  # alternated: a busy spell of the machine hits both
        for cfg in train:
            train[cfg].append(run(cfg, iters, 2, iter_opts)[0])
            infer[cfg].append(inference_s_per_image(cfg))
    (t0, t1), (i0, i1) = ([min(d[k]) for k in train] for d in (train, infer))
    print("attribute branch (tiny, 92 attributes, best of 2 alternated runs each):")
    print(f"  training : {t0:.3f} s/iter without, {t1:.3f} with: {100 * (t1 / t0 - 1):+.1f}%")
    print(f"  inference: {i0:.3f} s/image without, {i1:.3f} with: {100 * (i1 / i0 - 1):+.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--r50-iters", type=int, default=6)
    ap.add_argument("--skip-r50", action="store_true")
    ap.add_argument("--attributes-only", action="store_true",
                    help="only the attribute branch's overhead")
    a = ap.parse_args()
    ensure_data()
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {machine()}, torch threads {torch.get_num_threads()}, device {dev}")
    attribute_overhead(a.iters)
    if a.attributes_only:
        return
    iter_opts = [f"train_cfg.max_iters={a.iters}", f"train_cfg.val_interval={a.iters + 1}"]
    s, n = run("tiny_maskrcnn_imat.py", a.iters, 2, iter_opts)
    print(f"tiny_maskrcnn_imat (R18-FPN, 256 px, batch 2): {s:.2f} s/iter, {2 / s:.2f} img/s "
          f"(median of {n} iterations after 3 warm-up)")
    if a.skip_r50:
        return
    # R50 at the reference input size (short side 800, long <= 1024), batch 2
    epoch_opts = [f"train_dataloader.dataset.indices={2 * a.r50_iters}",
                  "train_cfg.max_epochs=1", "train_cfg.val_interval=2", "custom_hooks=[]"]
    for cfg, label in [("maskrcnn_r50_imat.py", "heads, backbone frozen"),
                       ("maskrcnn_r50_imat_all.py", "all layers, augmentation")]:
        s, n = run(cfg, a.r50_iters, 2, epoch_opts)
        print(f"{cfg} ({label}, 1024x800, batch 2): {s:.2f} s/iter, {2 / s:.2f} img/s "
              f"(median of {n} iterations after 3 warm-up)")


if __name__ == "__main__":
    main()
