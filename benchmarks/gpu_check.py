"""The GPU path in one command: train, predict, submit, and throughput against stock MMDetection.

On a CUDA machine (the library's ``device`` tool, or your own):

    python benchmarks/gpu_check.py [--iters 40] [--predict-images 50] [--out outputs/gpu_check]

1. prints the versions: torch, CUDA, cuDNN, mmcv (and the CUDA its ops were compiled with),
   mmengine, mmdet, the card;
2. writes synthetic images at the real data's sizes (600–1000 px a side; the configs resize to
   short side 800, long side ≤ 1024) and prepares them;
3. trains, each for ``--iters`` iterations at batch 2, with and without mixed precision
   (``--amp bf16``): the kit's R50 recipe (phase 1 "heads", phase 2 "all layers") and
   MMDetection's own ``mask-rcnn_r50_fpn_1x_coco`` (benchmarks/configs/stock_mask_rcnn_r50.py,
   same images and sizes); checks every loss is finite and that it falls (median of the last
   five iterations below that of the first five); reports s/iter (median after 5 warm-up
   iterations, mmengine's per-iteration ``time``), images/s and peak GPU memory, and the ratio of
   each kit run to stock;
4. predicts ``--predict-images`` test images with the trained phase-1 checkpoint and writes a
   submission from them, validated;
5. writes everything to ``OUT/gpu_check.json``.

``--dry-run`` runs the same steps on the CPU at toy size (small images resized to 128 px, 2
iterations, no mixed precision): it checks the script, the configs and the commands, not the GPU.
The test suite runs it; a GPU-only test runs the real thing where CUDA is present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STOCK = REPO / "benchmarks" / "configs" / "stock_mask_rcnn_r50.py"
RUNS = [  # label, config, extra cfg-options
    ("kit R50 heads", REPO / "configs" / "maskrcnn_r50_imat.py", []),
    ("kit R50 all layers", REPO / "configs" / "maskrcnn_r50_imat_all.py", []),
    ("stock mask-rcnn_r50_fpn_1x", STOCK, ["optim_wrapper.optimizer.lr=0.0025"]),
]


def versions() -> dict:
    import mmcv
    import mmdet
    import mmengine
    import torch

    v = {"python": platform.python_version(), "torch": torch.__version__,
         "cuda (torch)": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
         "mmcv": mmcv.__version__, "mmengine": mmengine.__version__, "mmdet": mmdet.__version__,
         "cpu cores": os.cpu_count()}
    try:
        from mmcv.ops import get_compiler_version, get_compiling_cuda_version

        v["mmcv ops compiled with"] = f"{get_compiling_cuda_version()}, {get_compiler_version()}"
    except ImportError as e:  # mmcv without ops: the kit cannot run
        v["mmcv ops compiled with"] = f"NOT AVAILABLE ({e})"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v["card"] = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}"
    else:
        v["card"] = "none (CPU)"
    return v


def make_data(root: Path, *, images: int, test_images: int, dry: bool) -> None:
    """Synthetic images at the real data's sizes (toy sizes for a dry run), prepared."""
    from imat_kit.data.prepare import prepare
    from imat_kit.data.synth import generate_images

    if not (root / "annotations" / "all.json").exists():
        sides = (48, 80) if dry else (600, 1000)
        generate_images(root, images=images, test_images=test_images, seed=0,
                        min_side=sides[0], max_side=sides[1], quiet=True)
        prepare(root, n_folds=2, seed=0, quiet=True)


#: the input size of a dry run (the configs resize to 1024×800, seconds an iteration on a CPU)
TOY_SCALE = "(128,128)"


