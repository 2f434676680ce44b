"""Every reader of predictions refuses a corrupt file: one line naming the file, the line, the
field and the value, exit 2, nothing written; valid files give the same outputs as before."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.cli.commands import main
from imat_kit.data import rle
from imat_kit.errors import KitError
from imat_kit.predictions import (
    Expected,
    ImagePrediction,
    iter_predictions,
    read_predictions,
    write_predictions,
)
from tests.helpers.prediction_cases import CORRUPTIONS, NAMED, corrupt, pipeline_digests, write_case

# --- the vectorised counts check -----------------------------------------------------------


@pytest.mark.parametrize("totals_of", [rle.coco_strings_totals, rle.coco_strings_totals_numpy],
                         ids=["c", "numpy"])
def test_counts_totals_equal_pycocotools_and_flag_malformed_texts(totals_of):
    rng = np.random.default_rng(0)
    texts, sizes = [], []
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        m = np.asfortranarray(rng.random((h, w)) < rng.uniform(0, 1))
        texts.append(mask_util.encode(m.astype(np.uint8))["counts"].decode())
        sizes.append(h * w)
    texts.append(mask_util.encode(np.zeros((3000, 4000), np.uint8, order="F"))["counts"].decode())
    sizes.append(12_000_000)
    totals, bad = totals_of(texts)
    assert not bad.any() and totals.tolist() == sizes
    assert [int(rle.coco_string_to_counts(t).sum()) for t in texts[:50]] == sizes[:50]
    malformed = ["!!not-rle!!", "0", "04L4", "\u00e9a", "", "3" + "o" * 13 + "0", "P"]
    totals, bad = totals_of([texts[0], *malformed, texts[1]])
    assert bad.tolist() == [False, True, False, True, True, False, True, True, False]
    assert totals[0] == sizes[0] and totals[-1] == sizes[1]  # neighbours are unaffected
    assert totals[2] == 0 and totals[5] == 0  # "0" and "" cover no pixel: refused by size
    assert not bad[[0, 2, 5, 8]].any()
    assert totals_of([7, b"02208", None])[1].tolist() == [True] * 3  # not text: malformed
    if totals_of is rle.coco_strings_totals:
        assert rle._counts is not None, "the C check was not built (pip install -e .)"


def test_c_and_numpy_counts_checks_agree_on_random_texts():
    rng = np.random.default_rng(1)
    alphabet = np.frombuffer(b"0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmno",
                             np.uint8)
    texts = ["".join(map(chr, rng.choice(alphabet, rng.integers(0, 30)))) for _ in range(3000)]
    c_tot, c_bad = rle.coco_strings_totals(texts)
    n_tot, n_bad = rle.coco_strings_totals_numpy(texts)
    assert c_bad.tolist() == n_bad.tolist() and 0 < c_bad.sum() < len(texts)
    assert c_tot[~c_bad].tolist() == n_tot[~n_bad].tolist()


# --- the reader ------------------------------------------------------------------------------


def _one(tmp_path, line: dict, head: dict | None = None, name="p.jsonl"):
    p = tmp_path / name
    p.write_text(json.dumps({"format": "imat-kit-predictions", "version": 2, **(head or {})})
                 + "\n" + json.dumps(line) + "\n")
    return p


def _good_line(**change):
    m = np.zeros((4, 4), np.uint8, order="F")
    m[1:3, 1:3] = 1
    d = {"image_key": "a.jpg", "height": 4, "width": 4, "labels": [6], "scores": [0.9],
         "bboxes": [[1, 1, 2, 2]], "masks": [mask_util.encode(m)["counts"].decode()]}
    d.update(change)
    return d


@pytest.mark.parametrize("change, field, value", [
    ({"labels": [6.5]}, "labels[0]", "6.5"),
    ({"labels": ["6"]}, "labels[0]", "'6'"),
    ({"labels": [-1]}, "labels[0]", "-1"),
    ({"scores": [0.9, 0.8]}, "scores", "2"),
    ({"scores": ["high"]}, "scores[0]", "'high'"),
    ({"scores": [-0.1]}, "scores[0]", "-0.1"),
    ({"bboxes": [[1, 1, 2]]}, "bboxes[0]", "[1, 1, 2]"),
    ({"bboxes": [[1, 1, -2, 2]]}, "bboxes[0]", "-2.0"),
    ({"bboxes": [[1, 1, float("inf"), 2]]}, "bboxes[0]", "Infinity"),
    ({"masks": [7]}, "masks[0]", "7"),
    ({"masks": ["04L4"]}, "masks[0]", "04L4"),
    ({"masks": [mask_util.encode(np.zeros((5, 5), np.uint8, order="F"))["counts"].decode()]},
     "masks[0]", "covers 25 pixels, not the image's 4×4 = 16 (a mask encoded at another size?)"),
    ({"height": 0}, "height", "0"),
    ({"width": "4"}, "width", "'4'"),
    ({"image_key": ""}, "image_key", "''"),
    ({"attr_probs": [[[3, 0.5], [3, 0.6]]]}, "attr_probs[0]", "repeats"),
    ({"attr_probs": [[[3.5, 0.5]]]}, "attr_probs[0]", "3.5"),
    ({"attr_probs": [[[3, -0.5]]]}, "attr_probs[0]", "-0.5"),
    ({"attr_probs": [[3, 0.5]]}, "attr_probs[0]", "[3, 0.5]"),
    ({"attributes": [[3, "x"]]}, "attributes[0]", "x"),
    ({"attributes": [[-3]]}, "attributes[0]", "-3"),
    ({"soft": "AAAA"}, "soft", "soft_size"),
])
def test_each_field_is_checked_without_knowing_the_data(tmp_path, change, field, value):
    p = _one(tmp_path, _good_line(**change))
    with pytest.raises(KitError) as e:
        list(iter_predictions(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}:2: {field} ") and value in msg, msg
    assert "\n" not in msg


def test_soft_masks_must_have_the_header_size(tmp_path):
    import base64

    ok = _good_line(soft=base64.b64encode(bytes(4)).decode())
    (got,) = iter_predictions(_one(tmp_path, ok, {"soft_size": 2}))
    assert got.soft.shape == (1, 2, 2)
    with pytest.raises(KitError, match=r":2: soft holds 4 bytes; 1 masks of the header's "
                       "soft_size 3×3 are 9"):
        list(iter_predictions(_one(tmp_path, ok, {"soft_size": 3})))
    with pytest.raises(KitError, match=r":2: soft is not base64"):
        list(iter_predictions(_one(tmp_path, _good_line(soft="@@@@"), {"soft_size": 2})))
    with pytest.raises(KitError, match=r":1: soft_size must be a non-negative integer"):
        list(iter_predictions(_one(tmp_path, ok, {"soft_size": "2"})))


def test_expected_label_space_and_images(tmp_path):
    from imat_kit.data.labels import load_labels

    labels = load_labels(year=2019)
    exp = Expected.of(labels, {"a.jpg": (4, 4)}, "fold 3's validation set")
    assert len(read_predictions(_one(tmp_path, _good_line()), exp)[1]) == 1
    cases = [({"labels": [46]}, "labels[0] is not a category id of"),
             ({"attr_probs": [[[92, 0.5]]]}, "attr_probs[0] has attribute id 92, not an "
              "attribute of"),
             ({"attributes": [[5, 92]]}, "attributes[0] has attribute id 92"),
             ({"image_key": "b.jpg"}, "image_key is not an image of fold 3's validation set"),
             ({"width": 5}, "width is 4×5 (height×width); the image in fold 3's validation set "
              "is 4×4")]
    for change, text in cases:
        with pytest.raises(KitError, match=r":2: ") as e:
            read_predictions(_one(tmp_path, _good_line(**change)), exp)
        assert text in str(e.value)
    # the later problem on an earlier line wins over an earlier check on a later line
    p = tmp_path / "two.jsonl"
    p.write_text(_one(tmp_path, _good_line(masks=["04L4"])).read_text()
                 + json.dumps(_good_line(image_key="c.jpg", labels=["x"])) + "\n")
    with pytest.raises(KitError, match=r"two.jsonl:2: masks\[0\]"):
        read_predictions(p)


def test_problems_are_reported_on_their_own_line_across_check_chunks(tmp_path):
    from imat_kit.predictions import CHECK_CHUNK

    lines = [_good_line(image_key=f"{i}.jpg") for i in range(3 * CHECK_CHUNK)]
    lines[CHECK_CHUNK + 5]["scores"] = [1.5]
    lines[2 * CHECK_CHUNK + 1]["labels"] = ["x"]  # a parse problem in a later chunk
    p = tmp_path / "many.jsonl"
    p.write_text(json.dumps({"format": "imat-kit-predictions", "version": 2}) + "\n"
                 + "".join(json.dumps(d) + "\n" for d in lines))
    with pytest.raises(KitError, match=rf"many.jsonl:{CHECK_CHUNK + 7}: scores\[0\]"):
        read_predictions(p)
    lines[CHECK_CHUNK + 5]["scores"] = [0.5]
    p.write_text(p.read_text().splitlines()[0] + "\n"
                 + "".join(json.dumps(d) + "\n" for d in lines))
    with pytest.raises(KitError, match=rf"many.jsonl:{2 * CHECK_CHUNK + 3}: labels\[0\]"):
        read_predictions(p)


def test_repeated_image_torn_and_unterminated_lines(tmp_path):
    p = _one(tmp_path, _good_line())
    text = p.read_text()
    twice = tmp_path / "twice.jsonl"
    twice.write_text(text + text.splitlines(keepends=True)[1])
    with pytest.raises(KitError, match=r"twice.jsonl:3: image_key is on line 2 already"):
        read_predictions(twice)
    assert len(list(iter_predictions(twice))) == 2  # predict's partial files may repeat one
    torn = tmp_path / "torn.jsonl"
    torn.write_text(text + text.splitlines()[1][:30])
    with pytest.raises(KitError, match=r"torn.jsonl:3: line is cut off"):
        read_predictions(torn)
    assert len(list(iter_predictions(torn, resumable=True))) == 1
    hand = tmp_path / "hand.jsonl"  # a hand-made file without the last newline
    hand.write_text(text.rstrip("\n"))
    assert list(read_predictions(hand)[1]) == ["a.jpg"]


def test_what_the_writer_writes_reads_back(tmp_path):
    m = np.zeros((6, 5), np.uint8, order="F")
    m[2:5, 1:4] = 1
    p = ImagePrediction("k", 6, 5, np.array([3, 4]), np.array([0.5, 1.0], np.float32),
                        np.array([[1, 2, 3, 3], [0, 0, 0, 0]], np.float32),
                        [mask_util.encode(m)["counts"].decode()] * 2,
                        np.zeros((2, 3, 3), np.uint8), [(1,), ()], [{1: 0.75}, {}])
    write_predictions(tmp_path / "w.jsonl", {"soft_size": 3}, [p])
    back = read_predictions(tmp_path / "w.jsonl")[1]["k"]
    assert back.masks == p.masks and back.attr_probs == p.attr_probs
    assert np.array_equal(back.soft, p.soft) and np.array_equal(back.labels, p.labels)


# --- every command that reads predictions ----------------------------------------------------

#: command → (split of the corrupted file, how to call it; {p} the file, {d} the data, {o} out)
COMMANDS = {
    "evaluate": ("val", "evaluate --data {d} --predictions {p} --out {o}"),
    "tune-attributes": ("val", "tune-attributes --data {d} --predictions {p} --out {o}/t.json"),
    "report": ("val", "report --data {d} --predictions {p} --out {o}/r.html"),
    "plot": ("val", "plot confusion --data {d} --predictions {p} --out {o}/c.png"),
    "ensemble-val": ("val", "ensemble --data {d} --inputs {good} {p} --out {o}/e.jsonl"),
    "ensemble-test": ("test", "ensemble --inputs {good} {p} --out {o}/e.jsonl"),
    "submit": ("test", "submit --data {d} --predictions {p} --out {o}/s.csv"),
}


@pytest.fixture(scope="module")
def sets(prepared, prepared2020, tmp_path_factory):
    """Per year: the prepared data, valid val/test files, and the corruption context."""
    out = {}
    for year, data in ((2019, prepared), (2020, prepared2020)):
        d = tmp_path_factory.mktemp(f"valid{year}")
        val1 = json.loads((data / "annotations" / "fold1_val.json").read_text())
        train = json.loads((data / "annotations" / "all.json").read_text())
        out[year] = {"data": data,
                     "val": write_case(d / "val.jsonl", data, "val", 0),
                     "val_other": write_case(d / "val_b.jsonl", data, "val", 0, seed=4),
                     "test": write_case(d / "test.jsonl", data, "test"),
                     "test_other": write_case(d / "test_b.jsonl", data, "test", seed=4),
                     "ctx": {"bad_attribute": 999},
                     "foreign": {"val": val1["images"][0]["image_key"],
                                 "test": train["images"][0]["image_key"]}}
    return out


def _run(capsys, command: str) -> tuple[int, str]:
    capsys.readouterr()
    parts = command.split()
    rc = main([parts[0], "--quiet", *parts[1:]])
    return rc, capsys.readouterr().err


#: (without --data, ensemble knows no split: image_not_in_split is ensemble-val's, with --data)
MATRIX = [(c, k) for c in COMMANDS for k in CORRUPTIONS
          if (c, k) != ("ensemble-test", "image_not_in_split")]


@pytest.mark.parametrize("year", [2019, 2020])
@pytest.mark.parametrize("command, case", MATRIX)
def test_every_reader_refuses_each_corruption(sets, tmp_path, capsys, year, command, case):
    s = sets[year]
    split, call = COMMANDS[command]
    bad = corrupt(s[split], tmp_path / "bad.jsonl", case,
                  {**s["ctx"], "foreign_key": s["foreign"][split]})
    out = tmp_path / "out"
    out.mkdir()
    rc, err = _run(capsys, call.format(p=bad, d=s["data"], o=out, good=s[f"{split}_other"]))
    named = NAMED[case]
    if command == "ensemble-test" and case == "height_differs":
        named = "masks[0]"  # no split known: the unchanged masks no longer fit the height
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{bad}:3: {named}" in lines[0], err
    assert list(out.iterdir()) == []


def test_valid_files_pass_every_reader(sets, tmp_path, capsys):
    for year, s in sets.items():
        for command, (split, call) in COMMANDS.items():
            out = tmp_path / f"{year}{command}"
            out.mkdir()
            rc, err = _run(capsys, call.format(p=s[split], d=s["data"], o=out,
                                               good=s[f"{split}_other"]))
            assert rc == 0 and list(out.iterdir()), (year, command, err)


def test_attribute_thresholds_file_is_checked_against_the_label_file(sets, tmp_path, capsys):
    s = sets[2020]
    thr = tmp_path / "thr.json"
    thr.write_text(json.dumps({"format": "imat-kit-attribute-thresholds",
                               "global_threshold": 0.4,
                               "attributes": {"115": {"threshold": 0.3},
                                              "999": {"threshold": 0.5}}}, indent=1))
    bad_value = tmp_path / "thr15.json"
    bad_value.write_text(json.dumps({"format": "imat-kit-attribute-thresholds",
                                     "global_threshold": 0.4,
                                     "attributes": {"115": {"threshold": 1.5}}}, indent=1))
    for f, text in ((thr, ":8: attribute id 999 is not an attribute of the data's label "
                     "file"), (bad_value, ":5: each attribute needs an integer id and a "
                               "threshold in 0..1")):
        for call in ("evaluate --data {d} --predictions {v} --out {o}",
                     "submit --data {d} --predictions {t} --out {o}/s.csv",
                     "report --data {d} --predictions {v} --out {o}/r.html",
                     "plot attributes --data {d} --predictions {v} --out {o}/a.png"):
            out = tmp_path / "out"
            out.mkdir(exist_ok=True)
            rc, err = _run(capsys, call.format(d=s["data"], v=s["val"], t=s["test"], o=out)
                           + f" --attribute-thresholds {f}")
            assert rc == 2 and f"{f}{text}" in err, (call, err)
            assert list(out.iterdir()) == []


def test_submit_leaves_a_submission_that_fails_validation_aside(sets, tmp_path, capsys,
                                                                monkeypatch):
    from imat_kit import submission

    s = sets[2019]
    out = tmp_path / "sub" / "mine.csv"
    monkeypatch.setattr(submission, "validate_submission",
                        lambda *a, **k: [submission.Problem(2, "a problem")])
    rc, err = _run(capsys, f"submit --data {s['data']} --predictions {s['test']} --out {out}")
    assert rc == 1 and "mine.invalid.csv: row 2: a problem" in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine.invalid.csv",
                                                           "mine.invalid.json"]
    man = json.loads((out.parent / "mine.invalid.json").read_text())
    assert man["submission"] == "mine.invalid.csv" and man["validation_problems"] == 1
    monkeypatch.undo()
    rc, _ = _run(capsys, f"submit --data {s['data']} --predictions {s['test']} --out {out}")
    assert rc == 0 and json.loads(out.with_suffix(".json").read_text())["submission"] == \
        "mine.csv"
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "mine.csv", "mine.invalid.csv", "mine.invalid.json", "mine.json"]


def test_ensemble_without_data_needs_a_recorded_label_space(sets, tmp_path, capsys):
    s = sets[2019]
    bare = tmp_path / "bare.jsonl"
    lines = s["test"].read_text().splitlines(keepends=True)
    head = json.loads(lines[0])
    del head["label_space"]
    bare.write_text(json.dumps(head) + "\n" + "".join(lines[1:]))
    rc, err = _run(capsys, f"ensemble --inputs {s['test']} {bare} --out {tmp_path}/e.jsonl")
    assert rc == 2 and f"{bare}:1: its header records no label_space" in err
    rc, err = _run(capsys, f"ensemble --inputs {s['test']} {sets[2020]['test']} "
                   f"--out {tmp_path}/e.jsonl")
    assert rc == 2 and "label_space differs" in err
    head["label_space"] = {"categories": ["6"], "attributes": []}
    bare.write_text(json.dumps(head) + "\n" + "".join(lines[1:]))
    rc, err = _run(capsys, f"ensemble --inputs {bare} --out {tmp_path}/e.jsonl")
    assert rc == 2 and f"{bare}:1: label_space must hold lists of integer" in err
    del head["label_space"]
    bare.write_text(json.dumps(head) + "\n" + "".join(lines[1:]))
    rc, err = _run(capsys, f"ensemble --inputs {s['test']} {bare} --out {tmp_path}/e.jsonl "
                   f"--data {s['data']}")
    assert rc == 0, err
    head = json.loads((tmp_path / "e.jsonl").read_text().splitlines()[0])
    assert head["label_space"]["categories"] == list(range(46))


# --- valid files: the same outputs as before the checks -------------------------------------

#: the digests the code before the checks (commit 27fec37) gave on these files
BEFORE = {
    2019: {"evaluation": "277d5109397834e7", "per_category": "33508a91d84b5fd0",
           "per_attribute": "a83cbcaffda0d4d5", "thresholds": "799ad454d9443afa",
           "ensemble": "58854852c9915623", "submission": "470474623d1f9a49"},
    2020: {"evaluation": "ed1c9e8c055a0dff", "per_category": "a746adfd262cf815",
           "per_attribute": "9cc8516886fb0bd2", "thresholds": "80e082e71050d0eb",
           "ensemble": "6a78438f898d8f5a", "submission": "a05183583fe50ac3"}}


@pytest.mark.parametrize("year", [2019, 2020])
def test_valid_files_give_the_outputs_they_gave_before_the_checks(year, prepared,
                                                                  prepared2020, tmp_path):
    data = prepared if year == 2019 else prepared2020
    assert pipeline_digests(data, tmp_path) == BEFORE[year]
