"""Data loading at the competition's real image sizes (issue 29): each family's training
pipeline, as the kit's config has it (``IMatLoadAnnotations``: masks kept as runs until
resized), against the same pipeline with mmdet's stock ``LoadAnnotations`` (the original-size
``N × H × W`` masks; the kit's ``ShrinkToFit`` steps removed), on the same JPEGs and
annotations: images/s for one worker process, its peak resident memory, and how many loader
workers one GPU needs to keep up.

Data: ``imat-kit synth --scale real`` (JPEGs at the real sizes: mean about 1710 × 2151, 7.3
instances per image; the first training image is 10717 × 6824 with 50 instances, the
competition's largest), prepared once under outputs/bench/real_data. Each (family, loader) runs
in its own process over the same images, the largest first, through the dataset's own
``prepare_data`` (what a DataLoader worker calls); a process whose memory passes ``--kill-gib``
is stopped and reported as such.

GPU consumption (images/s per GPU), from mmdet: Mask R-CNN R50-FPN trains at 0.265 s per
iteration of 2 images on a V100 (7.5 img/s, its model-zoo table). mmdet's metafiles give no
training speed for the other families, only inference time (ms/image, V100) for some: Cascade
Mask R-CNN R50 89.29 (11.2 img/s) and YOLACT R50 23.53 (42.5 img/s), upper bounds of what
training consumes; HTC X101-DCN, RTMDet-Ins-l and Mask2Former have none, so Mask R-CNN's 7.5
stands in (they are slower per image than Mask R-CNN: fewer workers would do). Workers needed
= ceil(GPU images/s ÷ one worker's images/s on this machine's cores).

    python benchmarks/loader.py [--images 200] [--limit 60] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import REPO, machine

DATA = REPO / "outputs" / "bench" / "real_data"

# (name, config, GPU images/s the loader must feed, where that figure comes from)
MASK_RCNN = (7.5, "Mask R-CNN R50 training, 0.265 s/iter of 2 images, V100")
STAND_IN = (7.5, "none published: Mask R-CNN's training rate (a slower model needs less)")
FAMILIES = [
    ("Mask R-CNN R50 (phase 1)", "maskrcnn_r50_imat.py", *MASK_RCNN),
    ("Mask R-CNN R50 (phase 2, augmentation)", "maskrcnn_r50_imat_all.py", *MASK_RCNN),
    ("Cascade Mask R-CNN R50", "cascade_maskrcnn_r50_imat.py", 11.2,
     "inference 89.29 ms/image, V100 (an upper bound)"),
    ("HTC X101-DCN", "htc_x101_dcn_imat.py", *STAND_IN),
    ("RTMDet-Ins-l", "rtmdet_ins_l_imat.py", *STAND_IN),
    ("Mask2Former R50", "mask2former_r50_imat.py", *STAND_IN),
    ("YOLACT R50", "yolact_r50_imat.py", 42.5, "inference 23.53 ms/image, V100 (an upper bound)"),
]

DRIVER = r"""
import json, resource, sys, time
import numpy as np
from imat_kit.mmdet_ext.config import load_config
from mmengine.registry import init_default_scope
from mmdet.registry import DATASETS
import imat_kit.mmdet_ext  # noqa: F401

config, data, loader, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = load_config(config, fold=0, data_root=data)
init_default_scope("mmdet")


def stock(steps):
    out = []
    for t in steps:
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "ShrinkToFit":
            continue
        if kind == "IMatLoadAnnotations":
            t = dict(t, type="LoadAnnotations")
        if isinstance(t, dict) and "transforms" in t:
            t = dict(t, transforms=stock(t["transforms"]))
        out.append(t)
    return out


ds_cfg = cfg.train_dataloader.dataset
while "pipeline" not in ds_cfg and "dataset" in ds_cfg:
    ds_cfg = ds_cfg.dataset
ds_cfg = dict(ds_cfg, split="all", filter_cfg=None)
if loader == "stock":
    ds_cfg["pipeline"] = stock(list(ds_cfg["pipeline"]))
