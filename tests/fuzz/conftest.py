"""The fuzz suite's profiles and the valid files it mutates.

Profiles (``HYPOTHESIS_PROFILE``): ``small`` (the default, in ``make test``: a few seeded
cases per reader and command, well under a minute) and ``long`` (``make fuzz``: thousands of
cases; with ``IMAT_FUZZ_LOG`` every outcome is logged, see tests/helpers/fuzz.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": list(HealthCheck),
           "database": None, "print_blob": True}
settings.register_profile("small", max_examples=int(os.environ.get("IMAT_FUZZ_CASES", 12)),
                          derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("IMAT_FUZZ_CASES", 400)),
                          derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "small"))


def _dataset(root: Path, year: int) -> Path:
    from imat_kit.cli.commands import main
    from imat_kit.data.prepare import prepare
    from imat_kit.data.synth import generate_images
    from imat_kit.predictions import write_predictions
    from tests.helpers.predictions import fold_predictions, truth_predictions, write_val

    data = root / "data"
    generate_images(data, images=10, test_images=3, seed=7, min_side=40, max_side=64,
                    year=year, quiet=True)
    prepare(data, n_folds=2, seed=0, quiet=True)
    files = root / "valid"
    files.mkdir()
    for k in (0, 1):
        write_val(files / f"fold{k}_val.jsonl", fold_predictions(data, k,
                                                                  attributes=year == 2020), k)
    write_predictions(files / "test.jsonl", {"split": "test"}, truth_predictions(data).values())
    sub = files / "submission.csv"
    assert main(["submit", "--predictions", str(files / "test.jsonl"), "--data", str(data),
                 "--out", str(sub), "--quiet"]) == 0
    vals = [str(files / "fold0_val.jsonl"), str(files / "fold1_val.jsonl")]
    assert main(["tune", "--data", str(data), "--predictions", *vals, "--out",
                 str(files / "postprocess.json"), "--quiet", "--min-support", "1"]) == 0
    assert main(["evaluate", "--data", str(data), "--predictions", *vals, "--out",
                 str(files / "eval"), "--quiet"]) == 0
    if year == 2020:
        assert main(["tune-attributes", "--data", str(data), "--predictions", *vals, "--out",
                     str(files / "thresholds.json"), "--quiet", "--min-support", "1"]) == 0
        _fashionpedia_file(data, files / "instances_attributes_train2020.json")
    return root


def _fashionpedia_file(data: Path, path: Path) -> None:
    """The prepared annotations in Fashionpedia's layout (one polygon among the RLEs)."""
    import json

    coco = json.loads((data / "annotations" / "all.json").read_text())
    anns = []
    for i, a in enumerate(coco["annotations"]):
        x, y, w, h = a["bbox"]
        seg = ([[x, y, x + w, y, x + w, y + h, x, y + h]] if i == 0 else a["segmentation"])
        anns.append({"id": a["id"], "image_id": a["image_id"], "category_id": a["category_id"],
                     "attribute_ids": a["attribute_ids"], "segmentation": seg,
                     "bbox": a["bbox"], "area": a["area"], "iscrowd": 0})
    images = [{"id": im["id"], "file_name": im["file_name"], "height": im["height"],
               "width": im["width"]} for im in coco["images"]]
    path.write_text(json.dumps({"info": {"year": 2020}, "images": images, "annotations": anns,
                                "categories": coco["categories"],
                                "attributes": coco["attributes"]}))


@pytest.fixture(scope="session")
def fuzz2019(tmp_path_factory) -> Path:
    """A tiny 2019 dataset (10 training images of 40–64 px, 3 test images), prepared into 2
    folds, with a valid file of each kind under ``valid/``."""
    return _dataset(tmp_path_factory.mktemp("fuzz2019"), 2019)


@pytest.fixture(scope="session")
def fuzz2020(tmp_path_factory) -> Path:
    """The same in the 2020 layout (attributes)."""
    return _dataset(tmp_path_factory.mktemp("fuzz2020"), 2020)
