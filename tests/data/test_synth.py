import json

import numpy as np
import pandas as pd
from PIL import Image

from imat_kit.data import rle
from imat_kit.data.labels import load_labels, parse_class_id
from imat_kit.data.synth import generate_images
from imat_kit.data.synth_real import (
    _paint_real,
    generate_full_csv,
    generate_real_images,
    real_image_sizes,
)
from tests.helpers.files import tree_digest


def test_layout_and_content(synth_dir):
    lab = load_labels()
    df = pd.read_csv(synth_dir / "train.csv", dtype=str)
    assert list(df.columns) == ["ImageId", "EncodedPixels", "Height", "Width", "ClassId"]
    assert df.ImageId.str.fullmatch(r"[0-9a-f]{32}\.jpg").all()
    assert json.loads((synth_dir / "label_descriptions.json").read_text())["info"]["year"] == 2019
    parsed = [parse_class_id(c, lab) for c in df.ClassId]
    cats = np.array([c for c, _ in parsed])
    with_attr = np.array([bool(a) for _, a in parsed])
    assert with_attr.any() and (cats[with_attr] <= 12).all()
    assert len(set(cats.tolist())) >= 12  # several categories
    counts = np.bincount(cats, minlength=46)
    assert counts.max() >= 5 * np.median(counts[counts > 0])  # skewed
    per_image = df.groupby("ImageId").size()
    assert per_image.mean() > 2
    sizes = set()
    for name, g in df.groupby("ImageId"):
        h, w = int(g.Height.iloc[0]), int(g.Width.iloc[0])
        with Image.open(synth_dir / "train" / name) as im:
            assert im.size == (w, h)
        sizes.add((h, w))
        for m in g.EncodedPixels:
            assert rle.decode(m, h, w).sum() >= 20
        # instances of the same category never overlap
        for cat in {parse_class_id(c)[0] for c in g.ClassId}:
            masks = [rle.decode(m, h, w) for c, m in zip(g.ClassId, g.EncodedPixels)
                     if parse_class_id(c)[0] == cat]
            assert np.sum(masks, axis=0).max() <= 1
    assert len(sizes) > 10
    sub = pd.read_csv(synth_dir / "sample_submission.csv")
    assert list(sub.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert sorted(sub.ImageId) == sorted(p.name for p in (synth_dir / "test").iterdir())
    sol = pd.read_csv(synth_dir / "test_solution.csv")
    assert set(sol.ImageId) <= set(sub.ImageId)


def test_deterministic_by_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in [(a, 5), (b, 5), (c, 6)]:
        generate_images(out, images=6, test_images=2, seed=seed, min_side=64, max_side=96,
                        quiet=True)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)


def test_full_scale_csv(tmp_path):
    generate_full_csv(tmp_path / "a", seed=0, images=300, rows=2200, quiet=True)
    generate_full_csv(tmp_path / "b", seed=0, images=300, rows=2200, quiet=True)
    assert (tmp_path / "a/train.csv").read_bytes() == (tmp_path / "b/train.csv").read_bytes()
    df = pd.read_csv(tmp_path / "a/train.csv")
    assert len(df) == 2200 and df.ImageId.nunique() == 300
    assert (df.Height.max(), df.Width.max()) == (10717, 6824)
    for _, r in df.sample(200, random_state=0).iterrows():
        _, lengths = rle.parse_runs(r.EncodedPixels, r.Height, r.Width)
        assert lengths.sum() > 0
    assert not list((tmp_path / "a").glob("*.jpg"))


def test_real_sizes_follow_the_published_figures():
    hgt, wid = real_image_sizes(np.random.default_rng(0), 45_625)
    long, short = np.maximum(hgt, wid), np.minimum(hgt, wid)
    assert abs(long.mean() - 2151) < 25 and abs(short.mean() - 1710) < 25
    assert (hgt[0], wid[0]) == (10717, 6824) and (hgt[-1], wid[-1]) == (236, 304)
    assert long.max() <= 10717 and short.min() >= 236
    assert 0.75 < (hgt > wid).mean() < 0.85  # mostly portrait


def test_real_size_painter_is_deterministic_and_its_runs_are_the_silhouettes():
    cats = np.array([6, 23, 31])
    a = _paint_real(np.random.default_rng(5), 900, 700, 3, cats)
    b = _paint_real(np.random.default_rng(5), 900, 700, 3, cats)
    assert np.array_equal(a[0], b[0]) and a[0].shape == (900, 700, 3)
    for (_cat, starts, lengths), (_, s2, l2) in zip(a[1], b[1]):
        assert np.array_equal(starts, s2) and np.array_equal(lengths, l2)
        mask = rle.decode(rle.runs_to_string(starts, lengths), 900, 700)
        assert mask.sum() == lengths.sum() > 0


def test_real_scale_dataset(tmp_path):
    """Three images: the 10717 x 6824 extreme with 50 instances, the 74-instance one, and the
    236 x 304 one; JPEGs of the CSV's sizes, every mask inside its image."""
    s = generate_real_images(tmp_path, images=3, test_images=1, seed=0, quiet=True)
    df = pd.read_csv(tmp_path / "train.csv")
    per = df.groupby("ImageId", sort=False).size().tolist()
    assert per == [50, 74, len(df) - 124] and s.rows == len(df)
    for name, g in df.groupby("ImageId"):
        with Image.open(tmp_path / "train" / name) as im:
            assert im.size == (g.Width.iloc[0], g.Height.iloc[0])
        for _, r in g.iterrows():
            assert rle.parse_runs(r.EncodedPixels, r.Height, r.Width)[1].sum() > 0
    assert {(r.Height, r.Width) for r in df.itertuples()} >= {(10717, 6824), (236, 304)}
    sub = pd.read_csv(tmp_path / "sample_submission.csv")
    assert len(sub) == 1 and (tmp_path / "test" / sub.ImageId[0]).exists()
