"""Each figure renders from small inputs (and says so on the command line)."""

import json

import numpy as np
import pytest
from PIL import Image

from imat_kit.cli.commands import main
from imat_kit.plots import confusion_matrix, make_plot, read_scalars
from tests.helpers.predictions import fold_predictions, write_val


def _png_ok(path):
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    assert im.size[0] > 300 and a.std() > 5  # a real picture, not a blank page


@pytest.fixture()
def val_file(prep, tmp_path):
    preds = fold_predictions(prep, 0, drop_every=4)
    f = tmp_path / "fold0.jsonl"
    write_val(f, preds, 0)
    return f


@pytest.mark.parametrize("what", ["pr", "confusion", "overlays"])
def test_prediction_plots(what, prep, val_file, tmp_path, capsys):
    out = tmp_path / f"{what}.png"
    assert main(["plot", what, "--data", str(prep), "--predictions", str(val_file), "--out",
                 str(out), "--n", "4"]) == 0
    _png_ok(out)
    assert f"{what} → {out}" in capsys.readouterr().out


def test_prediction_plots_draw_their_predictions(prep, val_file, tmp_path):
    """What each figure draws is the file's predictions: a quarter of the truth left out at
    score 0.9, the rest exact (val_file)."""
    gt = json.loads((prep / "annotations" / "fold0_val.json").read_text())
    n = len(gt["annotations"])
    dropped = (n + 3) // 4
    cm = make_plot("confusion", tmp_path / "cm.png", data=prep, predictions=val_file).matrix
    assert np.trace(cm[:46, :46]) == n - dropped and cm[:46, 46].sum() == dropped
    assert cm.sum() == n and cm[46].sum() == 0  # no false positive
    pr = make_plot("pr", tmp_path / "pr.png", data=prep, predictions=val_file)
    curves, recall = pr.curves, np.linspace(0, 1, 101)
    assert curves.shape == (10, 101) and list(pr.iou_thresholds) == pytest.approx(
        np.arange(0.5, 0.96, 0.05))
    # exact masks: the same curve at every IoU threshold; a category with k truths of which m
    # are kept has precision 1 up to recall m/k and 0 beyond (0 everywhere when m = 0)
    total, kept = {}, {}
    for i, a in enumerate(gt["annotations"]):
        c = a["category_id"]
        total[c] = total.get(c, 0) + 1
        kept[c] = kept.get(c, 0) + (i % 4 != 0)
    expected = np.mean([(recall <= kept[c] / total[c]) & (kept[c] > 0) for c in total], axis=0)
    assert np.allclose(curves, expected[None])
    drawn = make_plot("overlays", tmp_path / "ov.jpg", data=prep, predictions=val_file,
                      n=4, seed=1).images
    keys = {im["image_key"] for im in gt["images"]}
    assert len(set(drawn)) == 4 and set(drawn) <= keys
    assert make_plot("overlays", tmp_path / "ov2.jpg", data=prep, predictions=val_file,
                     n=4, seed=1).images == drawn  # seeded


def test_categories_plot(prep, tmp_path):
    assert main(["plot", "categories", "--data", str(prep), "--out", str(tmp_path / "c.png")]) == 0
    _png_ok(tmp_path / "c.png")


def test_confusion_counts(prep):
    gt = json.loads((prep / "annotations" / "fold0_val.json").read_text())
    preds = fold_predictions(prep, 0)
    cm = confusion_matrix(gt, preds)
    n = len(gt["annotations"])
    assert np.trace(cm[:46, :46]) == n and cm[46].sum() == 0 and cm[:, 46].sum() == 0
    cm = confusion_matrix(gt, fold_predictions(prep, 0, drop_every=2))
    assert cm[:46, 46].sum() == (n + 1) // 2  # every dropped truth → background


def test_loss_curves(tmp_path, capsys):
    for run, (lo, hi) in {"20260101_000000": (1, 6), "20260101_010000": (6, 11)}.items():
        d = tmp_path / "wd" / run / "vis_data"
        d.mkdir(parents=True)
        lines = [{"iter": i, "loss": 3 / i, "lr": 0.01, "step": i} for i in range(lo, hi)]
        lines.append({"coco/segm_mAP": 0.1 * hi, "val_loss": 2 / hi, "step": 1})
        (d / "scalars.json").write_text("\n".join(json.dumps(x) for x in lines))
    train, val = read_scalars(tmp_path / "wd")
    assert [t["x"] for t in train] == list(range(1, 11))
    assert [v["x"] for v in val] == [5, 10]
    out = tmp_path / "loss.png"
    assert main(["plot", "losses", "--work-dirs", str(tmp_path / "wd"), "--out", str(out)]) == 0
    _png_ok(out)
    assert main(["plot", "pr", "--out", str(out)]) == 2
    assert "plot pr needs --data" in capsys.readouterr().err
