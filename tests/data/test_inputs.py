"""Bad, empty and unusual input files: one clear line and exit 2, never a traceback; the CSV
variants people really save read exactly like the plain file."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from imat_kit.cli.commands import main
from imat_kit.data import rle, rle_batch
from imat_kit.data.prepare import prepare
from imat_kit.errors import KitError
from imat_kit.predictions import iter_predictions, read_header, write_predictions
from imat_kit.submission import csv_instances
from tests.helpers.predictions import truth_predictions


def _one_error_line(capsys, command: str, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"imat-kit {command}: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


# --- empty inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ("", "file is empty (0 bytes"),
    ("ImageId,EncodedPixels,Height,Width,ClassId\n", "train.csv:2: train.csv has a header but no "
     "rows"),
    ("ImageId,EncodedPixels,Height,Width,ClassId\r\n", "has a header but no rows"),
])
def test_prepare_empty_train_csv(tmp_path, capsys, text, needle):
    (tmp_path / "train.csv").write_text(text)
    assert main(["prepare", "--data", str(tmp_path), "--no-image-check", "-q"]) == 2
    _one_error_line(capsys, "prepare", needle)
    assert not (tmp_path / "annotations").exists()  # nothing half-written


def test_prepare_every_row_rejected(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("ImageId,EncodedPixels,Height,Width,ClassId\n"
                                        "a.jpg,1 2 3,10,10,6\nb.jpg,1 2,10,10,99\n")
    assert main(["prepare", "--data", str(tmp_path), "--no-image-check", "--skip-bad-rows",
                 "-q"]) == 2
    _one_error_line(capsys, "prepare", "no usable training image left: all 2 row(s)",
                    "train.csv:2: a.jpg: RLE has an odd number of tokens")


def test_empty_sample_submission(synth_copy, capsys):
    (synth_copy / "sample_submission.csv").write_text("ImageId,EncodedPixels,ClassId\n")
    sub = synth_copy / "s.csv"
    sub.write_text("ImageId,EncodedPixels,ClassId\n")
    assert main(["validate", "--submission", str(sub), "--data", str(synth_copy)]) == 2
    _one_error_line(capsys, "validate", "sample_submission.csv:2: sample submission has a "
                    "header but no rows")
    (synth_copy / "sample_submission.csv").write_bytes(b"")
    assert main(["validate", "--submission", str(sub), "--data", str(synth_copy)]) == 2
    _one_error_line(capsys, "validate", "file is empty")


def test_predictions_file_without_images(prepared, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    write_predictions(empty, {"split": "test"}, [])
    assert main(["submit", "--predictions", str(empty), "--data", str(prepared), "--out",
                 str(tmp_path / "s.csv"), "-q"]) == 2
    _one_error_line(capsys, "submit", "empty.jsonl:2: the predictions file holds no image")
    assert not (tmp_path / "s.csv").exists()
    assert main(["ensemble", "--inputs", str(empty), "--out", str(tmp_path / "e.jsonl"),
                 "--data", str(prepared)]) == 2
    _one_error_line(capsys, "ensemble", "holds no image")
    write_predictions(empty, {"split": "val", "fold": 0}, [])
    assert main(["evaluate", "--data", str(prepared), "--predictions", str(empty)]) == 2
    _one_error_line(capsys, "evaluate", "holds no image")


# --- readers that used to leak exceptions -----------------------------------------------------

def test_predictions_readers_raise_kit_errors(tmp_path):
    with pytest.raises(KitError, match="predictions file not found"):
        read_header(tmp_path / "nope.jsonl")
    p = tmp_path / "p.jsonl"
    p.write_text('{"format": "imat-kit-predictions", "version": 1}\n'
                 '{"image_key": "a.jpg", "height": 4, "width": 4}\n')
    with pytest.raises(KitError, match=r"p.jsonl:2: labels is missing"):
        list(iter_predictions(p))
    p.write_text('{"format": "imat-kit-predictions", "version": 1}\n'
                 '{"image_key": "a.jpg", bad json}\n')
    with pytest.raises(KitError, match=r"p.jsonl:2: line is not JSON"):
        list(iter_predictions(p))
    p.write_text("")
    with pytest.raises(KitError, match="not an imat-kit predictions file"):
        read_header(p)


def test_csv_instances_missing_file_and_unknown_image(tmp_path):
    with pytest.raises(KitError, match="file not found"):
        csv_instances(tmp_path / "nope.csv", {})
    p = tmp_path / "s.csv"
    p.write_text("ImageId,EncodedPixels,ClassId\na.jpg,1 2,6\nz.jpg,1 2,6\n")
    with pytest.raises(KitError, match=r"s.csv:3: ImageId is not a test image.*'z.jpg'"):
        csv_instances(p, {"a.jpg": (4, 4)})


def test_score_submission_image_not_in_solution(synth_copy, tmp_path, capsys):
    sol = synth_copy / "test_solution.csv"
    df = pd.read_csv(sol, dtype=str)
    first = df.ImageId.iloc[0]
    df[df.ImageId != first].to_csv(tmp_path / "partial_solution.csv", index=False)
    sub = tmp_path / "sub.csv"
    df[["ImageId", "EncodedPixels", "ClassId"]].to_csv(sub, index=False)
    assert main(["score", "--submission", str(sub), "--solution",
                 str(tmp_path / "partial_solution.csv"), "--data", str(synth_copy), "-q"]) == 2
    _one_error_line(capsys, "score", "sub.csv:2: ImageId not in the solution", first)


# --- CSV files as people save them ------------------------------------------------------------

def _variant(src, dst, kind):
    """``src`` CSV rewritten as ``kind``: BOM + CRLF, every field quoted, columns reversed."""
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    if kind == "bom_crlf":
        dst.write_bytes(b"\xef\xbb\xbf" + src.read_bytes().replace(b"\n", b"\r\n"))
    elif kind == "quoted":
        df.to_csv(dst, index=False, quoting=csv.QUOTE_ALL)
    else:
        df[df.columns[::-1]].to_csv(dst, index=False)


@pytest.mark.parametrize("kind", ["bom_crlf", "quoted", "reordered"])
def test_train_csv_variants_prepare_identically(synth_dir, tmp_path, kind):
    outs = {}
    for name in ("plain", kind):
        d = tmp_path / name
        d.mkdir()
        (d / "train").symlink_to(synth_dir / "train")
        if name == "plain":
            shutil.copy(synth_dir / "train.csv", d / "train.csv")
        else:
            _variant(synth_dir / "train.csv", d / "train.csv", kind)
        prepare(d, n_folds=3, seed=0, quiet=True)
        outs[name] = d
    for f in ("annotations/all.json", "folds.csv", "annotations/fold1_val.json"):
        assert (outs["plain"] / f).read_bytes() == (outs[kind] / f).read_bytes(), f


def test_sample_submission_and_submission_with_bom_crlf(synth_copy, tmp_path, capsys):
    from imat_kit.data.paths import sample_image_ids

    plain = sample_image_ids(synth_copy)
    sample = synth_copy / "sample_submission.csv"
    sample.write_bytes(b"\xef\xbb\xbf" + sample.read_bytes().replace(b"\n", b"\r\n"))
    assert sample_image_ids(synth_copy) == plain
    preds = truth_predictions(synth_copy, attributes=False)
    pf = tmp_path / "p.jsonl"
    write_predictions(pf, {"split": "test"}, preds.values())
    out = tmp_path / "sub.csv"
    assert main(["submit", "--predictions", str(pf), "--data", str(synth_copy), "--out",
                 str(out), "--score-thr", "0", "-q"]) == 0
    out.write_bytes(b"\xef\xbb\xbf" + out.read_bytes().replace(b"\r\n", b"\n")
                    .replace(b"\n", b"\r\n"))
    capsys.readouterr()
    assert main(["validate", "--submission", str(out), "--data", str(synth_copy)]) == 0
    assert main(["score", "--submission", str(out), "--solution",
                 str(synth_copy / "test_solution.csv"), "--data", str(synth_copy)]) == 0
    assert "1.0000" in capsys.readouterr().out


# --- the numpy contract of the RLE parser -----------------------------------------------------

def _numpy1_fromstring(text, dtype=np.int64, sep=" "):
    """numpy 1's lenient np.fromstring: stops at the first bad token and returns the rest."""
    out = []
    for tok in text.split():
        try:
            out.append(int(tok))
        except ValueError:
            break
    return np.array(out, dtype=dtype)