def toy_scale_options(config: Path, split: str) -> list[str]:
    """cfg-options that resize a config's training (or test) images to :data:`TOY_SCALE`."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    loader = "train_dataloader" if split == "train" else "test_dataloader"
    pipeline = cfg[loader].dataset.pipeline
    return [f"{loader}.dataset.pipeline.{i}.scale={TOY_SCALE}" for i, t in enumerate(pipeline)
            if t["type"] in ("Resize", "RandomResize")]


def train(label: str, config: Path, extra: list[str], *, data: Path, work: Path, iters: int,
          amp: str | None, workers: int) -> dict:
    """One training run of mmdet's tools/train.py; its per-iteration figures."""
    from imat_kit.mmdet_ext.train import amp_options

    opts = ["load_from=None", "train_dataloader.batch_size=2",
            f"train_dataloader.num_workers={workers}",
            f"train_dataloader.persistent_workers={workers > 0}",
            f"train_dataloader.pin_memory={workers > 0}",
            "train_dataloader.dataset.split=all", f"train_dataloader.dataset.indices={2 * iters}",
            "train_cfg.max_epochs=1", "train_cfg.val_interval=1000", "param_scheduler=[]",
            "default_hooks.logger.interval=1", "log_processor.window_size=1",
            "default_hooks.checkpoint.interval=1", "default_hooks.checkpoint.save_best=None",
            "custom_hooks=[]", *extra, *(amp_options(amp) if amp else [])]
    wd = work / (label.replace(" ", "_") + (f"_{amp}" if amp else ""))
    env = {**os.environ, "IMAT_DATA_ROOT": str(data) + "/", "IMAT_FOLD": "0",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    import mmdet

    # mmdet's own tools/train.py (what `mim train mmdet` runs), so openmim need not travel to a
    # GPU machine without a package registry
    train_py = Path(mmdet.__file__).parent / ".mim" / "tools" / "train.py"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(train_py), str(config), "--work-dir",
                        str(wd / "fold0"), "--cfg-options", *opts], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{label}: mim train failed\n{(r.stdout + r.stderr)[-4000:]}")
    from imat_kit.plots import read_scalars

    rows, _ = read_scalars(wd / "fold0")  # the training entries, in time order
    losses = [x["loss"] for x in rows]
    times = [x["time"] for x in rows if "time" in x]
    warm = min(5, max(len(times) - 1, 0))
    s_iter = statistics.median(times[warm:]) if times else float("nan")
    k = min(5, len(losses) // 2) or 1
    out = {"label": label, "amp": amp or "fp32", "iterations": len(losses),
           "s_per_iter": s_iter, "images_per_s": 2 / s_iter if s_iter else float("nan"),
           "peak_memory_MiB": max((x.get("memory", 0) for x in rows), default=0),
           "loss_first": statistics.median(losses[:k]), "loss_last": statistics.median(losses[-k:]),
           "losses_finite": all(v == v and abs(v) != float("inf") for v in losses),
           "wall_s": wall, "checkpoint": str(wd / "fold0" / "epoch_1.pth")}
    out["loss_falls"] = out["loss_last"] < out["loss_first"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--predict-images", type=int, default=50)
    ap.add_argument("--out", default=str(REPO / "outputs" / "gpu_check"))
    ap.add_argument("--workers", type=int, default=None, help="dataloader workers per run")
    ap.add_argument("--dry-run", action="store_true",
                    help="toy size on the CPU, no mixed precision: checks the script only")
    a = ap.parse_args()
    import torch

    dry = a.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --dry-run to check the script on the CPU")
    iters = 2 if dry else a.iters
    n_pred = 2 if dry else a.predict_images
    workers = a.workers if a.workers is not None else (0 if dry else 4)
    out = Path(a.out)
    data, work = out / "data", out / "work_dirs"
    report: dict = {"versions": versions(), "dry_run": dry, "iterations": iters}
    print(json.dumps(report["versions"], indent=1), flush=True)
    make_data(data, images=2 * iters, test_images=n_pred, dry=dry)

    runs = []
    for label, config, extra in RUNS:
        for amp in ([None] if dry else [None, "bf16"]):
            toy = toy_scale_options(config, "train") if dry else []
            r = train(label, config, [*extra, *toy], data=data, work=work, iters=iters, amp=amp,
                      workers=workers)
            runs.append(r)
            print(f"{label:<28} {r['amp']:>5}: {r['s_per_iter']:.3f} s/iter, "
                  f"{r['images_per_s']:.1f} img/s, peak {r['peak_memory_MiB']} MiB, loss "
                  f"{r['loss_first']:.3f} → {r['loss_last']:.3f}", flush=True)
    stock = {r["amp"]: r for r in runs if r["label"].startswith("stock")}
    for r in runs:
        base = stock.get(r["amp"])
        r["s_per_iter_vs_stock"] = r["s_per_iter"] / base["s_per_iter"] if base else None
        fp32 = next(x for x in runs if x["label"] == r["label"] and x["amp"] == "fp32")
        r["speedup_vs_fp32"] = fp32["s_per_iter"] / r["s_per_iter"]
    report["runs"] = runs

    from imat_kit.mmdet_ext.predict import predict
    from imat_kit.submission import submit

    device = "cpu" if dry else "cuda"
    ckpt = next(r["checkpoint"] for r in runs if r["label"] == "kit R50 heads")
    t = time.perf_counter()
    p = predict(RUNS[0][1], ckpt, split="test", out=out / "test.jsonl", data_root=str(data),
                batch_size=4, device=device, overwrite=True, quiet=True,
                cfg_options=["model.test_cfg.rcnn.score_thr=0.05",
                             *(toy_scale_options(RUNS[0][1], "test") if dry else [])])
    pred_s = time.perf_counter() - t
    man, problems = submit(out / "test.jsonl", data, out / "submission.csv", quiet=True)
    report["predict"] = {"images": p.images, "seconds": pred_s,
                         "images_per_s": p.images / pred_s, "submission_rows": man["rows"],
                         "submission_problems": [str(x) for x in problems]}
    print(f"predict: {p.images} test images in {pred_s:.1f} s "
          f"({p.images / pred_s:.1f} img/s); submission {man['rows']} rows, "
          f"{'valid' if not problems else f'{len(problems)} problem(s)'}")
    failed = [f"{r['label']} {r['amp']}" for r in runs if not r["losses_finite"]
              or (not dry and not r["loss_falls"])]
    report["ok"] = not failed and not problems
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print("\n| run | precision | s/iter | img/s | peak MiB | vs stock | vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        vs = f"{r['s_per_iter_vs_stock']:.2f}" if r["s_per_iter_vs_stock"] else "–"
        print(f"| {r['label']} | {r['amp']} | {r['s_per_iter']:.3f} | {r['images_per_s']:.1f} | "
              f"{r['peak_memory_MiB']} | {vs} | {r['speedup_vs_fp32']:.2f}× |")
    print(f"\n→ {out / 'gpu_check.json'}")
    if failed or problems:
        raise SystemExit(f"check failed: {', '.join(failed) or 'invalid submission'}")


if __name__ == "__main__":
    main()
