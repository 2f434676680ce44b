"""The fast score beside the reference metric (imat_kit.eval.fast_score): its attribute F1
equals the metric's pairwise F1 (the score of whole settings equals the submission's score:
tests/test_tune.py)."""


from __future__ import annotations

import numpy as np


def test_link_f1_equals_pairwise_f1():
    from imat_kit.eval.attr_metric import multihot, pairwise_f1
    from imat_kit.eval.fast_score import f1_of_sets

    rng = np.random.default_rng(1)
    ids = list(range(12))
    index = {a: a for a in ids}
    ps = [tuple(sorted(set(rng.choice(ids, int(rng.integers(0, 5)))))) for _ in range(60)]
    ts = [tuple(sorted(set(rng.choice(ids, int(rng.integers(0, 5)))))) for _ in range(60)]
    for kind in ("binary_macro", "positive"):
        ref = [pairwise_f1(multihot([p], index), multihot([t], index), kind)[0, 0]
               for p, t in zip(ps, ts)]
        assert np.allclose(f1_of_sets(ps, ts, len(ids), kind), ref)
