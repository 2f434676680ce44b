import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.data import rle, rle_batch
from imat_kit.errors import KitError


def _masks(seed=0, n=400):
    """Random masks plus the edge cases: empty, full, one pixel, first/last pixel, 1×N, N×1."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in [(1, 1), (1, 9), (9, 1), (5, 7)]:
        out += [np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8)]
        first = np.zeros((h, w), np.uint8)
        first[0, 0] = 1
        last = np.zeros((h, w), np.uint8)
        last[-1, -1] = 1
        out += [first, last]
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if rng.random() < 0.3:
            m = np.asfortranarray(m)
        out.append(m)
    single = np.zeros((30, 20), np.uint8)
    single[13, 11] = 1
    out.append(single)
    return out


def _ref_counts(m):
    return mask_util.encode(np.asfortranarray(m.astype(np.uint8)))


def test_known_answer():
    m = np.array([[0, 1, 0],
                  [1, 1, 0],
                  [0, 0, 1]], dtype=np.uint8)
    # column-major: 0 1 0 | 1 1 0 | 0 0 1 → ones at 1-based pixels 2, 4-5, 9
    assert rle.encode(m) == "2 1 4 2 9 1"
    assert rle.kaggle_to_coco("2 1 4 2 9 1", 3, 3) == {"size": [3, 3], "counts": "11112O"}
    assert rle.coco_to_kaggle({"size": [3, 3], "counts": "11112O"}) == "2 1 4 2 9 1"
    assert rle.coco_to_kaggle({"size": [3, 3], "counts": [1, 1, 1, 2, 3, 1]}) == "2 1 4 2 9 1"
    np.testing.assert_array_equal(rle.decode("2 1 4 2 9 1", 3, 3), m)


def test_round_trip_against_pycocotools():
    for m in _masks():
        h, w = m.shape
        text = rle.encode(m)
        np.testing.assert_array_equal(rle.decode(text, h, w), m)
        ref = _ref_counts(m)
        assert rle.kaggle_to_coco(text, h, w)["counts"] == ref["counts"].decode()
        assert rle.coco_to_kaggle(ref) == text
        np.testing.assert_array_equal(mask_util.decode(rle.kaggle_to_coco(text, h, w)), m)


def test_encode_any_dtype_and_layout():
    m = np.zeros((6, 4), bool)
    m[2:5, 1] = True
    m[0, 3] = True
    want = rle.encode(m)
    assert rle.encode(m.astype(np.uint8) * 255) == want
    assert rle.encode(np.asfortranarray(m)) == want
    assert rle.encode(m.astype(np.float32)) == want
    assert rle.decode(want, 6, 4).flags.f_contiguous


def test_empty_text_is_empty_mask():
    assert rle.decode("", 2, 3).sum() == 0
    assert rle.decode(None, 2, 3).shape == (2, 3)
    assert rle.encode(np.zeros((3, 3))) == ""


def test_touching_runs_are_merged():
    assert rle.runs_to_string(*rle.parse_runs("1 2 3 2 9 1", 3, 3)) == "1 4 9 1"


@pytest.mark.parametrize("text,msg", [
    ("1 2 3", "odd number of tokens"),
    ("1 x", "token is not an integer"),
    ("1 2.5", "token is not an integer"),
    ("3 0", "run 1 has length 0"),
    ("3 -2", "run 1 has length -2"),
    ("0 2", "run 1 starts at 0"),
    ("8 3", "ends at pixel 10, past the 3x3=9 pixels"),
    ("5 1 2 1", "runs 1 and 2 are unsorted"),
    ("2 3 4 1", "runs 1 and 2 are overlapping"),
])
def test_malformed_rle(text, msg):
    with pytest.raises(KitError, match=msg):
        rle.parse_runs(text, 3, 3)
    with pytest.raises(KitError):
        rle.kaggle_to_coco(text, 3, 3)
    batch = rle_batch.parse_runs_batch([text, "1 1"], np.array([3, 3]), np.array([3, 3]))
    assert batch.bad.tolist() == [True, False]
    assert batch.starts.tolist() == [0] and batch.offsets.tolist() == [0, 0, 1]


def test_malformed_coco():
    with pytest.raises(KitError, match="counts sum to 8, not 3x3=9"):
        rle.coco_to_kaggle({"size": [3, 3], "counts": [1, 1, 6]})
    with pytest.raises(KitError, match="needs 'size'"):
        rle.coco_to_kaggle({"counts": "11"})
    with pytest.raises(KitError, match="ends in the middle of a value"):
        rle.coco_string_to_counts("1a")
    with pytest.raises(KitError, match="outside"):
        rle.coco_string_to_counts("1 2")
    with pytest.raises(KitError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2)))


def test_batch_kernels_match_pycocotools():
    rng = np.random.default_rng(5)
    texts, hs, ws = [], [], []
    for m in _masks(seed=5, n=300):
        if m.any():
            texts.append(rle.encode(m))
            hs.append(m.shape[0])
            ws.append(m.shape[1])
    for _ in range(60):  # large images: counts of many characters, negative deltas
        h, w = int(rng.integers(2000, 10717)), int(rng.integers(2000, 6824))
        starts = np.sort(rng.choice(h * w // 4, 4, replace=False)) * 4
        lengths = np.maximum(1, np.minimum(rng.integers(1, h * w // 3, 4),
                                           np.diff(np.r_[starts, h * w]) - 1))
        texts.append(rle.runs_to_string(starts, lengths))
        hs.append(h)
        ws.append(w)
    hs, ws = np.array(hs), np.array(ws)
    batch = rle_batch.parse_runs_batch(texts, hs, ws)
    assert not batch.bad.any()
    counts, coff = rle_batch.counts_batch(batch, hs * ws)
    strings = rle_batch.coco_strings_batch(counts, coff)
    bbox, area = rle_batch.bbox_area_batch(batch, hs)
    for i, text in enumerate(texts):
        h, w = int(hs[i]), int(ws[i])
        ref = rle.kaggle_to_coco(text, h, w)
        assert strings[i] == ref["counts"], i
        assert bbox[i].tolist() == mask_util.toBbox(ref).tolist(), i
        assert area[i] == mask_util.area(ref), i
        assert rle.coco_string_to_counts(strings[i]).tolist() == \
            counts[coff[i]:coff[i + 1]].tolist()


def test_batch_tolerates_extra_whitespace():
    batch = rle_batch.parse_runs_batch(["1  2", "4 1\t", " 7 2"], np.array([3] * 3),
                                       np.array([3] * 3))
    assert not batch.bad.any()
    assert batch.starts.tolist() == [0, 3, 6] and batch.lengths.tolist() == [2, 1, 2]


def test_run_set_operations_match_masks():
    rng = np.random.default_rng(9)

    def runs(m):
        s, lengths = rle._mask_runs(m.reshape(1, -1))
        return s, s + lengths

    for _ in range(500):
        n = int(rng.integers(1, 50))
        a, b, c = (rng.random(n) < 0.4 for _ in range(3))
        for got, want in [(rle.runs_difference(runs(a), runs(b)), runs(a & ~b)),
                          (rle.runs_union(runs(a), runs(b)), runs(a | b)),
                          (rle.runs_vote([runs(a), runs(b), runs(c)], np.array([.5, .3, .4]),
                                         0.6), runs(a * .5 + b * .3 + c * .4 >= 0.6 - 1e-9))]:
            assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()


def test_areas_and_totals_of_counts_texts_in_c_and_numpy():
    """The one-pass decoder (C where built, numpy else) gives pycocotools' area and the pixel
    total of every text, and flags the malformed ones (area and total 0)."""
    masks = _masks(seed=3, n=300)
    texts = []
    for m in masks:
        r = mask_util.encode(np.asfortranarray(m))
        texts.append(r["counts"].decode("ascii"))
    bad_texts = ["!!", "1a", "o", "P" * 13 + "0", "é1"]  # a value of 14 groups: too long
    tot_np, bad_np, area_np = rle._totals_areas_numpy([*texts, *bad_texts])
    want_area = [int(m.sum()) for m in masks]
    assert area_np[:len(texts)].tolist() == want_area
    assert tot_np[:len(texts)].tolist() == [m.size for m in masks]
    assert not bad_np[:len(texts)].any() and bad_np[len(texts):].all()
    assert not area_np[len(texts):].any() and not tot_np[len(texts):].any()
    assert rle.coco_strings_areas(texts).tolist() == want_area
    if rle._counts is not None:  # the C pass gives the same, malformed texts included
        tot_c, bad_c, area_c = rle._totals_areas([*texts, *bad_texts])
        assert tot_c.tolist() == tot_np.tolist() and area_c.tolist() == area_np.tolist()
        assert bad_c.tolist() == bad_np.tolist()


def test_region_counts_equal_pycocotools_on_the_full_mask():
    """A region of an image encoded alone (no H×W array) gives the text pycocotools writes
    for the full mask: empty, full, touching the edges, runs joining across columns."""
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(0)
    for _ in range(2000):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        top, left = int(rng.integers(0, h)), int(rng.integers(0, w))
        hr, wr = int(rng.integers(1, h - top + 1)), int(rng.integers(1, w - left + 1))
        region = rng.random((hr, wr)) < rng.choice([0.0, 0.3, 0.7, 1.0])
        full = np.zeros((h, w), np.uint8)
        full[top:top + hr, left:left + wr] = region
        want = mask_util.encode(np.asfortranarray(full))["counts"].decode()
        assert rle.region_counts(region, top, left, h, w) == want
