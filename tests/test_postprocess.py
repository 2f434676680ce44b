"""The post-processing settings (imat_kit.postprocess): what each setting does to an image's
instances, the overlap cut in C and numpy, and the postprocess file's checks."""


from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.cli.commands import main
from imat_kit.data.paths import find_labels
from imat_kit.errors import KitError
from imat_kit.postprocess import (
    AttributeDecoder,
    PostProcess,
    apply_postprocess,
    kept_instances,
    load_postprocess,
)
from tests.helpers.tuning_cases import postprocess_file, write_noisy_test


def test_overlap_cut_in_c_equals_numpy_and_the_pixels(monkeypatch):
    """class_leftovers cuts on runs in C (``_counts.leftover``) or in numpy: the same texts
    and areas, and the pixels of each mask minus the earlier kept ones."""
    from imat_kit.data import rle
    from imat_kit.postprocess import class_leftovers

    if rle._counts is None:
        pytest.skip("the C extension is not built here: only the numpy path runs")
    rng = np.random.default_rng(4)
    for _ in range(300):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        ms = (rng.random((int(rng.integers(1, 6)), h, w)) < rng.uniform(0.1, 0.9)).astype(
            np.uint8)
        rles = [{"size": [h, w], "counts": mask_util.encode(np.asfortranarray(m))["counts"]
                 .decode()} for m in ms]
        floor = int(rng.integers(1, 20))
        fast = class_leftovers(rles, floor, h * w)
        with monkeypatch.context() as m:
            m.setattr(rle, "_counts", None)
            assert class_leftovers(rles, floor, h * w) == fast
        taken = np.zeros((h, w), bool)
        for r, text, area in fast:
            left = ms[r].astype(bool) & ~taken
            assert area == left.sum() >= floor
            assert text == mask_util.encode(np.asfortranarray(left.astype(np.uint8)))[
                "counts"].decode()
            taken |= ms[r].astype(bool)


@pytest.mark.parametrize("change, match", [
    ({"score_thr": 1.5}, "score_thr must be a number within 0..1"),
    ({"max_per_image": 0}, "max_per_image must be an integer"),
    ({"category_thr": {"99": 0.5}}, "category id 99 is not a category"),
    ({"attributes": {"decoding": "threshold", "per_attribute": {"9999": 0.4}}},
     "attribute id 9999 is not an attribute"),
    ({"attributes": {"decoding": "sometimes"}}, "decoding must be one of"),
    ({"mask_thr": 0.4}, "store none"),  # these predictions have no soft masks
])
def test_a_bad_postprocess_file_is_refused_in_one_line(change, match, prepared, tmp_path,
                                                       capsys):
    f, _ = write_noisy_test(tmp_path / "t.jsonl", prepared, seed=1, soft=False)
    pp = postprocess_file(tmp_path, {**PostProcess().values(), **change})
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["submit", "-q", "--data", str(prepared), "--predictions", str(f), "--out",
               str(out / "s.csv"), "--postprocess", str(pp)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and match in err[0], err
    assert list(out.iterdir()) == []


def test_postprocess_of_other_data_is_refused_and_options_replace_its_values(prepared, tmp_path,
                                                                              capsys):
    from imat_kit.data.labels import load_labels
    from imat_kit.predictions import label_space
    from tests.helpers.prediction_cases import write_case

    f = write_case(tmp_path / "t.jsonl", prepared, "test", seed=1)
    pp = postprocess_file(tmp_path, PostProcess().values(),
                          label_space=label_space(load_labels(year=2020)))
    with pytest.raises(KitError, match="tuned on data with other attributes"):
        load_postprocess(pp, find_labels(prepared))
    for bad in ("not json", json.dumps({"format": "other"})):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(KitError, match=r"bad\.json"):
            load_postprocess(tmp_path / "bad.json")
    ok = postprocess_file(tmp_path, PostProcess(max_per_image=7).values())
    rc = main(["submit", "-q", "--data", str(prepared), "--predictions", str(f), "--out",
               str(tmp_path / "s.csv"), "--postprocess", str(ok), "--attributes"])
    assert rc == 2 and "--attributes" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    # one settings object: options given beside the file replace its values, and the
    # attribute thresholds of tune-attributes replace its attribute decoding
    thr = tmp_path / "thr.json"
    thr.write_text(json.dumps({"format": "imat-kit-attribute-thresholds",
                               "global_threshold": 0.4, "attributes": {}}))
    assert main(["submit", "-q", "--data", str(prepared), "--predictions", str(f), "--out",
                 str(tmp_path / "s.csv"), "--postprocess", str(ok), "--score-thr", "0.5",
                 "--attribute-thresholds", str(thr)]) == 0
    man = json.loads((tmp_path / "s.json").read_text())
    assert (man["thresholds"]["score_thr"], man["thresholds"]["max_per_image"]) == (0.5, 7)
    assert man["postprocess"]["settings"]["score_thr"] == PostProcess().score_thr
    assert man["attribute_thresholds"]["sha256"]


def test_kept_instances_per_category_threshold_cap_and_leftovers():
    from imat_kit.predictions import ImagePrediction

    h, w = 20, 20

    def rect(y0, y1, x0, x1):
        m = np.zeros((h, w), np.uint8, order="F")
        m[y0:y1, x0:x1] = 1
        return mask_util.encode(m)["counts"].decode()

    masks = [rect(0, 10, 0, 10), rect(0, 10, 0, 12), rect(12, 20, 12, 20), rect(0, 5, 15, 20)]
    p = ImagePrediction("a", h, w, np.array([1, 1, 2, 3]), np.array([0.9, 0.8, 0.5, 0.35],
                                                                       np.float32),
                        np.zeros((4, 4), np.float32), masks)
    kept = kept_instances(p, PostProcess(score_thr=0.3, min_area=1))
    assert [(i, a) for i, _, a in kept] == [(0, 100), (1, 20), (2, 64), (3, 25)]
    # the duplicate's 20-pixel leftover is dropped from 21 px on; category 3 at its own 0.4
    kept = kept_instances(p, PostProcess(score_thr=0.3, min_area=21, category_thr={3: 0.4}))
    assert [i for i, _, _ in kept] == [0, 2]
    assert [i for i, _, _ in kept_instances(p, PostProcess(score_thr=0.3, max_per_image=2,
                                                           min_area=1))] == [0, 1]
    dec = AttributeDecoder("topk", topk={1: 2})
    assert dec.decode(1, {5: 0.2, 7: 0.9, 3: 0.2}) == (3, 7) and dec.decode(2, {5: 1.0}) == ()
    q = apply_postprocess({"a": p}, PostProcess(min_area=21, score_thr=0.3))["a"]
    assert q.labels.tolist() == [1, 2, 3] and q.attr_probs == []
