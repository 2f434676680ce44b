"""Every command's outputs on the synthetic sets of both years, as digests: run before and after a
change that must not change any output (a refactoring), and compare.

    python -m tests.helpers.golden ROOT OUT.json [--no-models]

``ROOT`` must be the same folder both times (paths appear in some outputs); it is emptied first.
Each entry is a file's SHA-256 (first 16 hex digits) or a command's standard output with its
timings blanked. ``--no-models`` leaves out train, predict and run (the slow part).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.tuning_cases import write_noisy, write_noisy_test

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "imat_kit" / "configs" / "tiny_maskrcnn_imat.py"
TIMING = re.compile(r"\d+(\.\d+)?\s?(s|min|ms|it/s|s/it)\b")


#: JSON keys whose values change from one run to the next (timings, the code's commit, digests
#: of checkpoints, which hold their training's time)
VOLATILE = ("seconds", "iou_seconds", "seconds_by_part", "code_version", "time", "elapsed")
MADE = re.compile(rb"made \d{4}-\d\d-\d\d \d\d:\d\d")
VERSION = re.compile(rb"\d+\.\d+\.\d+\+g[0-9a-f]+")  # the code's commit
SHA = re.compile(r"[0-9a-f]{64}")
SHORT_SHA = re.compile(rb"<td>[0-9a-f]{12}</td>")  # the report's checkpoint digests


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items()
                if k not in VOLATILE and not k.endswith("sha256")}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, str) and SHA.fullmatch(value):  # a file's digest: its file is hashed
        return "<sha256>"
    return value


def _sha(path: Path) -> str:
    data = path.read_bytes().replace(str(REPO).encode(), b"<repo>")
    if path.suffix == ".json":
        data = json.dumps(_stable(json.loads(data)), sort_keys=True).encode()
    elif path.suffix == ".jsonl" and data:
        head, _, rest = data.partition(b"\n")
        data = json.dumps(_stable(json.loads(head)), sort_keys=True).encode() + b"\n" + rest
    elif path.suffix == ".html":
        data = VERSION.sub(b"<version>", MADE.sub(b"made <date>", data))
        data = SHORT_SHA.sub(b"<td><sha256></td>", data)
    return hashlib.sha256(data).hexdigest()[:16]


def _cli(*argv: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "imat_kit.cli", *argv], capture_output=True,
                       text=True, env=env, cwd=REPO)
    if p.returncode != 0:
        raise SystemExit(f"imat-kit {' '.join(argv)} failed ({p.returncode}):\n{p.stderr}")
    return TIMING.sub("<t>", p.stdout).replace(str(REPO), "<repo>")


def _files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(s in p.parts or p.name.endswith(s) for s in skip)}


def year_digests(root: Path, year: str, models: bool) -> dict:
    out: dict[str, object] = {}
    data, work = root / "data", root / "work"
    work.mkdir(parents=True)
    q = "--quiet"
    out["synth"] = _cli("synth", q, "--out", str(data), "--images", "40", "--test-images", "10",
                        "--seed", "3", "--year", year)
    out["synth_files"] = _files(data)
    out["prepare"] = _cli("prepare", q, "--data", str(data), "--folds", "2", "--seed", "0")
    out["prepare_files"] = _files(data / "annotations")
    out["stats"] = _cli("stats", q, "--data", str(data), "--json")
    for k in (0, 1):
        write_noisy(work / f"fold{k}_val.jsonl", data, "val", k, seed=k)
    t0, _ = write_noisy_test(work / "t0.jsonl", data, seed=10)
    t1, _ = write_noisy_test(work / "t1.jsonl", data, seed=11)
    preds = str(work / "fold*_val.jsonl")
    d = ["--data", str(data)]
    out["tune"] = _cli("tune", q, *d, "--predictions", preds, "--out", str(work / "pp.json"))
    out["tune_rescore"] = _cli("tune", q, *d, "--predictions", preds, "--rescore", "--seed", "1",
                               "--out", str(work / "pp_r.json"))
    out["tune_count"] = _cli("tune", q, *d, "--predictions", preds, "--fn", "count",
                             "--out", str(work / "pp_c.json"))
    out["tune_attributes"] = _cli("tune-attributes", q, *d, "--predictions", preds,
                                  "--out", str(work / "thr.json"))
    out["evaluate"] = _cli("evaluate", q, *d, "--predictions", preds, "--bbox",
                           "--out", str(work / "ev"))
    out["evaluate_post"] = _cli("evaluate", q, *d, "--predictions", preds, "--postprocess",
                                str(work / "pp_r.json"), "--out", str(work / "ev_post"))
    out["evaluate_thr"] = _cli("evaluate", q, *d, "--predictions", preds, "--fn", "count",
                               "--average", "class", "--attribute-thresholds",
                               str(work / "thr.json"), "--out", str(work / "ev_thr"))
    out["ensemble"] = _cli("ensemble", q, "--inputs", str(t0), str(t1), "--out",
                           str(work / "ens.jsonl"), *d)
    out["ensemble_nms"] = _cli("ensemble", q, "--inputs", str(t0), str(t1), "--method", "nms",
                               "--out", str(work / "ens_nms.jsonl"))
    out["ensemble_mean"] = _cli("ensemble", q, "--inputs", str(t0), str(t1), "--scores", "mean",
                                "--weights", "2", "1", "--out", str(work / "ens_mean.jsonl"))
    sub = str(work / "sub.csv")
    out["submit"] = _cli("submit", q, *d, "--predictions", str(work / "ens.jsonl"),
                         "--postprocess", str(work / "pp_r.json"), "--out", sub)
    out["submit_thr"] = _cli("submit", q, *d, "--predictions", str(t0), "--score-thr", "0.4",
                             "--max-per-image", "7", "--min-area", "30",
                             *(["--attributes"] if year == "2019" else []),
                             "--attribute-thresholds", str(work / "thr.json"),
                             "--out", str(work / "sub_thr.csv"))
    out["submit_plain"] = _cli("submit", q, *d, "--predictions", str(t1), "--mask-size", "512",
                               "--out", str(work / "sub_512.csv"))
    out["validate"] = _cli("validate", q, *d, "--submission", sub)
    solution = str(data / "test_solution.csv")
    out["score"] = _cli("score", q, *d, "--submission", sub, "--solution", solution,
                        "--year", year)
    out["score_paired"] = _cli("score", q, *d, "--submission", str(work / "sub_thr.csv"),
                               "--solution", solution, "--year", year,
                               *(["--attributes"] if year == "2019" else []),
                               "--sweep", "paired", "--fn", "count", "--average", "image_class")
    for kind in ("pr", "confusion", "overlays", "categories", "attributes"):
        p = str(work / "fold0_val.jsonl")
        extra = {"pr": ["--predictions", p], "confusion": ["--predictions", p],
                 "overlays": ["--predictions", p, "--n", "2", "--seed", "0"],
                 "categories": [], "attributes": ["--predictions", p]}[kind]
        out[f"plot_{kind}"] = _cli("plot", kind, q, *d, *extra,
                                   "--out", str(work / f"{kind}.png"))
    out["report"] = _cli("report", q, *d, "--predictions", preds, "--postprocess",
                         str(work / "pp_r.json"), "--submission", sub, "--gallery", "2",
                         "--out", str(work / "report.html"))
    out["work_files"] = _files(work)
    if models:
        out["run"] = _cli("run", q, str(TINY), *d, "--folds", "0,1", "--out", str(root / "run"),
                          "--cfg-options", "train_cfg.max_iters=3", "--no-figures")
        out["run_files"] = _files(root / "run", skip=(".pth", "last_checkpoint", ".log", ".steps",
                                                      "vis_data", "scalars.json"))
        ckpt = sorted((root / "run").rglob("iter_3.pth"))[0]
        out["predict"] = _cli("predict", q, str(TINY), str(ckpt), "--split", "val", "--fold",
                              "0", "--data-root", str(data), "--tta", "flip", "--soft-size",
                              "8", "--out", str(work / "pred_flip.jsonl"))
        out["predict_file"] = _sha(work / "pred_flip.jsonl")
    return out


def main(argv: list[str]) -> None:
    root, dest = Path(argv[0]), Path(argv[1])
    models = "--no-models" not in argv
    shutil.rmtree(root, ignore_errors=True)
    result = {year: year_digests(root / year, year, models) for year in ("2019", "2020")}
    dest.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
