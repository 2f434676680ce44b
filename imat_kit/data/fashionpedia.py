"""Fashionpedia's own annotation files → the prepared layout.

Fashionpedia (Jia et al., ECCV 2020) ships COCO-style ``instances_attributes_train2020.json``
and ``instances_attributes_val2020.json``: the same 46 categories and 294 attributes (same ids)
as the 2020 competition, ``attribute_ids`` on every annotation, and segmentations as polygons
(a list of ``[x0, y0, x1, y1, …]`` rings) or as RLE (``{"size": [h, w], "counts": …}``,
compressed text or an uncompressed list). :func:`fashionpedia_to_coco` turns such a file into
the same :class:`~imat_kit.data.coco.CocoData` that ``train.csv`` becomes (compressed RLE masks,
bbox and area from pycocotools, ``attribute_ids`` sorted), so ``imat-kit prepare`` writes the
same files, folds included, from either source.

Every bad annotation is reported with the file, its position in ``annotations`` (1-based), its
id and the value: an unknown image, category or attribute id, a malformed or mis-sized
segmentation. With ``skip_bad_rows`` they are left out and listed instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from imat_kit.data.coco import (
    NO_ANNOTATIONS,
    CocoData,
    Rejection,
    _annotation_json,
    _subset_renumbered,
    image_size,
)
from imat_kit.data.labels import Labels, labels_from_dict
from imat_kit.data.readers import read_json
from imat_kit.errors import KitError
from imat_kit.progress import progress

#: the file names Fashionpedia ships, in the order ``prepare`` looks for them
DEFAULT_FILES = ("instances_attributes_train2020.json",)


def find_fashionpedia(data_dir: str | Path) -> Path | None:
    """The Fashionpedia training file in ``data_dir``, if there is one."""
    for name in DEFAULT_FILES:
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    return None


def _where(i: int, ann: object) -> str:
    aid = ann.get("id") if isinstance(ann, dict) else None
    return f"annotations[{i + 1}] (id {aid})"


def _segmentation_rle(seg: object, h: int, w: int) -> dict:
    """A polygon list or an RLE dict → one compressed COCO RLE at (h, w); ValueError if bad."""
    if isinstance(seg, list):
        if not seg or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                              and all(isinstance(v, (int, float)) for v in p) for p in seg):
            raise ValueError("a polygon segmentation must be a list of rings of at least 3 "
                             "(x, y) points")
        return mask_util.merge(mask_util.frPyObjects(seg, h, w))
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2 and list(map(int, size)) == [h, w]):
            raise ValueError(f"RLE size {size} differs from the image's [{h}, {w}]")
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != h * w:
                raise ValueError(f"uncompressed RLE counts must be non-negative integers "
                                 f"summing to {h}x{w}={h * w}")
            return mask_util.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        if isinstance(counts, str):
            rle = {"size": [h, w], "counts": counts.encode("ascii")}
            if int(mask_util.area(rle)) > h * w:
                raise ValueError("compressed RLE counts run past the image")
            return rle
    raise ValueError("segmentation must be polygons or an RLE dict with 'size' and 'counts'")


def fashionpedia_to_coco(path: str | Path, *, image_dir: str | Path | None = None,
                         size_mismatch: str = "error", skip_bad_rows: bool = False,
                         quiet: bool = False) -> tuple[CocoData, Labels]:
    """Read a Fashionpedia ``instances_attributes_*.json`` into :class:`CocoData` and the
    label set it declares (its ``categories`` and ``attributes``).

    ``image_dir`` (the ``train/`` folder) checks that each image exists and has the declared
    size (``size_mismatch``: ``error`` or ``drop``; polygons cannot be transposed).
    """
    file = str(path)
    if size_mismatch not in ("error", "drop"):
        raise KitError("Fashionpedia files take --size-mismatch error or drop (polygon "
                       "segmentations cannot be transposed)", value=size_mismatch)
    raw = read_json(path, what="Fashionpedia annotation file")
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in
                                           ("images", "annotations", "categories",
                                            "attributes")):
        raise KitError("not a Fashionpedia annotation file (needs the lists 'images', "
                       "'annotations', 'categories' and 'attributes')", file=file)
    labels = labels_from_dict(raw, file)
    images, index, rejected, fixes = [], {}, [], []
    dropped: set[int] = set()
    for i, im in enumerate(raw["images"]):
        ok = (isinstance(im, dict) and isinstance(im.get("id"), int)
              and isinstance(im.get("file_name"), str) and im["file_name"]
              and all(isinstance(im.get(k), int) and im[k] > 0 for k in ("height", "width")))
        if not ok:
            raise KitError(f"images[{i + 1}] needs an integer 'id', a 'file_name' and positive "
                           "integer 'height' and 'width'", file=file, value=im)
        if im["id"] in index:
            raise KitError(f"images[{i + 1}]: duplicate image id", file=file, value=im["id"])
        index[im["id"]] = len(images)
        name = im["file_name"]
        images.append({"id": len(images) + 1, "file_name": name, "height": im["height"],
                       "width": im["width"], "image_key": Path(name).stem})
        if image_dir is not None:
            img_path = Path(image_dir) / name
            try:
                real = image_size(img_path)
            except OSError as e:
                raise KitError(f"images[{i + 1}]: image file {img_path} cannot be read: "
                               f"{getattr(e, 'strerror', None) or e}", file=file,
                               value=name) from None
            if real != (im["height"], im["width"]):
                what = (f"images[{i + 1}]: declared size {im['height']}x{im['width']} (HxW) "
                        f"differs from the image's {real[0]}x{real[1]}")
                if size_mismatch == "error":
                    raise KitError(what, file=file, value=name,
                                   hint="--size-mismatch drop leaves such images out")
                dropped.add(len(images) - 1)
                fixes.append(f"{file}: {what}: image dropped")

    anns, ann_image, ann_category = [], [], []
    for i, ann in enumerate(progress(raw["annotations"], desc="convert annotations",
                                     quiet=quiet, unit="ann")):
        try:
            idx, cat, attrs, rle = _annotation(ann, i, index, images, labels)
        except KitError as e:
            if not skip_bad_rows:
                raise KitError(e.reason, file=file, value=e.value,
                               hint="--skip-bad-rows leaves bad annotations out") from None
            key = ann.get("image_id") if isinstance(ann, dict) else None
            rejected.append(Rejection(file, i + 1, str(key), e.reason + (
                f" (value {e.value!r})" if e.value is not None else "")))
            continue
        if idx in dropped:
            continue
        im = images[idx]
        bbox = mask_util.toBbox(rle)
        counts = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) \
            else rle["counts"]
        anns.append(_annotation_json(len(anns) + 1, idx + 1, cat, im["height"], im["width"],
                                     counts, bbox, int(mask_util.area(rle)), attrs))
        ann_image.append(idx)
        ann_category.append(cat)

    data = CocoData(images=images, categories=list(labels.categories),
                    attributes=list(labels.attributes), annotations=anns,
                    ann_image=np.asarray(ann_image, np.int64),
                    ann_category=np.asarray(ann_category, np.int64),
                    info={"description": "iMaterialist Fashion, converted by imat-kit",
                          "source": Path(file).name, "layout": "fashionpedia"},
                    rejected=rejected, size_fixes=fixes)
    keep = np.zeros(len(images), dtype=bool)
    keep[data.ann_image] = True
    keep[list(dropped)] = False
    for i in np.flatnonzero(~keep).tolist():
        if i not in dropped:
            rejected.append(Rejection(file, i + 1, images[i]["image_key"], NO_ANNOTATIONS))
    if not keep.all():
        data = _subset_renumbered(data, np.flatnonzero(keep))
    return data, labels


def _annotation(ann: object, i: int, index: dict, images: list[dict],
                labels: Labels) -> tuple[int, int, tuple[int, ...], dict]:
    """One annotation checked: (image index, category, sorted attribute ids, RLE)."""
    where = _where(i, ann)
    if not isinstance(ann, dict):
        raise KitError(f"{where}: an annotation must be an object", value=ann)
    idx = index.get(ann.get("image_id"))
    if idx is None:
        raise KitError(f"{where}: unknown image_id", value=ann.get("image_id"))
    cat = ann.get("category_id")
    if not isinstance(cat, int) or cat not in labels.category_ids:
        raise KitError(f"{where}: unknown category_id", value=cat)
    aids = ann.get("attribute_ids", [])
    if not isinstance(aids, list) or not all(isinstance(a, int) for a in aids):
        raise KitError(f"{where}: attribute_ids must be a list of integers", value=aids)
    for a in aids:
        if a not in labels.attribute_ids:
            raise KitError(f"{where}: unknown attribute id {a} (not among the file's "
                           f"{len(labels.attributes)} attributes)", value=a)
    im = images[idx]
    try:
        rle = _segmentation_rle(ann.get("segmentation"), im["height"], im["width"])
    except (ValueError, TypeError) as e:
        raise KitError(f"{where}: {e}", value=str(ann.get("segmentation"))[:60]) from None
    if int(mask_util.area(rle)) == 0:
        raise KitError(f"{where}: the segmentation covers no pixel", value=ann.get("id"))
    return idx, cat, tuple(sorted(set(aids))), rle
