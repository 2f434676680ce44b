import json

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_util

from imat_kit.cli.commands import main
from imat_kit.data import rle
from imat_kit.data.labels import load_labels
from imat_kit.data.paths import sample_image_ids
from imat_kit.eval.metric import competition_score
from imat_kit.postprocess import PostProcess
from imat_kit.predictions import ImagePrediction, read_predictions, write_predictions
from imat_kit.submission import (
    csv_instances,
    image_rows,
    validate_submission,
    write_submission,
)
from tests.helpers.predictions import truth_predictions


def sizes_of(data):
    df = pd.read_csv(data / "test_solution.csv")
    s = {k: (int(h), int(w)) for k, h, w in zip(df.ImageId, df.Height, df.Width)}
    from PIL import Image
    for p in (data / "test").iterdir():
        with Image.open(p) as im:
            s.setdefault(p.name, (im.height, im.width))
    return s


def test_perfect_predictions_score_one_and_validate(synth_dir, tmp_path):
    preds = truth_predictions(synth_dir)
    ids = sample_image_ids(synth_dir)
    out = tmp_path / "submissions" / "perfect.csv"
    man = write_submission(preds, ids, out, PostProcess(score_thr=0.0, min_area=0),
                           attributes=True, quiet=True,
                           manifest={"note": "test"})
    assert json.loads(out.with_suffix(".json").read_text())["thresholds"]["attributes"] is True
    assert man["code_version"].startswith("0.1.0")
    sizes = sizes_of(synth_dir)
    assert validate_submission(out, ids, sizes, load_labels()) == []
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(dict.fromkeys(sub.ImageId)) == ids  # every image, in the sample's order
    truth = csv_instances(synth_dir / "test_solution.csv", sizes)
    got = csv_instances(out, sizes, with_scores=True)
    assert competition_score(truth, got)["score"] == pytest.approx(1.0)
    # without attributes in the ClassId the attribute-matching score drops, the plain one not
    out2 = tmp_path / "plain.csv"
    write_submission(preds, ids, out2, PostProcess(score_thr=0.0, min_area=0), quiet=True)
    got2 = csv_instances(out2, sizes, with_scores=True)
    assert competition_score(truth, got2)["score"] < 1.0
    assert competition_score(csv_instances(synth_dir / "test_solution.csv", sizes,
                                           use_attributes=False),
                             csv_instances(out2, sizes, use_attributes=False))["score"] == 1.0


def _pred(masks, labels, scores, h=10, w=10):
    rles = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    return ImagePrediction("x.jpg", h, w, np.array(labels), np.array(scores, np.float32),
                           np.array([mask_util.toBbox(r) for r in rles], np.float32),
                           [r["counts"].decode() for r in rles])


def test_same_class_overlap_goes_to_the_best_score():
    a = np.zeros((10, 10), bool)
    a[0:6, 0:6] = True
    b = np.zeros((10, 10), bool)
    b[3:9, 3:9] = True
    p = _pred([a, b, b], [6, 6, 7], [0.5, 0.9, 0.8])
    rows = image_rows(p, PostProcess(score_thr=0.1, min_area=1))
    assert [c for _, c in rows] == ["6", "7", "6"]  # by descending score
    np.testing.assert_array_equal(rle.decode(rows[0][0], 10, 10), b)  # best, whole
    np.testing.assert_array_equal(rle.decode(rows[1][0], 10, 10), b)  # other class: kept
    np.testing.assert_array_equal(rle.decode(rows[2][0], 10, 10), a & ~b)  # loses overlap
    # thresholds: score, count, leftover area
    assert len(image_rows(p, PostProcess(score_thr=0.85))) == 1
    assert len(image_rows(p, PostProcess(score_thr=0.1, max_per_image=2))) == 2
    assert [c for _, c in image_rows(p, PostProcess(score_thr=0.1, min_area=28))] == ["6", "7"]
    assert (a & ~b).sum() == 27


