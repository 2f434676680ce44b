import pandas as pd
import pytest

from imat_kit.cli.commands import main
from imat_kit.eval.evaluate import REFERENCE_TABLE3
from imat_kit.predictions import write_predictions
from tests.helpers.predictions import fold_predictions, write_val


def test_evaluate_fold_table(prep, tmp_path, capsys):
    write_val(tmp_path / "fold0.jsonl", fold_predictions(prep, 0), 0)
    write_val(tmp_path / "fold1.jsonl", fold_predictions(prep, 1, drop_every=3), 1)
    assert main(["evaluate", "--data", str(prep), "--predictions", str(tmp_path / "fold*.jsonl"),
                 "--out", str(tmp_path), "--bbox"]) == 0
    out = capsys.readouterr().out
    t = pd.read_csv(tmp_path / "evaluation.csv")
    # the printed table is the written one: each fold's row with its figures, mean and std
    printed = {line.split()[0]: line.split()[1:] for line in out.splitlines()
               if line.split() and line.split()[0] in ("0", "1", "mean", "std")}
    assert list(printed) == ["0", "1", "mean", "std"]
    for i, fold in enumerate(printed):
        assert [float(v) for v in printed[fold][:3]] == pytest.approx(
            t.loc[i, ["segm_AP", "segm_AP50", "segm_AP75"]].round(4).tolist(), abs=1e-9)
    assert (f"segm AP {100 * t.segm_AP[2]:.1f} ± {100 * t.segm_AP[3]:.1f}, "
            f"AP50 {100 * t.segm_AP50[2]:.1f}") in out
    # and the reference study beside it, every row
    for run, ap in zip(REFERENCE_TABLE3.run, REFERENCE_TABLE3.AP):
        assert any(line.split()[:len(run.split()) + 1] == [*run.split(), str(ap)]
                   for line in out.splitlines()), run
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
    # without --bbox: one COCO pass, no box column, the same figures
    assert main(["evaluate", "--data", str(prep), "--predictions", str(tmp_path / "fold*.jsonl"),
                 "--out", str(tmp_path / "segm_only")]) == 0
    assert "bbox_AP" not in capsys.readouterr().out.splitlines()[0]
    t2 = pd.read_csv(tmp_path / "segm_only" / "evaluation.csv")
    pd.testing.assert_frame_equal(t2, t.drop(columns="bbox_AP"))


def test_evaluate_refuses_test_predictions(prep, tmp_path, capsys):
    write_predictions(tmp_path / "t.jsonl", {"split": "test"},
                      fold_predictions(prep, 0).values())
    assert main(["evaluate", "--data", str(prep), "--predictions",
                 str(tmp_path / "t.jsonl")]) == 2
    assert "needs validation predictions" in capsys.readouterr().err


def test_fold_table_keeps_mean_and_std_beside_the_rows():
    from imat_kit.eval.evaluate import FoldTable

    rows = pd.DataFrame([{"fold": 1, "file": "b", "segm_AP": 0.3, "images": 5},
                         {"fold": 0, "file": "a", "segm_AP": 0.1, "images": 7}])
    t = FoldTable.of(rows.sort_values("fold"))
    assert list(t.rows["fold"]) == [0, 1]
    assert t.mean["segm_AP"] == pytest.approx(0.2) and t.std["segm_AP"] == pytest.approx(0.1)
    assert "fold" not in t.mean and "file" not in t.mean
    frame = t.frame()
    assert list(frame["fold"]) == ["0", "1", "mean", "std"]
    assert frame["images"].tolist() == [7, 5, 6, 1]
    fold_rows, mean, std = t.records(drop=("file",))
    assert [r["fold"] for r in fold_rows] == ["0", "1"] and "file" not in mean
    assert (mean["fold"], std["fold"], mean["images"]) == ("mean", "std", 6)
