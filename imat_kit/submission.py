"""The competition submission: writing it from predictions, and validating any CSV.

A 2019 submission is ``ImageId,EncodedPixels,ClassId``, one row per predicted instance, every
test image of ``sample_submission.csv`` present (in its order); an image without predictions
gets one row with empty ``EncodedPixels`` (and the sample's placeholder ``ClassId``). With
``--attributes`` the ``ClassId`` carries them (``6_28_77``). The 2020 layout (chosen when the
data's ``sample_submission.csv`` has an ``AttributesIds`` column) is
``ImageId,EncodedPixels,ClassId,AttributesIds``: ``ClassId`` the category alone, the attribute
ids comma-joined in ascending order. Masks of one ``ClassId`` in one image must not overlap.
Overlaps are resolved on runs (no H×W masks): each pixel stays with the highest-scoring
instance of its class.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imat_kit import __version__, fields
from imat_kit.data import rle as rle_mod
from imat_kit.data.labels import Labels, format_class_id, parse_class_id
from imat_kit.data.masks import score_order
from imat_kit.data.readers import csv_columns, read_csv
from imat_kit.errors import KitError
from imat_kit.files import atomic_open
from imat_kit.postprocess import AttributeDecoder, PostProcess, kept_instances, masks_of
from imat_kit.predictions import ImagePrediction
from imat_kit.progress import parallel_map

HEADER = ["ImageId", "EncodedPixels", "ClassId"]
HEADER_2020 = [*HEADER, "AttributesIds"]
EMPTY_CLASS = "23"  # the placeholder class of sample_submission.csv, on rows without a mask


#: how masks are written: at the image's size, or resized to 512 × 512 (the 2019 kernel rule)
MASK_SIZES = ("original", "512")


def check_mask_size(mask_size: str) -> None:
    if mask_size not in MASK_SIZES:
        raise KitError("mask_size must be 'original' or '512'", value=mask_size)


def writer_settings(post: PostProcess, *, mask_size: str = "original",
                    attributes: bool = False) -> dict:
    """Every threshold the writer applies, as the submission's manifest records them."""
    check_mask_size(mask_size)
    return {"score_thr": post.score_thr, "max_per_image": post.max_per_image,
            "min_area": post.min_area, "mask_size": mask_size, "attributes": attributes,
            "category_thr": dict(post.category_thr), "mask_thr": post.mask_thr}