ds = DATASETS.build(ds_cfg)
pixels = [ds.get_data_info(i)["height"] * ds.get_data_info(i)["width"] for i in range(len(ds))]
largest = int(np.argmax(pixels))
order = [largest] + [i for i in range(len(ds)) if i != largest][: limit - 1]
np.random.seed(0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
times = []
for k, i in enumerate(order):
    t = time.perf_counter()
    ds.prepare_data(i)
    times.append(time.perf_counter() - t)
    if k == 0:
        first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        info = ds.get_data_info(i)
        print(json.dumps({"largest": [info["width"], info["height"]],
                          "largest_instances": len(info["instances"])}), flush=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"images": len(times), "largest_s": times[0],
                  "images_per_s": (len(times) - 1) / sum(times[1:]),
                  "base_gib": base, "peak_largest_gib": first, "peak_gib": peak}), flush=True)
"""


def ensure_data(images: int, seed: int) -> None:
    stamp = DATA / "stamp.json"
    want = {"images": images, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    kit = [sys.executable, "-m", "imat_kit.cli"]
    if DATA.exists():
        subprocess.run(["rm", "-rf", str(DATA)], check=True)
    subprocess.run([*kit, "synth", "--scale", "real", "--out", str(DATA), "--images",
                    str(images), "--test-images", "2", "--seed", str(seed), "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*kit, "prepare", "--data", str(DATA), "--folds", "2", "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    stamp.write_text(json.dumps(want))


def rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_one(config: str, loader: str, limit: int, kill_gib: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(REPO / "configs" / config),
                             str(DATA), loader, str(limit)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    killed = threading.Event()

    def watch() -> None:
        while proc.poll() is None:
            if rss_gib(proc.pid) > kill_gib:
                killed.set()
                proc.kill()
                return
            time.sleep(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out, err = proc.communicate()
    th.join()
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    row = {k: v for line in lines for k, v in line.items()}
    if killed.is_set():
        row["killed_at_gib"] = kill_gib
    elif proc.returncode != 0:
        last = [x for x in err.strip().splitlines() if x.strip()][-1:]
        row["failed"] = last[0][:300] if last else f"exit code {proc.returncode}"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="real-size training images")
    ap.add_argument("--limit", type=int, default=60,
                    help="images timed per (family, loader), the largest first")
    ap.add_argument("--kill-gib", type=float, default=16.0,
                    help="stop a loader whose memory passes this")
    ap.add_argument("--only", default=None, help="comma-separated config names")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ensure_data(a.images, a.seed)
    rows = []
    for name, config, gpu_ips, source in FAMILIES:
        if a.only and config.removesuffix(".py") not in a.only.split(","):
            continue
        row = {"family": name, "config": config, "gpu_images_per_s": gpu_ips,
               "gpu_source": source}
        for loader in ("kit", "stock"):
            r = run_one(config, loader, a.limit, a.kill_gib)
            if "images_per_s" in r:
                r["workers_per_gpu"] = math.ceil(gpu_ips / r["images_per_s"])
            row[loader] = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
        if "images_per_s" in row["stock"] and "images_per_s" in row["kit"]:
            row["speed_ratio_kit_over_stock"] = round(
                row["kit"]["images_per_s"] / row["stock"]["images_per_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"machine": machine(), "images": a.images, "timed_per_loader": a.limit, "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    print("\n| family | loader | img/s (one worker) | peak GiB (largest image) | "
          "workers per GPU |")
    print("|---|---|---|---|---|")
    for r in rows:
        for loader in ("kit", "stock"):
            x = r[loader]
            if "killed_at_gib" in x:
                print(f"| {r['family']} | {loader} | — | killed at {x['killed_at_gib']:.0f} "
                      "| — |")
            elif "failed" in x:
                print(f"| {r['family']} | {loader} | fails: {x['failed']} | — | — |")
            else:
                print(f"| {r['family']} | {loader} | {x['images_per_s']:.2f} | "
                      f"{x['peak_largest_gib']:.2f} | {x['workers_per_gpu']} |")


if __name__ == "__main__":
    main()
