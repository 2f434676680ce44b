"""The HTML report: its content checked as a reader would, and rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imat_kit.cli.commands import main
from imat_kit.eval.evaluate import REFERENCE_TABLE3
from imat_kit.predictions import ImagePrediction, write_predictions
from imat_kit.report import SECTIONS
from tests.helpers.report import check_report


def _noisy_val(prepared: Path, fold: int, out: Path) -> None:
    gt = json.loads((prepared / "annotations" / f"fold{fold}_val.json").read_text())
    anns: dict = {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    rng = np.random.default_rng(fold)
    preds = []
    for im in gt["images"]:
        a = [x for x in anns.get(im["id"], []) if rng.random() < 0.8]
        labels = [x["category_id"] if rng.random() < 0.8 else (x["category_id"] + 5) % 46
                  for x in a]
        preds.append(ImagePrediction(
            im["image_key"], im["height"], im["width"], np.array(labels, np.int64),
            rng.uniform(0.2, 1, len(a)).astype(np.float32),
            np.array([x["bbox"] for x in a], np.float32).reshape(-1, 4),
            [x["segmentation"]["counts"] for x in a],
            attributes=[tuple(x["attribute_ids"]) if rng.random() < 0.7 else (3,) for x in a]))
    write_predictions(out, {"split": "val", "fold": fold, "config": "configs/x.py",
                            "checkpoint": f"fold{fold}.pth", "checkpoint_sha256": "ab" * 32,
                            "tta": "flip", "cfg_options": ["a=1"]}, preds)


@pytest.fixture(scope="module")
def report(prepared, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("report")
    for k in (0, 1):
        _noisy_val(prepared, k, d / f"fold{k}_val.jsonl")
    out = d / "report.html"
    assert main(["report", "--data", str(prepared), "--predictions", str(d / "fold*_val.jsonl"),
                 "--out", str(out), "--gallery", "3", "-q"]) == 0
    return out


def _tables(page: str, section: str) -> list[list[list[str]]]:
    """The tables of one section: rows of cell texts (header row first)."""
    body = re.search(rf'<section id="{section}">(.*?)</section>', page, re.S).group(1)
    return [[re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S)
             for row in re.findall(r"<tr[^>]*>(.*?)</tr>", t, re.S)]
            for t in re.findall(r"<table>(.*?)</table>", body, re.S)]


def test_report_content(report, prepared, tmp_path):
    page = check_report(report)
    assert "fold0.pth" in page and "abababababab" in page  # provenance from the headers
    # the fold table holds the evaluation's figures, fold by fold, then mean and std
    assert main(["evaluate", "--bbox", "--data", str(prepared), "--predictions",
                 str(report.parent / "fold*_val.jsonl"), "--out", str(tmp_path)]) == 0
    ev = pd.read_csv(tmp_path / "evaluation.csv", dtype={"fold": str})
    folds, reference = _tables(page, "folds")
    head, rows = folds[0], folds[1:]
    assert [r[0] for r in rows] == ev.fold.tolist() == ["0", "1", "mean", "std"]
    for col in ("segm_AP", "segm_AP50", "bbox_AP", "competition"):
        shown = [float(r[head.index(col)]) for r in rows]
        assert shown == pytest.approx(ev[col].round(4).tolist(), abs=1e-9), col
    assert 0 < ev.segm_AP[0] < 1  # noisy predictions: a figure that could be wrong
    # the reference study beside it, every row
    assert [r[0] for r in reference[1:]] == REFERENCE_TABLE3.run.tolist()
    assert [float(r[reference[0].index("AP")]) for r in reference[1:]] == \
        REFERENCE_TABLE3.AP.tolist()
    assert page.count("<h3>Worst 3</h3>") == 1 and page.count("<h3>Best 3</h3>") == 1
    assert "micro F1 over matched instances" in page  # the predictions carry attributes
    for name in ("classification", "localisation", "duplicate", "background", "missed"):
        assert f"dAP {name}" in page


def test_report_renders_in_chromium(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs it where apt-get works)")
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--enable-logging=stderr", "--v=0"]
    r = subprocess.run([*base, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    for s in SECTIONS:
        assert f'id="{s}"' in r.stdout
    assert "Failed to load resource" not in r.stderr and "net::ERR_" not in r.stderr
    shot = tmp_path / "shot.png"
    r = subprocess.run([*base, "--window-size=1200,3000", f"--screenshot={shot}",
                        report.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert px.shape == (3000, 1200) and px.std() > 20  # a page, not a blank window


def test_report_needs_predictions(prepared, tmp_path, capsys):
    assert main(["report", "--data", str(prepared), "--predictions",
                 str(tmp_path / "none*.jsonl")]) == 2
    assert "no predictions file matches" in capsys.readouterr().err
