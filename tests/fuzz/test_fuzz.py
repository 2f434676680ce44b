"""Every reader and every command that takes a file, fuzzed (issue 30): from a valid file of
each kind, hypothesis mutates bytes, lines, fields and encodings, and the contract must hold —
success with valid outputs, or exit 2 with one line naming the file, nothing written; never a
traceback, never a hang. ``make test`` runs the small seeded profile; ``make fuzz`` the long
one (tests/fuzz/conftest.py)."""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.fuzz import any_mutation, check, copy_data, run_cli

_ROOT: list[Path] = []


def _scratch() -> Path:
    """A fresh folder for one case, under one folder per process removed at exit."""
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="imat-fuzz-")))
        atexit.register(shutil.rmtree, _ROOT[0], ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=_ROOT[0]))


def _mutated(data: st.DataObject, kind: str, valid: Path, to: Path) -> str:
    new, what = data.draw(any_mutation(kind, valid.read_bytes()), label="mutation")
    to.write_bytes(new)
    return what


# --- train.csv: prepare, stats, and its reader -----------------------------------------------

@pytest.mark.parametrize("year", [2019, 2020])
@given(data=st.data())
def test_train_csv_through_prepare(request, year, data):
    root = request.getfixturevalue(f"fuzz{year}")
    d = copy_data(root / "data", _scratch() / "data")
    what = _mutated(data, "csv", root / "data" / "train.csv", d / "train.csv")
    out = d.parent / "out"
    check("train.csv/prepare", what, d / "train.csv",
          lambda: run_cli(["prepare", "--data", str(d), "--out", str(out), "--folds", "2"]),
          outputs=(out / "prepare_report.json", out / "annotations" / "all.json"))


@given(data=st.data())
def test_train_csv_through_stats(fuzz2019, data):
    d = copy_data(fuzz2019 / "data", _scratch() / "data")
    what = _mutated(data, "csv", fuzz2019 / "data" / "train.csv", d / "train.csv")
    check("train.csv/stats", what, d / "train.csv",
          lambda: run_cli(["stats", "--data", str(d), "--json"]))


@given(data=st.data())
def test_label_file_through_stats(fuzz2019, data):
    d = copy_data(fuzz2019 / "data", _scratch() / "data")
    f = d / "label_descriptions.json"
    what = _mutated(data, "json", fuzz2019 / "data" / "label_descriptions.json", f)
    check("label_descriptions.json/stats", what, f,
          lambda: run_cli(["stats", "--data", str(d), "--json"]))


# --- submissions: validate, score --------------------------------------------------------------

@pytest.mark.parametrize("year", [2019, 2020])
@given(data=st.data())
def test_submission_through_validate_and_score(request, year, data):
    root = request.getfixturevalue(f"fuzz{year}")
    f = _scratch() / "submission.csv"
    what = _mutated(data, "csv", root / "valid" / "submission.csv", f)
    check("submission/validate", what, f, ok=(0, 1), call=lambda: run_cli(
        ["validate", "--submission", str(f), "--data", str(root / "data")]))
    check("submission/score", what, f, lambda: run_cli(
        ["score", "--submission", str(f), "--solution", str(root / "data" / "test_solution.csv"),
         "--data", str(root / "data"), "--year", str(year)]))


@given(data=st.data())
def test_sample_submission_through_validate(fuzz2019, data):
    """The data's sample_submission.csv (the test images' list) without a prepared test.json:
    validate reads it and the images' headers."""
    d = copy_data(fuzz2019 / "data", _scratch() / "data")
    (d / "annotations" / "test.json").unlink()
    f = d / "sample_submission.csv"
    what = _mutated(data, "csv", fuzz2019 / "data" / "sample_submission.csv", f)
    check("sample_submission/validate", what, f, ok=(0, 1), call=lambda: run_cli(
        ["validate", "--submission", str(fuzz2019 / "valid" / "submission.csv"), "--data",
         str(d)]))


@given(data=st.data())
def test_solution_through_score(fuzz2019, data):
    f = _scratch() / "test_solution.csv"
    what = _mutated(data, "csv", fuzz2019 / "data" / "test_solution.csv", f)
    check("solution/score", what, f, lambda: run_cli(
        ["score", "--submission", str(fuzz2019 / "valid" / "submission.csv"),
         "--solution", str(f), "--data", str(fuzz2019 / "data")]))


