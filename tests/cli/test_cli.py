"""One test per README command (in a small form), and the CLI's error contract."""

import json
import subprocess
import sys

import pandas as pd
from PIL import Image

from imat_kit.cli.commands import main
from tests.helpers import REPO


def test_synth_prepare_stats(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--images", "30", "--seed", "1", "-q"]) == 0
    assert "30 train images" in capsys.readouterr().out
    assert main(["prepare", "--data", str(data), "--folds", "3", "--split", "stratified",
                 "--seed", "0", "-q"]) == 0
    out = capsys.readouterr().out
    assert "3 stratified folds" in out and "mean max relative deviation" in out
    assert (data / "annotations" / "fold2_val.json").exists()
    assert main(["prepare", "--data", str(data), "--out", str(tmp_path / "r"), "--split",
                 "random", "--quiet"]) == 0
    assert "5 random folds" in capsys.readouterr().out
    png = tmp_path / "cats.png"
    assert main(["stats", "--data", str(data), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "instances on 30 images" in out and "sleeve" in out
    with Image.open(png) as im:
        assert im.size[0] > 400
    assert main(["stats", "--data", str(data), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 30 and len(s["categories"]) == 46


def test_synth_full_scale(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--scale", "full", "--images", "50",
                 "-q"]) == 0
    assert "50 images, 365 rows" in capsys.readouterr().out
    assert main(["prepare", "--data", str(tmp_path), "--no-image-check", "-q"]) == 0
    assert pd.read_csv(tmp_path / "folds.csv").shape == (50, 2)


def test_bad_input_exits_2_with_location(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("ImageId,EncodedPixels,Height,Width,ClassId\n"
                                        "a.jpg,1 2,3,3,6\na.jpg,4 2,3,3,46\nb.jpg,1 1,3,3,7\n")
    assert main(["prepare", "--data", str(tmp_path), "--no-image-check", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imat-kit prepare: error: ")
    assert "train.csv:3: unknown category id 46" in err
    assert "Traceback" not in err
    assert main(["prepare", "--data", str(tmp_path), "--no-image-check", "--skip-bad-rows",
                 "--folds", "2", "-q"]) == 0
    assert "1 row(s) left out" in capsys.readouterr().out
    rej = pd.read_csv(tmp_path / "rejected_rows.csv")
    assert rej.row.tolist() == [3]


def test_size_mismatch_flag(tmp_path, capsys):
    data = tmp_path / "data"
    main(["synth", "--out", str(data), "--images", "8", "-q"])
    df = pd.read_csv(data / "train.csv")
    first = df.drop_duplicates("ImageId")
    victim = first[first.Height != first.Width].ImageId.iloc[0]
    p = data / "train" / victim
    with Image.open(p) as im:
        im.transpose(Image.Transpose.TRANSPOSE).save(p)
    capsys.readouterr()
    assert main(["prepare", "--data", str(data), "--folds", "2", "-q"]) == 2
    assert "--size-mismatch transpose or drop" in capsys.readouterr().err
    assert main(["prepare", "--data", str(data), "--folds", "2", "--size-mismatch",
                 "transpose", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"{victim}" in out and "masks transposed" in out


def test_console_script_installed(tmp_path):
    bindir = __import__("pathlib").Path(sys.executable).parent
    r = subprocess.run([str(bindir / "imat-kit"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("imat-kit ")
    r = subprocess.run([str(bindir / "imat-kit"), "stats", "--data", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "file not found" in r.stderr


def test_train_dry_run_prints_the_phase_chain(tmp_path, capsys):
    repo = REPO  # the repository root
    assert main(["train", str(repo / "configs" / "maskrcnn_r50_imat.py"), "--folds", "0,2",
                 "--work-root", str(tmp_path), "--launcher", "pytorch", "--gpus", "4",
                 "--auto-scale-lr", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("maskrcnn_r50_imat (started, dry run)") == 2
    assert out.count("maskrcnn_r50_imat_all (started, dry run)") == 2
    assert "IMAT_FOLD=2" in out and "--launcher pytorch --gpus 4" in out
    assert "--auto-scale-lr" in out
    assert f"load_from={tmp_path}/maskrcnn_r50_imat/fold2/" in out
    assert main(["train", "nope.py", "--dry-run"]) == 2
    assert "config not found" in capsys.readouterr().err
