"""``imat-kit predict`` on the competition's image sizes, with the real configs' 100 detections
(issue 29): peak memory and seconds per image, the masks kept per instance (now) against
mmdet's full-size N × H × W masks (before; run in the same session as the baseline), and the
two predictions files compared byte for byte.

One test image per run, a JPEG of each size: 2151 × 1710 (the Fashionpedia mean, as reported),
4000 × 3000, and 10717 × 6824 (the largest 2019 training image). The model is the tiny config,
freshly initialised (seeded) with ``model.test_cfg.rcnn.max_per_img=100`` and
``score_thr=0.0``: 100 detections per image, boxes of the anchors' sizes scaled to the image.
Full-size masks on the largest image need tens of GB (the process is killed on a 24 GB
machine), so that baseline is run only with ``--all``. Goal: peak ≤ 3 GB at every size with
masks per instance; no slower than full-size masks on the mean-size image. Each size's
predictions then go to a submission (``submit --score-thr 0``: all 100 detections) that
``validate`` accepts (a non-zero exit stops the benchmark), both measured.

``--family rtmdet_ins|mask2former|yolact``: the same with that family's tiny config (its head
resizes every instance's mask logits to the original size: 100 × 73 Mpx float is 29 GB).

    python benchmarks/predict_memory.py [--all] [--family maskrcnn] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, machine, run_measured
from predict_speed import tiny_checkpoint
from train_speed import DATA, ensure_data

SIZES = ((1710, 2151), (3000, 4000), (6824, 10717))  # (height, width)
OPTS = ["model.test_cfg.rcnn.max_per_img=100", "model.test_cfg.rcnn.score_thr=0.0",
        "model.test_cfg.rpn.max_per_img=300"]
#: the other families' tiny configs and the options that keep 100 detections (--family)
FAMILIES = {
    "maskrcnn": ("tiny_maskrcnn_imat.py", OPTS),
    "rtmdet_ins": ("tiny/rtmdet_ins_imat.py", ["model.test_cfg.max_per_img=100",
                                               "model.test_cfg.score_thr=0.0",
                                               "model.test_cfg.nms_pre=1000"]),
    "mask2former": ("tiny/mask2former_imat.py", ["model.test_cfg.max_per_image=100"]),
    "yolact": ("tiny/yolact_imat.py", ["model.test_cfg.max_per_img=100",
                                       "model.test_cfg.score_thr=0.0"]),
}
DRIVER = """
import contextlib, sys
from imat_kit.mmdet_ext import predict as P
if sys.argv[1] == "full_size":
    P.box_mask_heads = contextlib.nullcontext  # mmdet's N x H x W masks (the baseline)
P.predict(sys.argv[2], sys.argv[3], split="test", out=sys.argv[5], data_root=sys.argv[4],
          device="cpu", batch_size=1, quiet=True, cfg_options=sys.argv[6:])
"""


def one_image_data(root: Path, h: int, w: int) -> Path:
    """The benchmark's prepared data with one test image of h × w (a synthetic training image
    resized), its test.json and sample submission."""
    from PIL import Image

    data = root / f"data_{w}x{h}"
    data.mkdir()
    for name in ("train", "label_descriptions.json", "folds.csv"):
        if (DATA / name).exists():
            (data / name).symlink_to(DATA / name)
    (data / "annotations").mkdir()
    for p in (DATA / "annotations").glob("*.json"):
        if p.name != "test.json":
            (data / "annotations" / p.name).symlink_to(p)
    (data / "test").mkdir()
    src = next(iter(sorted((DATA / "train").glob("*.jpg"))))
    key = f"big_{w}x{h}.jpg"
    Image.open(src).convert("RGB").resize((w, h), Image.BILINEAR).save(data / "test" / key,
                                                                        quality=90)
    (data / "sample_submission.csv").write_text(f"ImageId,EncodedPixels,ClassId\n{key},,0\n")
    cats = json.loads((DATA / "annotations" / "all.json").read_text())["categories"]
    (data / "annotations" / "test.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": key, "height": h, "width": w, "image_key": key}],
         "annotations": [], "categories": cats}))
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true",
                    help="also the full-size baseline on the largest image (tens of GB)")
    ap.add_argument("--family", choices=list(FAMILIES), default="maskrcnn",
                    help="the family's tiny config (default: Mask R-CNN)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ensure_data()
    name, opts = FAMILIES[a.family]
    config = REPO / "configs" / name
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "tiny.pth"
        tiny_checkpoint(ckpt, config)
        for h, w in SIZES:
            data = one_image_data(tmp, h, w)
            row = {"size": f"{w}x{h}", "megapixels": round(h * w / 1e6, 1)}
            for way in ("per_instance", "full_size"):
                # all-at-once masks: tens of GB on the largest image (the single-stage and
                # query-based heads hold float logits: already ~15 GB at 4000 x 3000)
                big = h * w > (20e6 if a.family == "maskrcnn" else 5e6)
                if way == "full_size" and big and not a.all:
                    row[way] = "not run (tens of GB; --all)"
                    continue
                out = tmp / f"{way}_{w}x{h}.jsonl"
                wall, peak = run_measured([sys.executable, "-c", DRIVER, way, str(config),
                                           str(ckpt), str(data), str(out), *opts])
                lines = out.read_text().splitlines()
                n = len(json.loads(lines[1])["labels"]) if len(lines) > 1 else 0
                row[way] = {"seconds": round(wall, 1), "peak_gib": round(peak, 2),
                            "detections": n}
            # the per-instance predictions to a submission, as a user goes on: submit at
            # score 0 (every detection written) and validate, both measured
            sub = tmp / f"sub_{w}x{h}.csv"
            kit = [sys.executable, "-m", "imat_kit.cli"]
            s_wall, s_peak = run_measured(
                [*kit, "submit", "--predictions", str(tmp / f"per_instance_{w}x{h}.jsonl"),
                 "--data", str(data), "--out", str(sub), "--score-thr", "0", "-q"],
                stdout=subprocess.DEVNULL)
            v_wall, v_peak = run_measured([*kit, "validate", "--submission", str(sub),
                                           "--data", str(data), "-q"],
                                          stdout=subprocess.DEVNULL)
            row["submission"] = {"rows": len(sub.read_text().splitlines()) - 1,
                                 "submit_seconds": round(s_wall, 1),
                                 "submit_peak_gib": round(s_peak, 2),
                                 "validate_seconds": round(v_wall, 1),
                                 "validate_peak_gib": round(v_peak, 2), "valid": True}
            both = [tmp / f"{x}_{w}x{h}.jsonl" for x in ("per_instance", "full_size")]
            if all(p.exists() for p in both):
                row["files_identical"] = both[0].read_bytes() == both[1].read_bytes()
            rows.append(row)
            shutil.rmtree(data)
            print(json.dumps(row), flush=True)
    peaks = [r["per_instance"]["peak_gib"] for r in rows]
    mean = rows[0]
    slower = mean["per_instance"]["seconds"] / mean["full_size"]["seconds"]
    out = {"machine": machine(), "family": a.family, "rows": rows,
           "max_peak_gib_per_instance": max(peaks),
           "mean_size_time_ratio": round(slower, 2)}
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    ok = max(peaks) <= 3 and all(r.get("files_identical", True) for r in rows)
    print(f"predict at real sizes: peak {max(peaks):.2f} GiB with masks per instance (goal ≤ 3), "
          f"{slower:.2f}× the full-size masks' time on the mean-size image, files identical: "
          f"{all(r.get('files_identical', True) for r in rows)}: {'met' if ok else 'NOT met'}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
