
import pandas as pd
import pytest

from imat_kit.cli.commands import main
from imat_kit.predictions import write_predictions
from tests.helpers.predictions import fold_predictions, write_val


def test_evaluate_fold_table(prep, tmp_path, capsys):
    write_val(tmp_path / "fold0.jsonl", fold_predictions(prep, 0), 0)
    write_val(tmp_path / "fold1.jsonl", fold_predictions(prep, 1, drop_every=3), 1)
    assert main(["evaluate", "--data", str(prep), "--predictions", str(tmp_path / "fold*.jsonl"),
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "reference study" in out and "22.4" in out
    t = pd.read_csv(tmp_path / "evaluation.csv")
    assert t.fold.tolist() == ["0", "1", "mean", "std"]
    assert list(t.columns) == ["fold", "file", "segm_AP", "segm_AP50", "segm_AP75", "segm_APs",
                               "segm_APm", "segm_APl", "bbox_AP", "competition", "images"]
    assert t.segm_AP[0] == pytest.approx(1.0) and t.competition[0] == pytest.approx(1.0)
    assert t.bbox_AP[0] == pytest.approx(1.0)
    assert 0.3 < t.segm_AP[1] < 1.0 and t.competition[1] < 1.0
    assert t.segm_AP[2] == pytest.approx((t.segm_AP[0] + t.segm_AP[1]) / 2, abs=1e-4)
    cats = pd.read_csv(tmp_path / "per_category_ap.csv")
    assert {"category_id", "category", "fold0", "fold1", "mean"} <= set(cats.columns)
    assert (cats.fold0.dropna() == 1.0).all()


def test_evaluate_refuses_test_predictions(prep, tmp_path, capsys):
    write_predictions(tmp_path / "t.jsonl", {"split": "test"},
                      fold_predictions(prep, 0).values())
    assert main(["evaluate", "--data", str(prep), "--predictions",
                 str(tmp_path / "t.jsonl")]) == 2
    assert "needs validation predictions" in capsys.readouterr().err