def test_mask_size_512(synth_dir, tmp_path):
    preds = truth_predictions(synth_dir)
    ids = sample_image_ids(synth_dir)
    out = tmp_path / "s512.csv"
    write_submission(preds, ids, out, PostProcess(score_thr=0), mask_size="512", quiet=True)
    assert validate_submission(out, ids, {}, load_labels(), mask_size="512") == []
    bad = validate_submission(out, ids, sizes_of(synth_dir), load_labels())
    assert any("past the" in p.message for p in bad)


def _write(path, rows):
    pd.DataFrame(rows, columns=["ImageId", "EncodedPixels", "ClassId"]).to_csv(path, index=False)


def test_validator_reports_every_problem(tmp_path):
    ids = ["a.jpg", "b.jpg", "c.jpg"]
    sizes = {k: (4, 4) for k in ids}
    lab = load_labels()
    p = tmp_path / "s.csv"
    _write(p, [["a.jpg", "1 4", "6"],            # 2 ok
               ["a.jpg", "3 4", "6"],            # 3 overlaps row 2 (same class)
               ["a.jpg", "3 4", "7"],            # 4 ok: other class
               ["a.jpg", "1 2 3", "8"],          # 5 odd tokens
               ["b.jpg", "15 5", "6"],           # 6 past 16 pixels
               ["b.jpg", "5 1 1 1", "6"],        # 7 unsorted
               ["b.jpg", "1 1", "46"],           # 8 unknown class
               ["b.jpg", "2 1", "6_92"],         # 9 unknown attribute
               ["b.jpg", "", "23"],              # 10 empty beside other rows
               ["z.jpg", "1 1", "6"]])           # 11 not a test image; c.jpg missing
    probs = validate_submission(p, ids, sizes, lab)
    rows = sorted(x.row or 0 for x in probs)
    assert rows == [0, 3, 5, 6, 7, 8, 9, 10, 11], probs
    text = "\n".join(map(str, probs))
    assert "row 3: mask overlaps row 2's mask of the same ClassId '6'" in text
    assert "row 5: EncodedPixels: RLE has an odd number of tokens" in text
    assert "unknown category id 46" in text and "unknown attribute id 92" in text
    assert "1 test image(s) missing, e.g. ['c.jpg']" in text
    assert "row 7: EncodedPixels: RLE runs 1 and 2 are unsorted" in text
    assert "row 10: empty EncodedPixels for 'b.jpg', which has other rows" in text
    p.write_text("ImageId,Mask,ClassId\n")
    assert "header must be" in str(validate_submission(p, ids, sizes, lab)[0])


def test_cli_submit_validate_score(synth_dir, tmp_path, capsys):
    preds = truth_predictions(synth_dir, attributes=False)
    pf = tmp_path / "p.jsonl"
    write_predictions(pf, {"split": "test", "config": "c.py", "checkpoint": "k.pth"},
                      preds.values())
    assert read_predictions(pf)[1].keys() == preds.keys()
    out = tmp_path / "submissions" / "demo.csv"
    ev = tmp_path / "evaluation.csv"
    ev.write_text("fold,segm_AP\n0,0.5\n1,0.7\nmean,0.6\nstd,0.1\n")
    assert main(["submit", "--predictions", str(pf), "--data", str(synth_dir), "--out",
                 str(out), "--score-thr", "0", "--evaluation", str(ev), "-q"]) == 0
    o = capsys.readouterr().out
    assert "validated: no problems" in o
    man = json.loads(out.with_suffix(".json").read_text())
    assert man["source"]["checkpoint"] == "k.pth" and man["predictions"] == str(pf)
    assert man["fold_scores"][2] == {"fold": "mean", "segm_AP": 0.6}
    assert man["thresholds"]["score_thr"] == 0.0 and man["code_version"]
    assert main(["validate", "--submission", str(out), "--data", str(synth_dir)]) == 0
    assert main(["score", "--submission", str(out), "--solution",
                 str(synth_dir / "test_solution.csv"), "--data", str(synth_dir)]) == 0
    assert "competition score (image average, attributes ignored): 1.0000" in \
        capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    _write(bad, [["nope.jpg", "1 1", "6"]])
    assert main(["validate", "--submission", str(bad), "--data", str(synth_dir)]) == 1
    assert "not in sample_submission.csv" in capsys.readouterr().out