# --- predictions: evaluate, submit, tune ----------------------------------------------------

@pytest.mark.parametrize("year", [2019, 2020])
@given(data=st.data())
def test_predictions_through_evaluate(request, year, data):
    root = request.getfixturevalue(f"fuzz{year}")
    s = _scratch()
    f = s / "fold0_val.jsonl"
    what = _mutated(data, "jsonl", root / "valid" / "fold0_val.jsonl", f)
    out = s / "eval"
    check("predictions/evaluate", what, f, lambda: run_cli(
        ["evaluate", "--data", str(root / "data"), "--predictions", str(f), "--out", str(out)]),
        outputs=(out / "evaluation.csv", out / "per_category_ap.csv"))


@given(data=st.data())
def test_predictions_through_submit(fuzz2019, data):
    s = _scratch()
    f = s / "test.jsonl"
    what = _mutated(data, "jsonl", fuzz2019 / "valid" / "test.jsonl", f)
    out = s / "sub.csv"
    check("predictions/submit", what, f, lambda: run_cli(
        ["submit", "--predictions", str(f), "--data", str(fuzz2019 / "data"), "--out",
         str(out)]), outputs=(out,))


def _file_through_submit(data, root: Path, valid: Path, fmt: str, option: str, kind: str
                         ) -> tuple[str, Path]:
    """A mutated copy of ``valid`` given to ``submit OPTION FILE`` (the test predictions of
    ``root``); the mutation and the submission's path."""
    s = _scratch()
    f = s / valid.name
    what = _mutated(data, fmt, valid, f)
    out = s / "sub.csv"
    check(kind, what, f, lambda: run_cli(
        ["submit", "--predictions", str(root / "valid" / "test.jsonl"), "--data",
         str(root / "data"), "--out", str(out), option, str(f)]), outputs=(out,))
    return what, out


@given(data=st.data())
def test_evaluation_table_through_submit(fuzz2019, data):
    """The fold table of evaluate, recorded in the submission's manifest (strict JSON)."""
    what, out = _file_through_submit(data, fuzz2019, fuzz2019 / "valid" / "eval" /
                                     "evaluation.csv", "csv", "--evaluation",
                                     "evaluation.csv/submit")
    if out.exists():  # the manifest: strict JSON (no NaN)
        json.loads(out.with_suffix(".json").read_text(encoding="utf-8"),
                   parse_constant=lambda c: pytest.fail(f"{c} in the manifest ({what})"))


@given(data=st.data())
def test_run_file_through_run(fuzz2019, data):
    """A run file (written as JSON, which is YAML) checked whole by ``imat-kit run
    --dry-run``: the plan, or one line naming the run file; nothing written."""
    from tests.helpers import REPO

    d = _scratch()
    valid = d / "valid.yaml"
    valid.write_text(json.dumps({
        "data": str(fuzz2019 / "data"), "out": "out", "folds": [0, 1], "seed": 0,
        "gpus": "0,1", "models": [{"config": str(REPO / "tests" / "configs" / "tiny_test.py"),
                                   "name": "a", "tta": "flip", "checkpoints": 2,
                                   "cfg_options": ["train_cfg.max_iters=4"], "weight": 1.5}],
        "prepare": {"folds": 2}, "ensemble": {"iou": 0.6},
        "tune": {"rescore": False, "min_support": 5}}))
    f = d / "run.yaml"
    what = _mutated(data, "json", valid, f)
    check("run file/run --dry-run", what, f, lambda: run_cli(["run", str(f), "--dry-run"]),
          outputs=(d / "out",))


@given(data=st.data())
def test_postprocess_file_through_submit(fuzz2019, data):
    _file_through_submit(data, fuzz2019, fuzz2019 / "valid" / "postprocess.json", "json",
                         "--postprocess", "postprocess/submit")


@given(data=st.data())
def test_thresholds_file_through_submit(fuzz2020, data):
    _file_through_submit(data, fuzz2020, fuzz2020 / "valid" / "thresholds.json", "json",
                         "--attribute-thresholds", "thresholds/submit")