def _numpy20_fromstring(text, dtype=np.int64, sep=" "):
    """numpy 2.0's np.fromstring: reads the integer part of '2.5' and goes on."""
    return np.array([int(float(t)) if t.replace(".", "", 1).isdigit() else 0
                     for t in text.split()], dtype=dtype)


@pytest.mark.parametrize("fromstring", [np.fromstring, _numpy1_fromstring, _numpy20_fromstring],
                         ids=["this-numpy", "numpy1-stops", "numpy2.0-truncates"])
def test_rle_parser_does_not_trust_numpy(monkeypatch, fromstring):
    monkeypatch.setattr(rle.np, "fromstring", fromstring)
    for text, bad in [("1 2 x 4", "x"), ("1 2.5", "2.5"), ("3 4 5²", "5²"), ("1 --2", "--2")]:
        with pytest.raises(KitError, match=f"RLE token is not an integer.*'{bad}'"):
            rle.parse_runs(text, 10, 10)
    batch = rle_batch.parse_runs_batch(["1 2", "1 2 x 4", "5 1 9 2", "1 2.5"], np.full(4, 10),
                                 np.full(4, 10))
    assert batch.bad.tolist() == [False, True, False, True]
    assert np.diff(batch.offsets).tolist() == [1, 0, 2, 0]
    assert rle.parse_runs("1 2 5 1", 10, 10)[0].tolist() == [0, 4]
    with pytest.raises(KitError, match="run 1 has length -2"):
        rle.parse_runs("3 -2", 10, 10)


# --- figures from runs too short to have logged anything --------------------------------------

def test_loss_plot_without_training_points(tmp_path, capsys):
    wd = tmp_path / "wd" / "20261126_000000" / "vis_data"
    wd.mkdir(parents=True)
    (wd / "scalars.json").write_text(json.dumps({"coco/segm_mAP": 0.0, "step": 0}) + "\n")
    out = tmp_path / "loss.png"
    assert main(["plot", "losses", "--work-dirs", str(tmp_path / "wd"), "--out", str(out)]) == 0
    assert "no training loss logged yet" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (wd / "scalars.json").write_text(json.dumps({"loss": 2.0, "iter": 1}) + "\n")
    from imat_kit.plots import moving_average, plot_losses

    assert plot_losses([tmp_path / "wd"], out) == 1
    assert moving_average(np.array([1.0, 2.0, 3.0]), 2).tolist() == [1.5, 2.5]
    assert moving_average(np.array([1.0]), 2).size == 0


# --- what a user sees ------------------------------------------------------------------------

def test_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "From the iMaterialist Fashion competition files to a scored submission" in out
    assert "imat-kit demo" in out and "``" not in out and ":mod:" not in out
