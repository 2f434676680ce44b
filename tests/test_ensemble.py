import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.cli.commands import main
from imat_kit.ensemble import ensemble, fuse_image
from imat_kit.eval.metric import Instance, class_key, competition_score
from imat_kit.predictions import (
    ImagePrediction,
    parse_line,
    read_predictions,
    write_predictions,
)
from tests.helpers.predictions import truth_predictions


def _encode(m):
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    return r["counts"].decode(), mask_util.toBbox(r).tolist()


def noisy_model(truth, seed):
    """A fake fold model: misses a quarter of the instances, shifts masks by up to 3 px,
    adds false positives, scores at random."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, p in truth.items():
        labels, scores, masks, boxes = [], [], [], []
        for j in range(len(p)):
            if rng.random() < 0.25:
                continue
            m = mask_util.decode({"size": [p.height, p.width], "counts": p.masks[j]})
            m = np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
            c, b = _encode(m)
            labels.append(p.labels[j])
            scores.append(rng.uniform(0.5, 1))
            masks.append(c)
            boxes.append(b)
        for _ in range(int(rng.integers(0, 3))):
            m = np.zeros((p.height, p.width), bool)
            y, x = rng.integers(0, p.height - 20), rng.integers(0, p.width - 20)
            m[y:y + 15, x:x + 15] = True
            c, b = _encode(m)
            labels.append(int(rng.integers(0, 46)))
            scores.append(rng.uniform(0.3, 0.8))
            masks.append(c)
            boxes.append(b)
        out[key] = ImagePrediction(key, p.height, p.width, np.array(labels, np.int64),
                                   np.array(scores, np.float32),
                                   np.array(boxes, np.float32).reshape(-1, 4), masks)
    return out


def as_instances(preds, thr=0.0):
    return {k: [Instance(class_key(int(p.labels[j]), (), False),
                         {"size": [p.height, p.width], "counts": p.masks[j]},
                         float(p.scores[j])) for j in range(len(p)) if p.scores[j] >= thr]
            for k, p in preds.items()}


def test_fusion_beats_every_single_model(synth_dir):
    truth = truth_predictions(synth_dir, attributes=False)
    gt = as_instances(truth)
    models = [noisy_model(truth, s) for s in range(5)]

    def best(preds):  # each at its own best score threshold, as a user would tune it
        return max(competition_score(gt, as_instances(preds, t))["score"]
                   for t in np.arange(0.1, 0.95, 0.1))

    singles = [best(m) for m in models]
    f = best(ensemble(models, quiet=True))
    nms = best(ensemble(models, method="nms", quiet=True))
    assert f >= max(singles), (f, singles)
    assert f > nms


def _pred(masks, labels, scores, h=10, w=10):
    enc = [_encode(m) for m in masks]
    return ImagePrediction("x.jpg", h, w, np.array(labels, np.int64),
                           np.array(scores, np.float32),
                           np.array([b for _, b in enc], np.float32).reshape(-1, 4),
                           [c for c, _ in enc])


def test_fusion_known_answer():
    a = np.zeros((10, 10), bool)
    a[2:8, 2:8] = True
    b = np.zeros((10, 10), bool)
    b[2:8, 3:9] = True  # IoU with a: 30/42
    c = np.zeros((10, 10), bool)
    c[2:8, 2:8] = True
    p1, p2, p3 = _pred([a], [6], [0.9]), _pred([b], [6], [0.6]), _pred([c], [6], [0.9])
    f = fuse_image([p1, p2, p3])
    assert len(f) == 1 and f.labels.tolist() == [6]
    assert f.scores[0] == pytest.approx((0.9 + 0.6 + 0.9) / 3)
    m = mask_util.decode({"size": [10, 10], "counts": f.masks[0]}).astype(bool)
    np.testing.assert_array_equal(m, a)  # a and c outvote b's extra column
    # a singleton keeps a third of its score; another class is not merged
    g = fuse_image([p1, _pred([a], [7], [0.6]), None])
    assert sorted(g.labels.tolist()) == [6, 7]
    assert sorted(g.scores.tolist()) == pytest.approx([0.2, 0.3])
    # nms: one survivor per overlapping group
    n = fuse_image([p1, p2, p3], method="nms")
    assert len(n) == 1 and n.scores[0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="one positive weight per input"):
        ensemble([{}, {}], weights=[1.0])


def test_cli_ensemble(synth_dir, tmp_path, capsys):
    truth = truth_predictions(synth_dir, attributes=False)
    files, models = [], []
    for s in range(3):
        f = tmp_path / f"fold{s}.jsonl"
        models.append(noisy_model(truth, s))
        write_predictions(f, {"split": "test", "fold": s, "config": "c.py",
                              "checkpoint": f"f{s}.pth"}, models[-1].values())
        files.append(str(f))
    out = tmp_path / "fused.jsonl"
    assert main(["ensemble", "--inputs", *files, "--out", str(out), "--weights", "1", "1", "2",
                 "-q"]) == 2  # hand-made files record no label space: the labels need --data
    assert "records no label_space" in capsys.readouterr().err and not out.exists()
    assert main(["ensemble", "--inputs", *files, "--out", str(out), "--weights", "1", "1", "2",
                 "--data", str(synth_dir), "-q"]) == 0
    head, fused = read_predictions(out)
    assert head["method"] == "fusion" and [i["checkpoint"] for i in head["inputs"]] == \
        ["f0.pth", "f1.pth", "f2.pth"]
    assert set(fused) == set(truth) and head["weights"] == [1.0, 1.0, 2.0]
    for key, p in fused.items():  # every fused instance stands for at least one input one
        given = [m[key] for m in models if key in m]
        assert len(p) <= sum(len(g) for g in given)
        assert (len(p) > 0) == any(len(g) > 0 for g in given)
        assert set(p.labels.tolist()) <= {c for g in given for c in g.labels.tolist()}


def test_soft_fusion_averages_probabilities():
    h = w = 20
    a = np.zeros((h, w), bool)
    a[4:14, 4:14] = True
    b = np.zeros((h, w), bool)
    b[5:15, 5:15] = True

    def soft_pred(m, score, prob):
        c, box = _encode(m)
        return ImagePrediction("x.jpg", h, w, np.array([6]), np.array([score], np.float32),
                               np.array([box], np.float32), [c],
                               np.full((1, 8, 8), prob, np.uint8))

    # both sure: the fused mask is where the weighted mean of the probabilities is >= 0.5
    f = fuse_image([soft_pred(a, 0.9, 255), soft_pred(b, 0.9, 255)])
    m = mask_util.decode(f.rles()[0]).astype(bool)
    np.testing.assert_array_equal(m, a | b)  # each box alone carries half the weight
    assert f.soft is not None and f.soft.shape == (1, 8, 8)
    # a weak member cannot carry the pixels only it covers
    f = fuse_image([soft_pred(a, 0.9, 255), soft_pred(b, 0.9, 100)])
    m = mask_util.decode(f.rles()[0]).astype(bool)
    np.testing.assert_array_equal(m, a)
    # soft masks survive the file format
    g = parse_line(f.to_json(), 8)
    np.testing.assert_array_equal(g.soft, f.soft)


def test_members_scale_keeps_the_order_and_one_input_s_count_at_any_threshold():
    """Fused scores on one input's scale: the map never reverses an order (the inputs' ties
    may join two fused scores: the image's order, by fused score, then decides, as
    ``fuse_image`` lists them), and at every threshold the fused predictions kept number what
    one input keeps on average."""
    from imat_kit.data.masks import score_order
    from imat_kit.ensemble import members_scale

    rng = np.random.default_rng(0)

    def preds(n_img, per, lo, hi):
        out = {}
        for i in range(n_img):
            n = int(rng.integers(0, per))
            s = -np.sort(-np.round(rng.uniform(lo, hi, n), 2))  # ties on purpose
            out[f"im{i}"] = ImagePrediction(f"im{i}", 10, 10, np.zeros(n, np.int64),
                                            s.astype(np.float32), np.zeros((n, 4), np.float32),
                                            [""] * n)
        return out

    inputs = [preds(30, 12, 0.05, 1.0) for _ in range(3)]
    fused = preds(30, 10, 0.01, 0.6)  # the weighted means: lower
    out = members_scale(fused, inputs)
    before = np.concatenate([fused[k].scores for k in fused])
    after = np.concatenate([out[k].scores for k in out])
    order = np.argsort(before, kind="stable")
    assert (np.diff(after[order]) >= 0).all()  # increasing map
    for k in fused:
        assert np.array_equal(score_order(out[k].scores), score_order(fused[k].scores))
    members = np.concatenate([p.scores for d in inputs for p in d.values()])
    for t in np.unique(after):
        kept = int((after >= t).sum())
        assert abs(kept - (members >= t).sum() / 3) <= 1 + (after == t).sum(), t
    e = ensemble(inputs[:1], quiet=True)  # one input: nothing to scale
    assert all(np.array_equal(e[k].scores, inputs[0][k].scores) for k in e)
