"""tune --rescore: the target each prediction is fitted to (its TP rate, checked against the
greedy rule written out), the model stored as data and evaluated with numpy (equal to
scikit-learn's), the nested gain on a case where only a feature separates right from wrong,
the score tune reports equal to the submission's, and the postprocess file's refusals."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from imat_kit.cli.commands import main
from imat_kit.data.paths import find_labels
from imat_kit.errors import KitError
from imat_kit.eval.runs import read_fold_runs
from imat_kit.postprocess import PostProcess, kept_instances, load_postprocess
from tests.helpers.tuning_cases import (
    solution_path,
    strip_predictions,
    write_noisy,
    write_noisy_test,
)


@pytest.fixture(scope="module")
def strips(prepared, tmp_path_factory):
    """The strip case on the 3 prepared folds, tuned once with --rescore (min support 3)."""
    from imat_kit.tune.nested import tune

    d = tmp_path_factory.mktemp("rescore")
    files = [str(write_noisy(d / f"fold{k}_val.jsonl", prepared, "val", k, seed=k,
                             make=strip_predictions)) for k in range(3)]
    runs = read_fold_runs(prepared, files)
    r = tune(runs, find_labels(prepared), min_support=3, quiet=True, rescore=True)
    return d, files, runs, r


def test_tp_rate_is_the_greedy_rule_per_detection(prepared, tmp_path):
    """Each detection's TP rate equals the share of IoU thresholds at which the greedy rule
    (every detection kept, leftovers as submit writes them) makes it a true positive."""
    from imat_kit.data.masks import pair_ious
    from imat_kit.eval.fast_score import Scorer, rule_of, tp_rates, truths_of
    from imat_kit.eval.matching import greedy_pairs
    from imat_kit.eval.metric import IOU_THRESHOLDS
    from imat_kit.eval.score_parts import FoldParts
    from imat_kit.postprocess import AttributeDecoder

    f = write_noisy(tmp_path / "v.jsonl", prepared, "val", 0, seed=7, hot_category=31)
    run = read_fold_runs(prepared, [str(f)])[0]
    anns = run.gt["annotations"]  # a truth twice: its detections have two candidates (greedy)
    for a in anns[:3]:
        anns.append(dict(a, id=max(x["id"] for x in anns) + 1))
    fold = FoldParts(0, run, truths_of(run), 1, True)
    sc = Scorer.build(fold.view(None, 1), rule_of("competition", find_labels(prepared)),
                 AttributeDecoder(), {0: fold})
    assert sc.groups  # the greedy groups' path is exercised
    fast = tp_rates(sc)
    truths = truths_of(run)
    every = PostProcess(score_thr=0.0, max_per_image=10**6, min_area=1)
    ref = np.zeros(len(fast))
    row = 0
    for key in fold.keys:
        p = run.preds.get(key)
        if p is None or not len(p):
            continue
        n = len(p)
        hits = np.zeros(len(p))
        kept = kept_instances(p, every)
        for c in np.unique(p.labels):
            mine = [(i, counts) for i, counts, _ in kept if p.labels[i] == c]
            gt = [t.rle for t in truths.get(key, []) if t.key == c]
            if not mine or not gt:
                continue
            ious = pair_ious([{"size": [p.height, p.width], "counts": m} for _, m in mine], gt)
            for t in IOU_THRESHOLDS:
                for d, _ in greedy_pairs(ious, t - 1e-12):
                    hits[mine[d][0]] += 1
        order = np.argsort(-p.scores.astype(np.float64), kind="stable")
        ref[row:row + n] = hits[order] / len(IOU_THRESHOLDS)
        row += n
    assert row == len(fast) and fast.sum() > 10
    assert np.allclose(fast, ref)


def test_numpy_trees_equal_scikit_learn_and_survive_json():
    from sklearn.ensemble import HistGradientBoostingRegressor

    from imat_kit import rescore

    rng = np.random.default_rng(0)
    x = rng.random((3000, len(rescore.FEATURES)))
    x[::3, 9] = np.nan  # soft mean missing: the trees' missing-value directions
    y = np.clip(0.7 * (x[:, 8] > 0.5) + 0.3 * np.nan_to_num(x[:, 9]) + rng.normal(0, .1, 3000)
                + 0.5 * np.isnan(x[:, 9]), 0, 1)  # missing vs present: ±inf thresholds
    m = rescore.fit(x, y, rescore.Tables(), target="competition", seed=3)
    ref = HistGradientBoostingRegressor(max_iter=100, max_depth=6, learning_rate=0.1,
                                        min_samples_leaf=50, l2_regularization=1.0,
                                        early_stopping=False, random_state=3).fit(x, y)
    probe = rng.random((500, len(rescore.FEATURES)))
    probe[::2, 9] = np.nan
    assert any(np.isinf(p.nodes["num_threshold"]).any() for (p,) in ref._predictors)
    back = rescore.from_dict(json.loads(json.dumps(m.as_dict())))
    assert np.allclose(back.predict(probe), ref.predict(probe), atol=1e-9)
    assert back.digest() == m.digest()
    again = rescore.fit(x, y, rescore.Tables(), target="competition", seed=3)
    assert again.digest() == m.digest()  # the seed fixes the model


def test_rescore_raises_the_nested_figure_where_the_search_cannot(strips):
    """Scores say nothing, the strips' shape does: no setting of the default search helps,
    the re-scorer (box aspect among its features) lifts the nested figure and is kept."""
    _, _, _, r = strips
    rs = r["rescoring"]
    assert rs["kept"] and r["settings"]["rescore"]["sha256"] == rs["model"]["sha256"]
    assert rs["nested"]["without"] < 0.7
    assert rs["nested"]["with"] > rs["nested"]["without"] + 0.2
    assert r["nested"]["tuned"] == pytest.approx(rs["nested"]["with"])
    assert r["nested"]["tuned_without_rescore"] == pytest.approx(rs["nested"]["without"])
    assert r["settings"]["category_thr"] == {}
    assert any(n.startswith("re-scoring kept") for n in r["notes"])


def test_rescored_tune_score_is_the_score_of_the_submission(strips, prepared, tmp_path):
    """The score tune reports for its settings (re-scorer included) is the score of the
    submission submit --postprocess writes with them, scored by imat-kit score."""
    from imat_kit.predictions import read_predictions
    from imat_kit.submission import score_submission
    from imat_kit.tune.nested import fold_scores

    _, _, runs, r = strips
    pp = tmp_path / "pp.json"
    pp.write_text(json.dumps(r))
    labels = find_labels(prepared)
    post, _ = load_postprocess(pp, labels)
    assert post.rescore is not None
    assert np.allclose(fold_scores(runs, post, labels),
                       [p["tuned_in_sample"] for p in r["per_fold"]])
    files = [r_.file for r_ in runs]  # evaluate --postprocess applies the re-scorer too
    assert main(["evaluate", "-q", "--data", str(prepared), "--predictions", *files, "--out",
                 str(tmp_path / "ev"), "--postprocess", str(pp)]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "ev" / "evaluation.csv")
    assert np.allclose(table.competition_post[:3], [p["tuned_in_sample"] for p in r["per_fold"]],
                       atol=1e-4)
    f, gt = write_noisy_test(tmp_path / "test.jsonl", prepared, seed=9, make=strip_predictions)
    from imat_kit.eval.runs import FoldRun

    run = FoldRun(str(f), 0, {}, read_predictions(f)[1], gt)
    sub = tmp_path / "sub.csv"
    assert main(["submit", "-q", "--predictions", str(f), "--data", str(prepared), "--out",
                 str(sub), "--postprocess", str(pp)]) == 0
    scored = score_submission(sub, solution_path(prepared), prepared, quiet=True).score
    from imat_kit.eval.fast_score import truths_of

    fast = fold_scores([run], post, labels, truths=[truths_of(run)])[0]
    assert fast == pytest.approx(scored, abs=1e-12)
    plain = fold_scores([run], PostProcess(), labels, truths=[truths_of(run)])[0]
    assert scored > plain + 0.2  # the learned scores carry over to unseen images
    man = json.loads(sub.with_suffix(".json").read_text())
    assert man["postprocess"]["settings"]["rescore"]["sha256"] == \
        r["rescoring"]["model"]["sha256"]


def _bad_file(tmp_path, r: dict, change) -> str:
    d = json.loads(json.dumps(r))
    change(d)
    p = tmp_path / "pp.json"
    p.write_text(json.dumps(d, indent=2))
    return str(p)


def _cycle(d: dict) -> None:
    t = d["rescore"]["trees"][0]
    inner = t["leaf"].index(0)
    t["left"][inner] = inner  # a node that points at itself


@pytest.mark.parametrize("change, match", [
    (lambda d: d["rescore"]["features"].append("spare"), "another feature list"),
    (lambda d: d["rescore"]["features"].reverse(), "another feature list"),
    (_cycle, "children must be later nodes"),
    (lambda d: d["rescore"]["trees"][0]["value"].__setitem__(0, "0.5"), "numbers only"),
    (lambda d: d["rescore"]["trees"][0]["left"].__setitem__(0, 10**40), "integers only"),
    (lambda d: d["rescore"]["trees"][0].update(code="__import__('os')"), "exactly"),
    (lambda d: d["rescore"].update(baseline=10**400), "baseline must be a number"),
    (lambda d: d["rescore"]["tables"]["tp_rate"].update({"1": 10**400}), "tables must map"),
    (lambda d: d["rescore"]["trees"][1]["value"].__setitem__(0, 5.0), "SHA-256 differs"),
    (lambda d: d.update(rescore=None), "disagree on the re-scorer"),
    (lambda d: d["rescore"].update(format="pickle"), "not a re-scorer"),
])
def test_a_bad_rescorer_is_refused_and_nothing_written(change, match, strips, prepared,
                                                        tmp_path, capsys):
    _, _, _, r = strips
    pp = _bad_file(tmp_path, r, change)
    f, _ = write_noisy_test(tmp_path / "test.jsonl", prepared, seed=9, make=strip_predictions)
    sub = tmp_path / "sub.csv"
    capsys.readouterr()
    assert main(["submit", "-q", "--predictions", str(f), "--data", str(prepared), "--out",
                 str(sub), "--postprocess", pp]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pp.json" in err[0] and match in err[0], err
    assert not sub.exists() and not list(tmp_path.glob("*.csv"))


def test_a_pickled_postprocess_file_is_refused(strips, prepared, tmp_path, capsys):
    _, _, _, r = strips
    pp = tmp_path / "pp.json"
    pp.write_bytes(pickle.dumps(r))
    with pytest.raises(KitError, match=r"pp\.json"):
        load_postprocess(pp, find_labels(prepared))


def test_a_rescorer_of_another_label_space_is_refused(strips, prepared2020, tmp_path):
    _, _, _, r = strips
    pp = tmp_path / "pp.json"
    pp.write_text(json.dumps(r))
    with pytest.raises(KitError, match="label"):
        load_postprocess(pp, find_labels(prepared2020))


def test_rescore_on_2020_data_through_the_cli(prepared2020, tmp_path, capsys):
    """--rescore on 2020 data (the 2020 rule's IoU × F1 pairs as the target): a nested
    comparison is reported, the file loads, and the model is in it exactly when the nested
    gain is positive."""
    labels = find_labels(prepared2020)
    files = [str(write_noisy(tmp_path / f"fold{k}_val.jsonl", prepared2020, "val", k, seed=k))
             for k in range(3)]
    out = tmp_path / "pp.json"
    capsys.readouterr()
    assert main(["tune", "-q", "--data", str(prepared2020), "--predictions", *files, "--out",
                 str(out), "--min-support", "3", "--rescore", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    rs = r["rescoring"]
    assert rs["target"] == "competition2020" and len(rs["nested"]["per_fold"]) == 3
    assert "re-scoring (100 trees" in printed
    assert (r["rescore"] is not None) == rs["kept"] == (rs["nested"]["gain"] > 0)
    post, _ = load_postprocess(out, labels)
    assert (post.rescore is not None) == rs["kept"]


@pytest.mark.slow
def test_rescore_for_ap_iou_f1(prepared2020, tmp_path):
    """AP^{IoU+F1} (scored by FPEval's rule for every setting: the slow path) re-scores with
    the 2020 rule's TP rate as the target."""
    from imat_kit.tune.nested import tune

    files = [str(write_noisy(tmp_path / f"fold{k}_val.jsonl", prepared2020, "val", k, seed=k))
             for k in range(3)]  # two folds hold too few predictions to fit on (< 100)
    ap = tune(read_fold_runs(prepared2020, files), find_labels(prepared2020),
              metric="ap_iou_f1", quiet=True, rescore=True)
    assert ap["rescoring"]["target"] == "competition2020"
    assert ap["rescoring"]["nested"]["with"] >= 0


def test_reordered_parts_equal_parts_computed_anew(prepared, tmp_path):
    """A re-scored fold's leftovers, links and groups renumbered from the fold's own (where
    no two touching detections of a class swap) equal those computed from scratch, at 1 px
    and at a min area (whose drops only touching detections' order shapes too)."""
    from dataclasses import replace

    from imat_kit.eval.fast_score import truths_of
    from imat_kit.eval.score_parts import FoldParts

    f = write_noisy(tmp_path / "v.jsonl", prepared, "val", 0, seed=3, hot_category=31)
    run = read_fold_runs(prepared, [str(f)])[0]
    truths = truths_of(run)
    base = FoldParts(0, run, truths, 1, True)
    rng = np.random.default_rng(0)
    for trial in range(3):
        preds = {k: replace(p, scores=(rng.random(len(p)) if trial else
                                       p.scores[::-1].copy()))
                 for k, p in run.preds.items()}
        new = run.with_preds(preds)
        fast = FoldParts(0, new, truths, 1, True, base=base)
        slow = FoldParts(0, new, truths, 1, True)
        for floor in (1, 50):
            a, b = fast.view(None, floor), slow.view(None, floor)
            if floor == 1:  # some images reused, some computed anew
                assert 0 < fast.reordered_anew < len(run.preds)
            assert np.array_equal(a.p_area, b.p_area)
            assert np.array_equal(a.l_pred, b.l_pred) and np.array_equal(a.l_truth, b.l_truth)
            assert np.array_equal(a.l_iou, b.l_iou)
            assert len(a.groups) == len(b.groups)
            for x, y in zip(a.groups, b.groups):
                assert x[0] == y[0] and np.array_equal(x[1], y[1])
                assert np.array_equal(x[2], y[2]) and np.array_equal(x[3], y[3])
        again = FoldParts(0, new, truths, 1, True, base=base)  # the same order again: cached
        a, b = again.view(None, 1), slow.view(None, 1)
        assert again.reordered_anew == 0
        assert np.array_equal(a.p_area, b.p_area) and np.array_equal(a.l_pred, b.l_pred)
        assert [x[0] for x in a.groups] == [y[0] for y in b.groups]


def test_too_few_predictions_leave_re_scoring_out_with_a_note(prepared):
    """A model that predicted almost nothing (a few iterations of training) gives too few
    predictions to fit on: tune says so and writes no model, instead of failing."""
    from imat_kit.tune.nested import tune
    from tests.helpers.tuning_cases import shrinkage_case

    labels = find_labels(prepared)
    r = tune(shrinkage_case(labels, images=9), labels, min_support=3, quiet=True,
             rescore=True)
    assert r["rescore"] is None and not r["rescoring"]["kept"]
    assert "only 36 predictions to fit a re-scorer on" in r["rescoring"]["skipped"]
    assert any(n.startswith("re-scoring left out: only 36") for n in r["notes"])