@given(data=st.data())
def test_predictions_through_ensemble_and_tune(fuzz2019, data):
    s = _scratch()
    valid = fuzz2019 / "valid"
    f = s / "test.jsonl"
    what = _mutated(data, "jsonl", valid / "test.jsonl", f)
    out = s / "fused.jsonl"
    check("predictions/ensemble", what, f, lambda: run_cli(
        ["ensemble", "--inputs", str(valid / "test.jsonl"), str(f), "--out", str(out),
         "--data", str(fuzz2019 / "data")]), outputs=(out,))
    g = s / "fold1_val.jsonl"
    what = _mutated(data, "jsonl", valid / "fold1_val.jsonl", g)
    tuned = s / "post.json"
    check("predictions/tune", what, g, lambda: run_cli(
        ["tune", "--data", str(fuzz2019 / "data"), "--predictions", str(valid / "fold0_val.jsonl"),
         str(g), "--out", str(tuned), "--min-support", "1"]), outputs=(tuned,))


@given(data=st.data())
def test_fashionpedia_file_through_prepare(fuzz2020, data):
    s = _scratch()
    d = s / "fp"
    d.mkdir()
    f = d / "instances_attributes_train2020.json"
    what = _mutated(data, "json", fuzz2020 / "valid" / f.name, f)
    out = s / "out"
    check("fashionpedia/prepare", what, f, lambda: run_cli(
        ["prepare", "--data", str(d), "--out", str(out), "--folds", "2", "--no-image-check"]),
        outputs=(out / "prepare_report.json", out / "annotations" / "all.json"))


# --- the readers in-process (fast: many cases) -------------------------------------------------

def _reader_case(kind: str, what: str, f: Path, read) -> None:
    def call():
        read()
        return 0, "", ""
    check(kind, what, f, call)


@given(data=st.data())
def test_readers_in_process(fuzz2020, data):
    """Each reader of the 2020 set's files (the richest layout) on one mutated file."""
    from imat_kit.data.coco import csv_to_coco
    from imat_kit.data.fashionpedia import fashionpedia_to_coco
    from imat_kit.data.labels import load_labels
    from imat_kit.data.paths import find_labels
    from imat_kit.eval.runs import read_fold_runs
    from imat_kit.postprocess import load_postprocess, load_thresholds
    from imat_kit.predictions import read_predictions

    d = fuzz2020 / "data"
    labels = find_labels(d)
    which = data.draw(st.sampled_from(["train.csv", "labels", "predictions", "fold run",
                                       "postprocess", "thresholds", "fashionpedia"]),
                      label="reader")
    s = _scratch()
    if which == "train.csv":
        f = s / "train.csv"
        what = _mutated(data, "csv", d / "train.csv", f)
        _reader_case("reader/train.csv", what, f,
                     lambda: csv_to_coco(f, labels=labels, image_dir=None, quiet=True))
    elif which == "labels":
        f = s / "label_descriptions.json"
        what = _mutated(data, "json", d / "label_descriptions.json", f)
        _reader_case("reader/labels", what, f, lambda: load_labels(f))
    elif which == "predictions":
        f = s / "test.jsonl"
        what = _mutated(data, "jsonl", fuzz2020 / "valid" / "test.jsonl", f)
        _reader_case("reader/predictions", what, f, lambda: read_predictions(f))
    elif which == "fold run":
        f = s / "fold1_val.jsonl"
        what = _mutated(data, "jsonl", fuzz2020 / "valid" / "fold1_val.jsonl", f)
        _reader_case("reader/fold run", what, f, lambda: read_fold_runs(d, [str(f)]))
    elif which == "postprocess":
        f = s / "postprocess.json"
        what = _mutated(data, "json", fuzz2020 / "valid" / "postprocess.json", f)
        _reader_case("reader/postprocess", what, f, lambda: load_postprocess(f, labels))
    elif which == "thresholds":
        f = s / "thresholds.json"
        what = _mutated(data, "json", fuzz2020 / "valid" / "thresholds.json", f)
        _reader_case("reader/thresholds", what, f, lambda: load_thresholds(f, labels))
    else:
        f = s / "instances_attributes_train2020.json"
        what = _mutated(data, "json", fuzz2020 / "valid" / f.name, f)
        _reader_case("reader/fashionpedia", what, f,
                     lambda: fashionpedia_to_coco(f, image_dir=None, quiet=True))


# --- equivalent encodings give identical outputs ---------------------------------------------

