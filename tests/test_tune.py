"""imat-kit tune: the matching core it shares with every score, the exactness of its scores (the
score of the submission it describes), the optimum it finds on a case built to have one, the
nested figure's independence from the scored fold, and the postprocess file's checks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.cli.commands import main
from imat_kit.data.paths import find_labels
from imat_kit.errors import KitError
from imat_kit.eval.runs import read_fold_runs
from imat_kit.postprocess import (
    AttributeDecoder,
    PostProcess,
    from_values,
    load_postprocess,
)
from tests.helpers.tuning_cases import (
    postprocess_file,
    solution_path,
    write_noisy,
    write_noisy_test,
)

HOT = 31  # the most frequent category of the `prepared` set: given high-scoring false positives


@pytest.fixture(scope="module")
def tuned_case(prepared, tmp_path_factory):
    """Noisy validation predictions of the 3 prepared folds, category HOT with high-scoring
    false positives, tuned once (min support 3)."""
    from imat_kit.tune.nested import tune

    d = tmp_path_factory.mktemp("tune")
    files = [str(write_noisy(d / f"fold{k}_val.jsonl", prepared, "val", k, seed=k,
                             hot_category=HOT)) for k in range(3)]
    runs = read_fold_runs(prepared, files)
    return d, files, runs, tune(runs, find_labels(prepared), min_support=3, quiet=True)


# --- the matching core ----------------------------------------------------------------------

def test_greedy_matching_equals_a_brute_force_greedy_on_pixels():
    from imat_kit.data.masks import pair_ious, score_order
    from imat_kit.eval.matching import greedy_pairs, greedy_tp
    from imat_kit.eval.metric import IOU_THRESHOLDS

    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = 30, 40
        ms = []
        for _ in range(int(rng.integers(1, 9))):
            m = np.zeros((h, w), np.uint8, order="F")
            y, x = int(rng.integers(0, 20)), int(rng.integers(0, 30))
            m[y:y + int(rng.integers(3, 12)), x:x + int(rng.integers(3, 12))] = 1
            ms.append(m)
        dt, gt = ms[: len(ms) // 2 + 1], ms[len(ms) // 2 + 1:] or ms[:1]
        scores = rng.random(len(dt))
        order = score_order(scores)
        enc = [mask_util.encode(m) for m in dt]
        ious = pair_ious([enc[i] for i in order], [mask_util.encode(g) for g in gt])
        ref = np.array([[(dt[i] & g).sum() / (dt[i] | g).sum() for g in gt] for i in order])
        assert np.allclose(ious, ref)
        for t_i, t in enumerate(IOU_THRESHOLDS):
            free, tp = set(range(len(gt))), 0
            for d in range(len(dt)):  # the rule, written out on pixel IoUs
                c = [g for g in free if ref[d, g] >= t]
                if c:
                    free.remove(max(c, key=lambda g: (ref[d, g], -g)))
                    tp += 1
            assert greedy_tp(ious, IOU_THRESHOLDS)[t_i] == tp
            assert len(greedy_pairs(ious, t)) == tp


# --- exact scores: the tuner's figure is the submission's -------------------------------------

@pytest.mark.parametrize("year", [2019, 2020])
def test_tuned_score_is_the_score_of_the_submission_it_describes(year, prepared,
                                                                 prepared2020, tmp_path):
    from imat_kit.data.paths import test_image_sizes
    from imat_kit.eval.fast_score import truths_of
    from imat_kit.eval.runs import FoldRun
    from imat_kit.postprocess import AttributeThresholds
    from imat_kit.submission import csv_instances, score_submission, submit
    from imat_kit.tune.nested import fold_scores

    data = prepared if year == 2019 else prepared2020
    labels = find_labels(data)
    f, gt = write_noisy_test(tmp_path / "test.jsonl", data, seed=4, hot_category=HOT)
    truth = csv_instances(solution_path(data), test_image_sizes(data, quiet=True),
                          by_category=True)
    from imat_kit.predictions import read_predictions

    run = FoldRun(str(f), 0, {"attribute_model": True}, read_predictions(f)[1], gt)
    assert truths_of(run).keys() == truth.keys()
    metric = "competition2020" if year == 2020 else "competition"
    topk = {c: 2 for c in range(46)}
    settings = [PostProcess(), PostProcess(score_thr=0.1, min_area=60, max_per_image=3),
                PostProcess(score_thr=0.2, category_thr={HOT: 0.95, 0: 0.05}, mask_thr=0.4),
                PostProcess(score_thr=0.05, min_area=0,
                            attributes=AttributeDecoder("topk", topk=topk)),
                PostProcess(attributes=AttributeDecoder("threshold", AttributeThresholds(0.3)))]
    for i, post in enumerate(settings):
        pp = tmp_path / f"pp{i}.json"
        pp.write_text(json.dumps({"format": "imat-kit-postprocess", "settings": post.values()}))
        sub = tmp_path / f"sub{i}.csv"
        man, problems = submit(f, data, sub, quiet=True, postprocess=pp)
        assert not problems and man["postprocess"]["settings"] == post.values()
        scored = score_submission(sub, solution_path(data), data, year=year,
                                  quiet=True).score
        fast = fold_scores([run], post, labels, metric=metric, truths=[truth])[0]
        assert fast == pytest.approx(scored, abs=1e-12), (i, post)
    assert len({fold_scores([run], p, labels, metric=metric, truths=[truth])[0]
                for p in settings}) >= 4  # the settings do change the score


def test_evaluate_postprocess_adds_the_tuned_columns(tuned_case, prepared, tmp_path):
    d, files, runs, r = tuned_case
    pp = d / "postprocess.json"
    pp.write_text(json.dumps(r))
    assert main(["evaluate", "-q", "--data", str(prepared), "--predictions", *files, "--out",
                 str(tmp_path / "ev"), "--postprocess", str(pp)]) == 0
    import pandas as pd

    t = pd.read_csv(tmp_path / "ev" / "evaluation.csv")
    for c in ("competition_post", "segm_AP_post", "AP_iou_f1_post", "attr_micro_f1_post"):
        assert c in t.columns
    post = from_values(r["settings"])
    in_sample = [p["tuned_in_sample"] for p in r["per_fold"]]
    from imat_kit.tune.nested import fold_scores

    assert np.allclose(fold_scores(runs, post, find_labels(prepared)), in_sample)
    assert np.allclose(t.competition_post[:3], in_sample, atol=1e-4)  # the same scores
    from imat_kit.report import build_report

    page = Path(build_report(prepared, files, tmp_path / "r.html", postprocess=pp,
                             quiet=True).out).read_text()
    assert "At the tuned post-processing settings" in page
    assert f"{r['nested']['gain']:+.4f}" in page


# --- the search finds a known optimum, honestly -----------------------------------------------

def test_tune_finds_the_optimum_built_into_the_case(tuned_case):
    r = tuned_case[3]
    st = r["settings"]
    # low-scoring predictions are false positives (0.05–0.4) or duplicates (0.3–0.45): the
    # global threshold rises above them; duplicates' small leftovers are dropped by min area
    assert st["score_thr"] >= 0.4
    # category HOT's false positives score 0.75–0.9, its true detections 0.92–0.99
    assert "category" in r["groups_kept"] and float(st["category_thr"][str(HOT)]) > 0.75
    assert r["nested"]["gain"] > 0.02 and r["nested"]["tuned"] > r["nested"]["defaults"]
    assert r["scores"]["tuned"] > r["scores"]["defaults"]
    # the attribute probabilities carry the truth (0.7 vs 0.1): decoding beats a blunt 0.5
    assert r["nested"]["attr_micro_f1_tuned"] >= r["nested"]["attr_micro_f1_defaults"]


def test_nested_settings_never_saw_the_scored_fold(prepared, tuned_case, monkeypatch):
    import imat_kit.tune.nested as tn
    import imat_kit.tune.search as search_module

    _, _, runs, r = tuned_case
    seen = []
    real = search_module.Search.run

    def spy(self, post=None):
        seen.append(sorted(f.run.fold for f in self.folds))
        return real(self, post)

    monkeypatch.setattr(search_module.Search, "run", spy)
    again = tn.tune(runs, find_labels(prepared), min_support=3, quiet=True)
    assert again["settings"] == r["settings"]  # deterministic
    # one search per scored fold, on the other folds only; then the final one on all
    assert seen[:3] == [[1, 2], [0, 2], [0, 1]] and seen[-1] == [0, 1, 2]
    # each fold's nested score is that fold scored with its search's settings
    for row in r["per_fold"]:
        post = from_values(row["nested_settings"])
        run = next(x for x in runs if x.fold == row["fold"])
        assert tn.fold_scores([run], post, find_labels(prepared))[0] == pytest.approx(
            row["nested"])


def test_one_fold_has_no_honest_figure_and_defaults_are_kept_when_nothing_helps(
        prepared, tuned_case, tmp_path):
    from imat_kit.tune.nested import tune

    _, _, runs, _ = tuned_case
    one = tune(runs[:1], find_labels(prepared), min_support=3, quiet=True)
    assert one["nested"] is None and any("no honest" in n for n in one["notes"])
    # predictions equal to the truth: nothing to gain, every group stays at the defaults
    from tests.helpers.prediction_cases import write_case

    files = [str(write_case(tmp_path / f"f{k}.jsonl", prepared, "val", k, seed=k))
             for k in range(3)]
    perfect = read_fold_runs(prepared, files)
    r = tune(perfect, find_labels(prepared), min_support=3, quiet=True)
    assert r["nested"]["gain"] >= -1e-12
    for g in ("global", "category", "attributes"):
        if g not in r["groups_kept"]:
            assert any(n.startswith(g) for n in r["notes"])


def test_tune_cli_writes_the_file_and_prints_the_honest_gain(tuned_case, prepared, tmp_path,
                                                             capsys):
    _, files, _, _ = tuned_case
    out = tmp_path / "pp.json"
    assert main(["tune", "-q", "--data", str(prepared), "--predictions", *files, "--out",
                 str(out), "--min-support", "3"]) == 0
    text = capsys.readouterr().out
    assert "expected gain (each fold with settings tuned on the others)" in text
    post, content = load_postprocess(out, find_labels(prepared))
    assert content["metric"] == "competition" and post.score_thr >= 0.4


# --- the postprocess file and kept_instances ------------------------------------------------


def test_tune_other_metrics_2020_rule_and_ap_iou_f1(prepared2020, tmp_path):
    """The 2020 rule (the default on 2020 data) and Fashionpedia's AP^{IoU+F1} (exact path,
    no per-category thresholds): both tune, report a nested figure, and the settings' score
    is the one ``fold_scores`` gives."""
    from imat_kit.tune.nested import fold_scores, tune

    labels = find_labels(prepared2020)
    files = [str(write_noisy(tmp_path / f"fold{k}_val.jsonl", prepared2020, "val", k, seed=k))
             for k in range(2)]
    out = tmp_path / "pp.json"
    assert main(["tune", "-q", "--data", str(prepared2020), "--predictions", *files, "--out",
                 str(out), "--min-support", "3"]) == 0
    r = json.loads(out.read_text())
    assert r["metric"] == "competition2020" and r["nested"] is not None
    runs = read_fold_runs(prepared2020, files)
    post = from_values(r["settings"])
    assert np.allclose(fold_scores(runs, post, labels, metric="competition2020"),
                       [p["tuned_in_sample"] for p in r["per_fold"]])
    ap = tune(runs, labels, metric="ap_iou_f1", quiet=True)
    assert ap["settings"]["category_thr"] == {} and ap["nested"] is not None
    assert ap["scores"]["tuned"] >= ap["scores"]["defaults"]


def test_tune_finds_one_prediction_per_image_under_the_2020_formula(prepared2020, tmp_path):
    """Each image: one sure right prediction, the others right half the time, all above the
    score grid. TP / (TP + FP) (the published 2020 formula, the default) is best at one per
    image: tune finds cap 1, says so, and its nested figure gains; with false negatives
    counted, keeping them all is better and the cap stays above 1."""
    from imat_kit.tune.nested import tune
    from tests.helpers.tuning_cases import one_sure_predictions

    labels = find_labels(prepared2020)
    files = [str(write_noisy(tmp_path / f"fold{k}_val.jsonl", prepared2020, "val", k, seed=k,
                             make=one_sure_predictions)) for k in range(3)]
    runs = read_fold_runs(prepared2020, files)
    r = tune(runs, labels, metric="competition2020", min_support=3, quiet=True)
    assert r["fn"] == "ignore" and r["settings"]["max_per_image"] == 1
    assert any(n.startswith("one prediction per image") for n in r["notes"])
    assert r["scores"]["tuned"] == pytest.approx(1.0)
    assert r["nested"]["tuned"] == pytest.approx(1.0) and r["nested"]["gain"] > 0.1
    counted = tune(runs, labels, metric="competition2020", min_support=3, quiet=True,
                   fn="count")
    assert counted["fn"] == "count" and counted["settings"]["max_per_image"] > 1
    assert not any(n.startswith("one prediction per image") for n in counted["notes"])


def test_shrinkage_strength_is_chosen_by_the_nested_figure(prepared):
    """One category's false positives score 0.70–0.94, its truths 0.97–1.0: its threshold
    must reach 0.95. Shrunk toward the global one by a fixed strength (λ = 20, the old rule)
    it stays far below and the nested figure falls short of the right threshold's; with the
    strength chosen by the nested figure it comes within 0.05 of that oracle."""
    from imat_kit.tune.nested import fold_scores, tune
    from tests.helpers.tuning_cases import shrinkage_case

    labels = find_labels(prepared)
    runs = shrinkage_case(labels)
    r = tune(runs, labels, min_support=20, quiet=True)
    oracle = np.mean([fold_scores([run], replace(
        from_values(row["nested_settings"]),
        category_thr={**from_values(row["nested_settings"]).category_thr, 4: 0.95}), labels)[0]
        for run, row in zip(runs, r["per_fold"])])
    sh = r["nested"]["shrinkage"]
    assert sh["nested"]["20.0"] < oracle - 0.05  # the fixed strength loses the gain
    assert r["nested"]["tuned"] >= oracle - 0.05
    assert r["settings"]["category_thr"]["4"] >= 0.9


def test_pair_thresholds_shrink_by_support_and_decode(monkeypatch, prepared, tmp_path,
                                                      capsys):
    """Attribute 7 needs a lower threshold on category 3 (its probabilities there run low):
    the pair gets its F1-optimal threshold shrunk toward the attribute's by its support; a
    pair seen twice barely moves; the decoding uses it, survives the file and is checked on
    load like every id."""
    import imat_kit.tune.attributes as tune_attributes
    from imat_kit.postprocess import AttributeThresholds

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(60):  # category 3: attribute 7 at 0.30–0.40 when true, 0.05–0.15 when not
        true = rng.random() < 0.5
        rows.append((3, {7: float(rng.uniform(0.3, 0.4) if true else rng.uniform(0.05, 0.15))},
                     {7} if true else set()))
    rows += [(4, {7: 0.45}, {7}), (4, {7: 0.2}, set())]  # category 4: two instances
    monkeypatch.setattr(tune_attributes, "matched_attribute_pairs", lambda runs: rows)
    base = AttributeThresholds(0.5, {})
    pairs = tune_attributes.tune_pair_thresholds([], base, min_support=10)
    n3 = sum(1 for c, _, t in rows if c == 3 and t)
    t3 = max(p[7] for c, p, t in rows if c == 3 and not t)
    lo3 = min(p[7] for c, p, t in rows if c == 3 and t)
    raw = (t3 + lo3) / 2
    assert pairs[(3, 7)] == pytest.approx((n3 * raw + 10 * 0.5) / (n3 + 10), abs=1e-6)
    assert pairs[(3, 7)] < 0.35  # far below the attribute's 0.5
    assert abs(pairs[(4, 7)] - 0.5) < 0.02  # one truth: it stays near the attribute's
    dec = AttributeDecoder("pair", base, pairs=pairs)
    assert dec.decode(3, {7: 0.32}) == (7,) and dec.decode(4, {7: 0.32}) == ()
    post = PostProcess(attributes=dec)
    assert from_values(post.values()).attributes == dec
    bad = postprocess_file(tmp_path, {**post.values(), "attributes": {**dec.as_dict(),
                                                         "per_pair": {"77_7": 0.3}}})
    with pytest.raises(KitError, match="category id 77"):
        load_postprocess(bad, find_labels(prepared))
    bad = postprocess_file(tmp_path, {**post.values(), "attributes": {**dec.as_dict(),
                                                         "per_pair": {"3-7": 0.3}}})
    with pytest.raises(KitError, match="CATEGORY_ATTRIBUTE"):
        load_postprocess(bad, find_labels(prepared))
