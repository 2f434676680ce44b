import hashlib
import json

import numpy as np
import pandas as pd
from PIL import Image

from imat_kit.data import rle
from imat_kit.data.labels import load_labels, parse_class_id
from imat_kit.data.synth import generate_full_csv, generate_images
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