def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "prepare_report.json":
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _variants(text: str) -> dict[str, str]:
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    quoted, crlf, swapped = io.StringIO(), io.StringIO(), io.StringIO()
    csv.writer(quoted, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    csv.writer(crlf, lineterminator="\r\n").writerows(rows)
    order = list(range(len(rows[0])))[::-1]
    csv.writer(swapped, lineterminator="\n").writerows([[r[i] for i in order] for r in rows])
    return {"bom": "\ufeff" + text, "crlf": crlf.getvalue(), "quoted": quoted.getvalue(),
            "reordered": swapped.getvalue()}


@pytest.mark.parametrize("year", [2019, 2020])
def test_equivalent_encodings_prepare_and_score_the_same(request, year, tmp_path):
    """A BOM, CRLF line ends, every field quoted, the columns in another order: the same
    preparation (byte for byte) and the same score."""
    root = request.getfixturevalue(f"fuzz{year}")
    base = root / "data"
    out0 = tmp_path / "out0"
    assert run_cli(["prepare", "--data", str(base), "--out", str(out0), "--folds", "2"])[0] == 0
    sub = (root / "valid" / "submission.csv").read_text(encoding="utf-8")
    sol = str(base / "test_solution.csv")

    def score(path: Path) -> str:
        rc, out, err = run_cli(["score", "--submission", str(path), "--solution", sol,
                                "--data", str(base), "--year", str(year)])
        assert rc == 0, err
        return out

    reference = score(root / "valid" / "submission.csv")
    train = (base / "train.csv").read_text(encoding="utf-8")
    for name, text in _variants(train).items():
        d = copy_data(base, tmp_path / name / "data")
        (d / "train.csv").write_bytes(text.encode("utf-8"))
        out = tmp_path / name / "out"
        rc, _, err = run_cli(["prepare", "--data", str(d), "--out", str(out), "--folds", "2"])
        assert rc == 0, (name, err)
        assert _digest(out) == _digest(out0), name
    for name, text in _variants(sub).items():
        f = tmp_path / f"sub_{name}.csv"
        f.write_bytes(text.encode("utf-8"))
        assert score(f) == reference, name


def test_equivalent_predictions_files_evaluate_the_same(fuzz2019, tmp_path):
    """A predictions file with a byte-order mark, or CRLF line ends: the same fold table."""
    import pandas as pd

    valid = (fuzz2019 / "valid" / "fold0_val.jsonl").read_bytes()
    tables = {}
    for name, content in {"plain": valid, "bom": b"\xef\xbb\xbf" + valid,
                          "crlf": valid.replace(b"\n", b"\r\n")}.items():
        f = tmp_path / name / "fold0_val.jsonl"
        f.parent.mkdir()
        f.write_bytes(content)
        out = tmp_path / name / "eval"
        rc, _, err = run_cli(["evaluate", "--data", str(fuzz2019 / "data"), "--predictions",
                              str(f), "--out", str(out)])
        assert rc == 0, (name, err)
        tables[name] = pd.read_csv(out / "evaluation.csv").drop(columns=["file"])
    for name in ("bom", "crlf"):
        assert tables[name].equals(tables["plain"]), name


# --- the kinds issue 30 reported, kept as fixed cases -----------------------------------------

def _replace_cell(text: str, row: int, col: str, new: str) -> str:
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    rows[row][rows[0].index(col)] = new
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


@pytest.mark.parametrize("col,new", [("Height", "²"), ("Width", "١٢"), ("ClassId", "３"),
                                     ("Height", "9" * 20), ("Width", "9" * 5000),
                                     ("ImageId", "a\x00b")])
def test_reported_train_csv_cells(fuzz2019, tmp_path, col, new):
    d = copy_data(fuzz2019 / "data", tmp_path / "data")
    f = d / "train.csv"
    f.write_text(_replace_cell(f.read_text(encoding="utf-8"), 2, col, new), encoding="utf-8")
    for args in (["prepare", "--data", str(d), "--out", str(tmp_path / "o")],
                 ["prepare", "--data", str(d), "--out", str(tmp_path / "o"), "--skip-bad-rows"],
                 ["stats", "--data", str(d)]):
        rc, _, err = run_cli(args)
        if rc == 0:  # --skip-bad-rows leaves the row out
            assert "--skip-bad-rows" in args
            continue
        assert rc == 2 and "train.csv:3: " in err, (args, err)


def test_reported_unicode_digits_in_2020_and_submissions(fuzz2019, fuzz2020, tmp_path):
    """A Unicode digit in a 2020 AttributesIds cell (prepare, stats) and in a submission's
    ClassId (validate: its verdict; score: refused at the row)."""
    d = copy_data(fuzz2020 / "data", tmp_path / "data")
    f = d / "train.csv"
    f.write_text(_replace_cell(f.read_text(encoding="utf-8"), 1, "AttributesIds", "1²"),
                 encoding="utf-8")
    for args in (["prepare", "--data", str(d), "--out", str(tmp_path / "o")],
                 ["stats", "--data", str(d)]):
        rc, _, err = run_cli(args)
        assert rc == 2 and f"{f}:2: " in err, (args, err)
    sub = tmp_path / "sub.csv"
    sub.write_text(_replace_cell((fuzz2019 / "valid" / "submission.csv").read_text(
        encoding="utf-8"), 1, "ClassId", "３"), encoding="utf-8")
    rc, out, err = run_cli(["validate", "--submission", str(sub), "--data",
                            str(fuzz2019 / "data")])
    assert rc == 1 and "row 2" in out + err, out + err
    rc, _, err = run_cli(["score", "--submission", str(sub), "--solution",
                          str(fuzz2019 / "data" / "test_solution.csv"), "--data",
                          str(fuzz2019 / "data")])
    assert rc == 2 and f"{sub}:2: " in err, err


def _bad_lines(valid: bytes) -> dict[str, tuple[bytes, int, str]]:
    """A file's first image line made not UTF-8, nested 100,000 deep, or with its scores
    as strings: (content, the line at fault, words the message must hold)."""
    lines = valid.split(b"\n")
    line2 = json.loads(lines[1])
    line2["scores"] = [str(s) for s in line2["scores"]]
    return {
        "utf8": (lines[0] + b"\n" + lines[1][:20] + b"\xff" + lines[1][20:] + b"\n", 2,
                 "not valid UTF-8"),
        "deep": (lines[0] + b"\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n", 2, "nests"),
        "strings": (lines[0] + b"\n" + json.dumps(line2).encode() + b"\n", 2, "scores"),
    }


def test_reported_prediction_lines(fuzz2019, tmp_path):
    """A flipped byte (not UTF-8), a line nested 100,000 deep, numbers as strings, a header
    naming a fold the preparation lacks: each refused at its line, nothing written."""
    data = str(fuzz2019 / "data")
    val = (fuzz2019 / "valid" / "fold0_val.jsonl").read_bytes()
    head, rest = val.split(b"\n", 1)
    fold7 = json.loads(head)
    fold7["fold"] = 7
    evaluate = {**_bad_lines(val),
                "fold": (json.dumps(fold7).encode() + b"\n" + rest, 1, "fold 7")}
    submit = _bad_lines((fuzz2019 / "valid" / "test.jsonl").read_bytes())
    out = tmp_path / "out"
    for cmd, cases in (("evaluate", evaluate), ("submit", submit)):
        for name, (content, line, words) in cases.items():
            f = tmp_path / f"{cmd}_{name}.jsonl"
            f.write_bytes(content)
            args = (["evaluate", "--data", data, "--predictions", str(f), "--out", str(out)]
                    if cmd == "evaluate" else
                    ["submit", "--predictions", str(f), "--data", data, "--out", str(out)])
            rc, _, err = run_cli(args)
            assert rc == 2 and f"{f}:{line}: " in err and words in err, (name, args, err)
            assert not out.exists()


def test_reported_attribute_id_of_20_digits(fuzz2020, tmp_path):
    f = tmp_path / "sub.csv"
    text = (fuzz2020 / "valid" / "submission.csv").read_text(encoding="utf-8")
    f.write_text(_replace_cell(text, 1, "AttributesIds", "9" * 20), encoding="utf-8")
    rc, _, err = run_cli(["score", "--submission", str(f), "--solution",
                          str(fuzz2020 / "data" / "test_solution.csv"), "--data",
                          str(fuzz2020 / "data"), "--year", "2020"])
    assert rc == 2 and f"{f}:2: " in err, err


# --- what the long profile found, kept as fixed cases -------------------------------------------

def _train_rows(root: Path) -> list[str]:
    return (root / "data" / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)


@pytest.mark.parametrize("case", ["torn first row", "one image", "form feed in runs"])
def test_found_train_csv(fuzz2019, tmp_path, case):
    """A file cut inside its first row (no image yet when the row is refused: an IndexError
    once), one image for two folds (the refusal named no file), runs apart by a form feed (the
    fast check refused it, the precise one accepted it: an AssertionError)."""
    d = copy_data(fuzz2019 / "data", tmp_path / "data")
    rows = _train_rows(fuzz2019)
    first = rows[1].split(",")[0]
    text = {"torn first row": rows[0] + rows[1][:20],
            "one image": rows[0] + "".join(r for r in rows[1:] if r.startswith(first + ",")),
            "form feed in runs": rows[0] + rows[1].replace(" ", "\x0c", 1) + "".join(rows[2:]),
            }[case]
    (d / "train.csv").write_text(text, encoding="utf-8")
    rc, _, err = run_cli(["prepare", "--data", str(d), "--out", str(tmp_path / "o"), "--folds",
                          "2"])
    assert rc == 2 and f"{d / 'train.csv'}:" in err, err
    if case == "form feed in runs":
        assert "train.csv:2: RLE tokens must be separated by spaces" in err


def _submit_with(root: Path, tmp_path: Path, name: str, option: str, change) -> tuple[Path, str]:
    """``submit OPTION FILE`` with the valid file ``name`` changed by ``change`` (in place on
    its JSON): the file and the refusal (exit 2 asserted)."""
    d = json.loads((root / "valid" / name).read_text())
    change(d)
    f = tmp_path / name
    f.write_text(json.dumps(d))
    rc, _, err = run_cli(["submit", "--predictions", str(root / "valid" / "test.jsonl"),
                          "--data", str(root / "data"), "--out", str(tmp_path / "s.csv"),
                          option, str(f)])
    assert rc == 2 and not (tmp_path / "s.csv").exists(), err
    return f, err


def test_found_postprocess_and_prediction_values(fuzz2019, fuzz2020, tmp_path):
    """A postprocess file whose category_thr is a number (an AttributeError once); a
    predictions line whose attribute id is infinite (an OverflowError once)."""
    f, err = _submit_with(fuzz2019, tmp_path, "postprocess.json", "--postprocess",
                          lambda d: d["settings"].update(category_thr=-4.99e212))
    assert f"{f}:" in err and "category_thr" in err, err
    lines = (fuzz2020 / "valid" / "fold0_val.jsonl").read_text().splitlines()
    d = json.loads(lines[1])
    d["attr_probs"][0][0][0] = float("inf")
    g = tmp_path / "fold0_val.jsonl"
    g.write_text("\n".join([lines[0], json.dumps(d), *lines[2:]]) + "\n")
    rc, _, err = run_cli(["evaluate", "--data", str(fuzz2020 / "data"), "--predictions",
                          str(g)])
    assert rc == 2 and f"{g}:2: attr_probs[0] has an attribute id that is not an integer" in err


def test_found_thresholds_and_fashionpedia_values(fuzz2020, tmp_path):
    """A thresholds file whose attributes are a number (an AttributeError once), in the file
    of an earlier imat-kit and in the postprocess file tune-attributes writes now; a
    Fashionpedia RLE size holding a newline (the refusal spread over two lines once)."""
    f, err = _submit_with(fuzz2020, tmp_path, "thresholds.json", "--attribute-thresholds",
                          lambda d: d["settings"]["attributes"].update(per_attribute=746764))
    assert f"{f}:" in err and "per_attribute" in err and "Traceback" not in err, err

    def legacy(d):
        d.clear()
        d.update(format="imat-kit-attribute-thresholds", global_threshold=0.5,
                 attributes=746764)

    f, err = _submit_with(fuzz2020, tmp_path, "thresholds.json", "--attribute-thresholds",
                          legacy)
    assert f"{f}:" in err and "attributes must map" in err, err
    fp = json.loads((fuzz2020 / "valid" / "instances_attributes_train2020.json").read_text())
    fp["annotations"][1]["segmentation"]["size"] = "a\nb"
    d = tmp_path / "fp"
    d.mkdir()
    g = d / "instances_attributes_train2020.json"
    g.write_text(json.dumps(fp))
    rc, _, err = run_cli(["prepare", "--data", str(d), "--out", str(tmp_path / "o"),
                          "--no-image-check"])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and f"{g}:" in err, err