def _resized_runs(counts: str, h: int, w: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of a mask resized (nearest) to size×size."""
    from pycocotools import mask as mask_util

    m = mask_util.decode({"size": [h, w], "counts": counts})
    ys = (np.arange(size) * h // size).clip(0, h - 1)
    xs = (np.arange(size) * w // size).clip(0, w - 1)
    s, lengths = rle_mod._mask_runs(m[np.ix_(ys, xs)])
    return s, s + lengths


def submission_layout(data: str | Path) -> int:
    """2020 when the data's ``sample_submission.csv`` has an ``AttributesIds`` column, else
    2019."""
    cols = csv_columns(Path(data) / "sample_submission.csv", what="sample submission")
    return 2020 if "AttributesIds" in cols else 2019


def image_rows(pred: ImagePrediction, post: PostProcess, layout: int = 2019, *,
               mask_size: str = "original", attributes: bool = False) -> list[tuple[str, ...]]:
    """``(EncodedPixels, ClassId)`` rows of one image (2020: ``(EncodedPixels, ClassId,
    AttributesIds)``): thresholded, capped, same-class overlaps removed (best score keeps the
    pixel), small leftovers dropped (:func:`postprocess.kept_instances`; with ``attributes``,
    a class is a category with its attribute set; with ``mask_size`` 512, overlaps and areas
    are taken on the 512×512 masks). ``post``'s attribute decoding and re-scorer are applied
    before (:func:`submit`)."""
    if mask_size == "512":
        pred, post = _at_512(pred, post)
    if attributes and pred.attributes:  # one class per (category, attribute set)
        sets = {a: k for k, a in enumerate(dict.fromkeys(
            (int(c), tuple(a)) for c, a in zip(pred.labels.tolist(), pred.attributes)))}
        thr = post.thresholds_of(pred.labels)
        key = np.array([sets[(int(c), tuple(a))] for c, a in zip(pred.labels.tolist(),
                                                               pred.attributes)], np.int64)
        post = replace(post, category_thr={int(k): float(t) for k, t in zip(key, thr)})
        kept = kept_instances(replace(pred, labels=key), post)
    else:
        kept = kept_instances(pred, post)
    rows = []
    for i, counts, _ in kept:
        own = pred.attributes[i] if pred.attributes else ()
        cid = format_class_id(int(pred.labels[i]), own if attributes else ())
        s, e = rle_mod.coco_to_runs({"counts": counts})
        enc = rle_mod.runs_to_string(s, e - s)
        rows.append((enc, cid, ",".join(map(str, sorted(own)))) if layout == 2020
                    else (enc, cid))
    return rows


def _at_512(pred: ImagePrediction, post: PostProcess) -> tuple[ImagePrediction, PostProcess]:
    """The instances that pass the score thresholds and the cap, masks (rebuilt from soft
    masks first, with ``mask_thr``) resized to 512×512: what the overlap rule then works on."""
    keep = np.flatnonzero(pred.scores >= post.thresholds_of(pred.labels))
    keep = keep[score_order(pred.scores[keep])][: post.max_per_image]
    sub = pred[keep]
    masks = []
    for counts in masks_of(sub, np.arange(len(sub)), post).values():
        s, e = _resized_runs(counts, sub.height, sub.width, 512)
        masks.append(rle_mod.counts_to_coco_string(rle_mod.runs_to_counts(s, e - s, 512 * 512),
                                                   512, 512))
    small = replace(sub, height=512, width=512, masks=masks, soft=None)
    return small, replace(post, score_thr=0.0, category_thr={}, mask_thr=None)


def _code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)
        if rev.returncode == 0:
            return f"{__version__}+g{rev.stdout.strip()}"
    except OSError:
        pass
    return __version__


def _rows_many(preds: list, kw: dict) -> list[list[tuple[str, ...]]]:
    return [image_rows(p, kw["post"], kw["layout"], mask_size=kw["mask_size"],
                       attributes=kw["attributes"]) if p is not None else [] for p in preds]


def write_submission(preds: dict[str, ImagePrediction], image_ids: list[str],
                     out: str | Path, post: PostProcess | None = None, *,
                     mask_size: str = "original", attributes: bool = False,
                     manifest: dict | None = None, layout: int = 2019,
                     workers: int | None = None, quiet: bool = False,
                     name: str | None = None) -> dict:
    """Write the CSV (atomically, in the ``layout`` of 2019 or 2020) and ``<out>.json``
    beside it, each image's rows by :func:`image_rows` at ``post`` (default: the defaults);
    returns the manifest (``name``: the CSV's name in it, default ``out``'s). The rows of the
    images are computed in ``workers`` processes (default: up to 2)."""
    post = post or PostProcess()
    settings = writer_settings(post, mask_size=mask_size, attributes=attributes)
    out = Path(out)
    n_rows = n_empty = 0
    missing = 0
    all_rows = parallel_map(_rows_many, [preds.get(key) for key in image_ids],
                            {"post": replace(post, attributes=AttributeDecoder(), rescore=None),
                             "layout": layout, "mask_size": mask_size,
                             "attributes": attributes}, workers=workers,
                            desc="submission rows", quiet=quiet)
    empty = [EMPTY_CLASS, ""] if layout == 2020 else [EMPTY_CLASS]
    with atomic_open(out, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(HEADER_2020 if layout == 2020 else HEADER)
        for key, rows in zip(image_ids, all_rows):
            if preds.get(key) is None:
                missing += 1
            if not rows:
                wr.writerow([key, "", *empty])
                n_empty += 1
            for r in rows:
                wr.writerow([key, *r])
            n_rows += max(len(rows), 1)
    man = {"submission": name or out.name, "layout": layout, "rows": n_rows,
           "images": len(image_ids), "images_without_prediction": n_empty,
           "images_missing_from_predictions": missing,
           "thresholds": settings, "code_version": _code_version(), **(manifest or {})}
    with atomic_open(out.with_suffix(".json"), "w") as f:
        json.dump(man, f, indent=2, default=str)
    return man


# --- validation -----------------------------------------------------------------------------

@dataclass
class Problem:
    row: int | None
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}" if self.row else self.message


def validate_submission(path: str | Path, image_ids: list[str],
                        sizes: dict[str, tuple[int, int]], labels: Labels, *,
                        mask_size: str = "original", max_problems: int = 1000) -> list[Problem]:
    """Every problem of a submission CSV, with 1-based row numbers (header = row 1).

    ``sizes`` maps ImageId → (height, width) of the test image (``mask_size='512'`` checks
    against 512×512 instead). The layout comes from the header: 2019
    (``ImageId,EncodedPixels,ClassId``) or 2020 (``…,AttributesIds``: ``ClassId`` a category
    alone, attribute ids comma-joined, ascending, each once, known to the label file).
    """
    problems: list[Problem] = []

    def add(row: int | None, msg: str) -> None:
        if len(problems) < max_problems:
            problems.append(Problem(row, msg))

    cols = csv_columns(path, what="submission")
    if sorted(cols) not in (sorted(HEADER), sorted(HEADER_2020)):
        return [Problem(1, f"header must be {','.join(HEADER)} (2019) or "
                        f"{','.join(HEADER_2020)} (2020), got {','.join(cols)}")]
    df = read_csv(path, what="submission", rows_required=False)
    layout = 2020 if "AttributesIds" in cols else 2019
    attr_cells = df.AttributesIds if layout == 2020 else [None] * len(df)
    expected = set(image_ids)
    seen: set[str] = set()
    runs_by: dict[tuple[str, str], list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
    rows_of: dict[str, list[int]] = defaultdict(list)
    empties: dict[str, int] = {}
    class_ok: dict[str, str | None] = {}
    for k, (iid, enc, cid, attr) in enumerate(zip(df.ImageId, df.EncodedPixels, df.ClassId,
                                                   attr_cells)):
        row = k + 2
        iid = iid.strip()
        if iid not in expected:
            add(row, f"ImageId {iid!r} is not in sample_submission.csv")
            continue
        seen.add(iid)
        rows_of[iid].append(row)
        if not enc.strip():
            empties[iid] = row
            continue
        if layout == 2020:
            if "_" in cid:
                add(row, f"ClassId {cid!r}: a 2020 ClassId is the category alone (attributes go "
                    "in AttributesIds)")
                continue
            msg = attributes_cell_problem(attr, labels)
            if msg:
                add(row, msg)
        if cid not in class_ok:
            try:
                parse_class_id(cid, labels)
                class_ok[cid] = None
            except KitError as e:
                class_ok[cid] = e.reason
        if class_ok[cid] is not None:
            add(row, f"ClassId {cid!r}: {class_ok[cid]}")
        h, w = (512, 512) if mask_size == "512" else sizes.get(iid, (0, 0))
        if not h:
            add(row, f"no size known for image {iid!r}")
            continue
        try:
            s, lengths = rle_mod.parse_runs(enc, h, w)
        except KitError as e:
            add(row, f"EncodedPixels: {e.reason}")
            continue
        runs_by[iid, cid].append((row, s, s + lengths))
    for iid, row in empties.items():
        if len(rows_of[iid]) > 1:
            add(row, f"empty EncodedPixels for {iid!r}, which has other rows")
    for (iid, cid), items in runs_by.items():
        if len(items) < 2:
            continue
        rows = np.concatenate([np.full(s.size, r) for r, s, _ in items])
        st = np.concatenate([s for _, s, _ in items])
        en = np.concatenate([e for _, _, e in items])
        o = np.argsort(st, kind="stable")
        st, en, rows = st[o], en[o], rows[o]
        reach = np.maximum.accumulate(en)
        clash = np.flatnonzero(st[1:] < reach[:-1])
        if clash.size:
            j = int(clash[0]) + 1
            other = int(rows[:j][np.argmax(en[:j] > st[j])])
            add(int(rows[j]), f"mask overlaps row {other}'s mask of the same ClassId {cid!r} "
                f"in {iid!r}")
    missing = [i for i in image_ids if i not in seen]
    if missing:
        add(None, f"{len(missing)} test image(s) missing, e.g. {missing[:3]}")
    return problems


def attributes_cell_problem(text: str, labels: Labels) -> str | None:
    """What is wrong with a 2020 ``AttributesIds`` cell (``None``: nothing): ids joined by
    ``,`` with no spaces, ascending, each once, each in the label file."""
    t = text.strip()
    if not t:
        return None
    if not re.fullmatch(r"[0-9]+(,[0-9]+)*", t):
        bad = sorted(set(re.sub(r"[0-9,]", "", t))) or [","]
        return (f"AttributesIds {t[:60]!r}: attribute ids must be ASCII digits joined by ',' "
                f"alone (found {''.join(bad)[:20]!r})")
    if any(len(x) > fields.MAX_DIGITS for x in t.split(",")):
        return f"AttributesIds {t[:60]!r}: an attribute id of more than {fields.MAX_DIGITS} digits"
    ids = [int(x) for x in t.split(",")]
    unknown = [a for a in ids if a not in labels.attribute_ids]
    if unknown:
        return f"AttributesIds {t!r}: unknown attribute id {unknown[0]}"
    dup = sorted({a for a in ids if ids.count(a) > 1})
    if dup:
        return f"AttributesIds {t!r}: attribute id {dup[0]} repeated"
    if ids != sorted(ids):
        return f"AttributesIds {t!r}: attribute ids must be in ascending order"
    return None


def csv_instances(path: str | Path, sizes: dict[str, tuple[int, int]], *,
                  use_attributes: bool = True, with_scores: bool = False,
                  by_category: bool = False) -> dict:
    """A submission (2019 or 2020 layout) or a ``train.csv``-layout truth file as
    ``image_key → [metric.Instance]``; rows with empty ``EncodedPixels`` contribute nothing.
    A submission has no scores: row order stands in for them (earlier = higher).
    ``by_category``: the key is the category alone and ``attributes`` holds the instance's
    attributes (from ``AttributesIds``, or from a 2019 ``ClassId``): the 2020 score's input."""
    from imat_kit.data.labels import parse_attributes_ids
    from imat_kit.eval.metric import Instance, class_key

    file = str(path)
    df = read_csv(path, what="submission or solution", required=HEADER, rows_required=False)
    out: dict[str, list] = defaultdict(list)
    own_sizes = "Height" in df.columns and "Width" in df.columns
    attr_cells = df.AttributesIds if "AttributesIds" in df.columns else [None] * len(df)
    for k, (iid, enc, cid, at) in enumerate(zip(df.ImageId, df.EncodedPixels, df.ClassId,
                                                attr_cells)):
        iid = iid.strip()
        out.setdefault(iid, [])
        if not enc.strip():
            continue
        if own_sizes:
            hs, ws = df.Height.iat[k].strip(), df.Width.iat[k].strip()
            h, w = (fields.int_or_none(x, 1, fields.MAX_SIDE) for x in (hs, ws))
            if h is None or w is None:
                raise KitError(f"Height/Width must be integers within 1..{fields.MAX_SIDE} "
                               "(ASCII digits)", file=file, row=k + 2, value=f"{hs}x{ws}")
        elif iid in sizes:
            h, w = sizes[iid]
        else:
            raise KitError("ImageId is not a test image (not in sample_submission.csv / "
                           "test.json)", file=file, row=k + 2, value=iid)
        try:
            cat, attrs = parse_class_id(cid)
            if at is not None:
                attrs = tuple(sorted(set(attrs) | set(parse_attributes_ids(at))))
            rle = rle_mod.kaggle_to_coco(enc, h, w)
        except KitError as e:
            raise e.located(file, k + 2) from None
        score = 1.0 - k / max(len(df), 1) if with_scores else 1.0
        if by_category:
            out[iid].append(Instance(cat, rle, score, attrs))
        else:
            out[iid].append(Instance(class_key(cat, attrs, use_attributes), rle, score))
    return dict(out)


def submit(predictions: str | Path, data: str | Path, out: str | Path,
           post: PostProcess | None = None, *, mask_size: str = "original",
           attributes: bool = False, evaluation: str | Path | None = None,
           attribute_thresholds: str | Path | None = None, manifest: dict | None = None,
           quiet: bool = False, postprocess: str | Path | None = None,
           overrides: dict | None = None) -> tuple[dict, list[Problem]]:
    """The ``imat-kit submit`` step: a predictions file (test split) → the submission CSV and
    its manifest, validated before they take their names; the layout (2019 or 2020) follows
    the data's ``sample_submission.csv``. ``evaluation`` (the ``evaluation.csv`` of ``imat-kit
    evaluate``) puts the fold table into the manifest. The settings applied are ``post``, else
    those of ``postprocess`` (a file of ``imat-kit tune``), else the defaults; ``overrides``
    (``PostProcess`` fields, e.g. the command line's ``--score-thr``) replace their values and
    ``attribute_thresholds`` (a file of ``imat-kit tune-attributes``) their attribute decoding.
    The manifest records every value applied and each file's SHA-256.

    The CSV is written under a temporary name beside ``out`` and validated; only a valid one
    is renamed onto ``out`` (and its manifest onto ``out``'s ``.json``). One that fails is
    kept as ``NAME.invalid.csv`` (manifest ``NAME.invalid.json``) and ``out`` is left as it
    was. Returns the manifest (``submission`` is the name the CSV has now) and the problems
    validation found (none for predictions that passed the reader's checks)."""
    from imat_kit.data.paths import find_labels, sample_image_ids, test_image_sizes
    from imat_kit.data.readers import read_csv
    from imat_kit.files import file_fingerprint
    from imat_kit.postprocess import load_postprocess, load_thresholds, sha256_of
    from imat_kit.predictions import Expected, read_header, read_predictions

    check_mask_size(mask_size)
    out = Path(out)
    head = read_header(predictions)
    if head.get("split") not in (None, "test"):
        raise KitError(f"a submission is made from test predictions, not {head['split']!r} "
                       "ones (imat-kit predict --split test)", file=str(predictions), row=1)
    labels = find_labels(data)
    ids = sample_image_ids(data)
    layout = submission_layout(data)
    if layout == 2020 and attributes:
        raise KitError("--attributes writes attributes into ClassId, the 2019 layout's way; a "
                       "2020 submission always writes them in AttributesIds (drop the flag)",
                       file=str(Path(data) / "sample_submission.csv"))
    sizes = test_image_sizes(data, quiet=quiet)
    _, preds = read_predictions(predictions, Expected.of(
        labels, {k: sizes[k] for k in ids if k in sizes}, "the test set (sample_submission.csv)"))
    post_info = None
    if postprocess is not None:
        tuned, content = load_postprocess(postprocess, labels)
        if attributes:
            raise KitError("the postprocess file was tuned with ClassId as the category: give "
                           "it without --attributes", file=str(postprocess))
        post = post or tuned
        post_info = {"file": str(postprocess), "sha256": sha256_of(postprocess),
                     "settings": tuned.values(), "metric": content.get("metric"),
                     "folds": content.get("folds"), "nested": content.get("nested"),
                     "scores": content.get("scores")}
    post = replace(post or PostProcess(), **(overrides or {}))
    if attribute_thresholds is not None:
        post = replace(post, attributes=AttributeDecoder(
            thresholds=load_thresholds(attribute_thresholds, labels)))
    if post.mask_thr is not None and not head.get("soft_size"):
        raise KitError(f"the postprocess file rebuilds masks from soft masks (mask_thr "
                       f"{post.mask_thr}), but these predictions store none (predict "
                       "--soft-size)", file=str(predictions), row=1)
    preds = post.attributes.apply(preds)
    if post.rescore is not None:  # the learned scores order, cut and cap the rows
        preds = post.rescore.apply(preds)
    extra = {"predictions": str(predictions), "source": head, "postprocess": post_info,
             "attribute_thresholds": None if attribute_thresholds is None else {
                 "file": str(attribute_thresholds),
                 "sha256": file_fingerprint(attribute_thresholds)["sha256"]},
             **(manifest or {})}
    if evaluation is not None:  # the fold table of `imat-kit evaluate`
        table = read_csv(evaluation, what="evaluation table", required=["fold"])
        extra["fold_scores"] = [{k: _number(v) for k, v in r.items()}
                                for r in table.to_dict(orient="records")]
    stage = out.with_name(f".{out.stem}.unvalidated{out.suffix}")
    try:
        man = write_submission(preds, ids, stage, post, mask_size=mask_size,
                               attributes=attributes, quiet=quiet, manifest=extra,
                               layout=layout, name=out.name)
        problems = validate_submission(stage, ids, sizes, labels, mask_size=mask_size)
        final = out if not problems else out.with_name(f"{out.stem}.invalid{out.suffix}")
        if problems:
            man["submission"] = final.name
            man["validation_problems"] = len(problems)
            with atomic_open(stage.with_suffix(".json"), "w") as f:
                json.dump(man, f, indent=2, default=str)
        stage.with_suffix(".json").replace(final.with_suffix(".json"))
        stage.replace(final)
    finally:
        for p in (stage, stage.with_suffix(".json")):
            p.unlink(missing_ok=True)
    return man, problems


def _number(text: str) -> object:
    """A table cell as a number where it is one (``"0.6"`` → 0.6), else the text."""
    try:
        v = float(text)
    except ValueError:
        return text
    if not math.isfinite(v):  # 'nan', 'inf': kept as text (the manifest is strict JSON)
        return text
    t = text.strip().lstrip("-")
    return int(v) if v.is_integer() and fields.is_digits(t) else v


@dataclass(frozen=True)
class SubmissionScore:
    """A submission's competition score, the units it averages over (images, or (image,
    class) pairs, or classes) and its value at each threshold (or threshold pair)."""

    score: float
    count: int
    per_threshold: np.ndarray


def score_submission(submission: str | Path, solution: str | Path, data: str | Path, *,
                     average: str = "image", attributes: bool = False, year: int = 2019,
                     sweep: str = "grid", f1: str = "binary_macro", fn: str = "ignore",
                     quiet: bool = False) -> SubmissionScore:
    """The ``imat-kit score`` step: the competition score of a submission against a solution
    in ``train.csv`` layout. Every ImageId of the submission must be in the solution.
    ``year=2020``: the 2020 rule (:func:`attr_metric.competition_score_2020`, with its
    ``sweep``, ``f1`` and ``fn`` options: by default TP / (TP + FP), the published formula);
    either layout of submission is read. The 2019 score counts false negatives."""
    from imat_kit.data.paths import find_labels, test_image_sizes
    from imat_kit.eval.metric import competition_score

    if year not in (2019, 2020):
        raise KitError("year must be 2019 or 2020", value=year)
    sizes = test_image_sizes(data, quiet=quiet)
    by_cat = year == 2020
    truth = csv_instances(solution, sizes, use_attributes=attributes, by_category=by_cat)
    sub = csv_instances(submission, sizes, use_attributes=attributes, with_scores=True,
                        by_category=by_cat)
    stray = [k for k in sub if k not in truth]
    if stray:
        from imat_kit.data.readers import read_csv

        ids = [s.strip() for s in read_csv(submission, what="submission",
                                           rows_required=False)["ImageId"]]
        raise KitError(f"ImageId not in the solution {solution} ({len(stray)} such image(s))",
                       file=str(submission), row=ids.index(stray[0]) + 2, value=stray[0])
    if year == 2020:
        from imat_kit.eval.attr_metric import competition_score_2020

        r = competition_score_2020(truth, sub, average=average, sweep=sweep, f1=f1, fn=fn,
                                   attribute_ids=find_labels(data).attribute_id_list)
    else:
        r = competition_score(truth, sub, average=average)
    return SubmissionScore(score=r["score"], count=r["count"],
                           per_threshold=r["per_threshold"])
