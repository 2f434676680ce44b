"""``train.csv`` (2019 or 2020 layout) → one COCO instance-segmentation json, streaming.

Each CSV row becomes an annotation whose ``segmentation`` is a compressed COCO RLE made from
the Kaggle runs by arithmetic (the H×W mask is never built, except for the rare image whose
size policy says *transpose*). ``bbox``/``area`` come from pycocotools on that RLE. Rows are
read in chunks, so memory holds the output, not the CSV.

Every bad row is reported with the file and its 1-based row number (the header is row 1);
by default any bad row fails the conversion, with ``skip_bad_rows`` they are left out and
listed in the report. Image sizes are checked against the JPEG headers (the pixels are never
read); a CSV size that disagrees with the image is handled by an explicit policy:

* ``error`` (default): fail, naming the image, row and both sizes;
* ``transpose``: when the CSV size is the image size swapped (a known defect of the 2019 data),
  decode each mask at the CSV size, transpose it and re-encode at the image size; any other
  mismatch still fails;
* ``drop``: leave the image and all its rows out.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pycocotools import mask as mask_util

from imat_kit import fields
from imat_kit.data import rle as rle_mod
from imat_kit.data import rle_batch
from imat_kit.data.labels import Labels, load_labels, parse_attributes_ids, parse_class_id
from imat_kit.data.readers import csv_columns, iter_csv
from imat_kit.errors import KitError
from imat_kit.files import atomic_open
from imat_kit.progress import default_workers, progress

COLUMNS_2019 = ("ImageId", "EncodedPixels", "Height", "Width", "ClassId")
COLUMNS_2020 = (*COLUMNS_2019, "AttributesIds")
SIZE_POLICIES = ("error", "transpose", "drop")
NO_ANNOTATIONS = "image left without annotations"


def detect_layout(columns: list[str] | tuple[str, ...], file: str = "train.csv") -> int:
    """2019 (attributes inside ``ClassId``) or 2020 (a separate ``AttributesIds`` column)."""
    cols = [c.strip() for c in columns]
    missing = [c for c in COLUMNS_2019 if c not in cols]
    if missing:
        raise KitError(f"header lacks column(s) {', '.join(missing)}; expected "
                       f"{','.join(COLUMNS_2019)}[,AttributesIds]", file=file, row=1,
                       value=",".join(cols))
    return 2020 if "AttributesIds" in cols else 2019


def image_file_name(image_id: str) -> str:
    """The file of an ``ImageId`` in ``train/``: 2019 ids carry ``.jpg``, 2020 ids do not."""
    return image_id if Path(image_id).suffix else f"{image_id}.jpg"


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the image header only (PIL opens lazily; pixels are not read)."""
    with Image.open(path) as im:
        w, h = im.size
    return h, w


@dataclass
class Rejection:
    """One row (or image) left out, with where and why."""

    file: str
    row: int
    image_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.image_id}: {self.reason}"


@dataclass
class CocoData:
    """A converted dataset: COCO dicts, with each annotation pre-serialised once.

    ``annotations`` holds compact JSON text per annotation, ``ann_image`` the 0-based index
    into ``images`` of its image and ``ann_category`` its category id, so subsets (folds) are
    written without serialising again.
    """

    images: list[dict]
    categories: list[dict]
    attributes: list[dict]
    annotations: list[str]
    ann_image: np.ndarray
    ann_category: np.ndarray
    info: dict = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    size_fixes: list[str] = field(default_factory=list)

    def to_dict(self, image_index: np.ndarray | None = None) -> dict:
        """The COCO json as a Python dict (optionally only some images)."""
        return json.loads(self.to_json(image_index))

    def to_json(self, image_index: np.ndarray | None = None) -> str:
        return "".join(self._json_parts(image_index))

    def _json_parts(self, image_index: np.ndarray | None) -> Iterator[str]:
        if image_index is None:
            imgs, anns = self.images, self.annotations
        else:
            sel = np.zeros(len(self.images), dtype=bool)
            sel[np.asarray(image_index, dtype=np.int64)] = True
            imgs = [im for im, s in zip(self.images, sel) if s]
            anns = [self.annotations[i] for i in np.flatnonzero(sel[self.ann_image])]
        dump = json.dumps
        yield '{"info":' + dump(self.info) + ',"categories":' + dump(self.categories)
        yield ',"attributes":' + dump(self.attributes) + ',"images":'
        yield dump(imgs, separators=(",", ":"))
        yield ',"annotations":['
        yield ",".join(anns)
        yield "]}\n"

    def write(self, path: str | Path, image_index: np.ndarray | None = None) -> None:
        """Write the json (or the subset of ``image_index``) atomically."""
        with atomic_open(path, "w", encoding="utf-8") as f:
            for part in self._json_parts(image_index):
                f.write(part)


def _locate(e: KitError, file: str, row: int) -> KitError:
    return e.located(file, row)


class _ClassCache:
    """``ClassId`` (and ``AttributesIds``) text → (category, attributes), parsed once per text."""

    def __init__(self, labels: Labels, file: str) -> None:
        self.labels, self.file, self.cache = labels, file, {}

    def __call__(self, class_text: str, attr_text: object, row: int) -> tuple[int, tuple[int, ...]]:
        key = (class_text, attr_text)
        hit = self.cache.get(key)
        if hit is None:
            try:
                cat, attrs = parse_class_id(class_text, self.labels)
                if attr_text is not None:
                    if attrs:
                        raise KitError("a 2020-layout ClassId must not carry attributes",
                                       value=class_text)
                    attrs = parse_attributes_ids(attr_text, self.labels)
            except KitError as e:
                raise _locate(e, self.file, row) from None
            hit = self.cache[key] = (cat, attrs)
        return hit


def _positive_int(text: str) -> int | None:
    """An image side: ASCII digits, 1…:data:`fields.MAX_SIDE`."""
    return fields.int_or_none(text, 1, fields.MAX_SIDE)


def csv_to_coco(csv_path: str | Path, *, labels: Labels | None = None,
                image_dir: str | Path | None = None, size_mismatch: str = "error",
                skip_bad_rows: bool = False, chunksize: int = 20_000,
                workers: int | None = None, quiet: bool = False) -> CocoData:
    """Convert a competition ``train.csv`` to :class:`CocoData`.

    ``image_dir`` is the folder of the images (``train/``); ``None`` skips the existence and
    size checks (the caller must have asked for that explicitly). ``labels`` defaults to the
    shipped 2019 set. Raises :class:`KitError` for an unreadable header, a missing or
    mis-sized image (per ``size_mismatch``), and the first bad row unless ``skip_bad_rows``
    (then every bad row is left out and listed in ``rejected``). ``workers`` processes do the
    run arithmetic (default: up to 2; 0 or 1 = in this process); the result is the same.
    """
    if size_mismatch not in SIZE_POLICIES:
        raise KitError(f"size_mismatch must be one of {', '.join(SIZE_POLICIES)}",
                       value=size_mismatch)
    labels = labels or load_labels()
    file = str(csv_path)
    year = detect_layout(csv_columns(csv_path, what="train.csv"), file)
    conv = _Converter(file, labels, year, image_dir, size_mismatch, skip_bad_rows)
    reader = iter_csv(csv_path, usecols=COLUMNS_2020 if year == 2020 else COLUMNS_2019,
                      chunksize=chunksize, what="train.csv")
    workers = default_workers() if workers is None else workers
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    bar = progress(reader, desc="convert train.csv", quiet=quiet, unit="chunk")
    pending: deque = deque()
    try:
        # the run arithmetic of chunk i runs in a worker while chunk i+1 is read
        for chunk in bar:
            if not len(chunk):
                continue
            rows = conv.start_chunk(chunk)
            args = (rows.texts, rows.h, rows.w)
            pending.append((rows, pool.submit(_chunk_runs, *args) if pool else _chunk_runs(*args)))
            while len(pending) > max(workers, 1) - (pool is None):
                done, res = pending.popleft()
                conv.finish_chunk(done, res.result() if pool else res)
        while pending:
            done, res = pending.popleft()
            conv.finish_chunk(done, res.result() if pool else res)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if conv.next_row == 2:
        raise KitError("train.csv has a header but no rows", file=file, row=2)
    return conv.result()


def _chunk_runs(texts: list[str], h: np.ndarray, w: np.ndarray) -> tuple:
    """The numeric part of a chunk (picklable, runs in a worker): parse and validate every
    RLE text, then COCO counts text, bbox and area of each (those of a bad text are of an
    empty mask and are not used)."""
    batch = rle_batch.parse_runs_batch(texts, h, w)
    counts, coff = rle_batch.counts_batch(batch, h * w)
    strings = rle_batch.coco_strings_batch(counts, coff)
    bbox, area = rle_batch.bbox_area_batch(batch, h)
    return batch.bad, strings, bbox, area


@dataclass
class _ChunkRows:
    row0: int
    ids: list[str]
    eps: list[str]
    hs_txt: list[str]
    ws_txt: list[str]
    cls_txt: list[str]
    at_txt: list
    texts: list[str]
    h: np.ndarray  # Height, 1 where the cell is not a positive integer
    w: np.ndarray
    size_bad: np.ndarray  # Height or Width not a positive integer


class _Converter:
    """The state of one conversion; rows arrive chunk by chunk, in file order."""

    def __init__(self, file: str, labels: Labels, year: int, image_dir: str | Path | None,
                 size_mismatch: str, skip_bad_rows: bool) -> None:
        self.file, self.labels, self.year = file, labels, year
        self.image_root = Path(image_dir) if image_dir is not None else None
        self.size_mismatch, self.skip_bad_rows = size_mismatch, skip_bad_rows
        self.classes = _ClassCache(labels, file)
        self.images: list[dict] = []
        self.image_index: dict[str, int] = {}
        self.image_first_row: list[int] = []
        self.dropped: set[int] = set()
        self.transposed: set[int] = set()
        self.annotations: list[str] = []
        self.ann_image: list[np.ndarray] = []
        self.ann_category: list[np.ndarray] = []
        self.rejected: list[Rejection] = []
        self.size_fixes: list[str] = []
        self.next_row = 2  # the header is row 1

    # -- per-image bookkeeping --------------------------------------------------------------
    def _image(self, image_id: str, h: int, w: int, row: int) -> int:
        idx = self.image_index.get(image_id)
        if idx is not None:
            return idx
        idx = self.image_index[image_id] = len(self.images)
        self.images.append({"id": idx + 1, "file_name": image_file_name(image_id),
                            "height": h, "width": w, "image_key": image_id})
        self.image_first_row.append(row)
        if self.image_root is not None:
            self._check_image_file(idx, image_id, h, w, row)
        return idx

    def _check_image_file(self, idx: int, image_id: str, h: int, w: int, row: int) -> None:
        path = self.image_root / self.images[idx]["file_name"]
        try:
            real = image_size(path)
        except FileNotFoundError:
            raise KitError(f"image file {path} does not exist (use --no-image-check to convert "
                           "without images)", file=self.file, row=row, value=image_id) from None
        except OSError as e:
            raise KitError(f"image file {path} cannot be read: {e}", file=self.file, row=row,
                           value=image_id) from None
        if real == (h, w):
            return
        what = f"CSV size {h}x{w} (HxW) differs from the image's {real[0]}x{real[1]}"
        swapped = real == (w, h)
        where = f"{self.file}:{row}: {image_id}: {what}"
        if self.size_mismatch == "drop":
            self.dropped.add(idx)
            self.size_fixes.append(f"{where}: image dropped")
        elif self.size_mismatch == "transpose" and swapped:
            self.transposed.add(idx)
            self.size_fixes.append(f"{where}: masks transposed to the image's size")
        else:
            hint = ("--size-mismatch transpose or drop" if swapped
                    else "--size-mismatch drop (not a pure swap, so transpose cannot fix it)")
            raise KitError(f"{what}; use {hint}", file=self.file, row=row, value=image_id)

    # -- one row, the slow and precise way (bad rows and transposed images) ------------------
    def _row_checked(self, image_id: str, ep: str, hs: str, ws: str, cls: str, attr: object,
                     row: int) -> tuple[int, int, int, int, tuple[int, ...]]:
        """Validate one row; return ``(image index, h, w, category, attributes)``."""
        f = self.file
        if not image_id:
            raise KitError("empty ImageId", file=f, row=row)
        fields.text_field(image_id, what="ImageId", file=f, row=row)
        h, w = _positive_int(hs), _positive_int(ws)
        side = f"(ASCII digits, at most {fields.MAX_SIDE})"
        if h is None:
            raise KitError(f"Height must be a positive integer {side}", file=f, row=row,
                           value=hs)
        if w is None:
            raise KitError(f"Width must be a positive integer {side}", file=f, row=row,
                           value=ws)
        idx = self._image(image_id, h, w, row)
        im = self.images[idx]
        if (h, w) != (im["height"], im["width"]):
            raise KitError(f"Height/Width {h}x{w} differ from row {self.image_first_row[idx]}'s "
                           f"{im['height']}x{im['width']} for the same image", file=f, row=row,
                           value=image_id)
        cat, attrs = self.classes(cls, attr, row)
        if not ep.strip():
            raise KitError("empty EncodedPixels (a training row needs a mask)", file=f, row=row)
        try:
            rle_mod.parse_runs(ep, h, w)
        except KitError as e:
            raise _locate(e, f, row) from None
        return idx, h, w, cat, attrs

    def _reject(self, e: KitError, image_id: str, row: int, nbad: int) -> None:
        if not self.skip_bad_rows:
            more = f" ({nbad - 1} more bad row(s) in this chunk)" if nbad > 1 else ""
            raise KitError(e.reason, file=e.file, row=e.row, value=e.value,
                           hint=f"--skip-bad-rows leaves bad rows out{more}") from None
        shown = f" (value {e.value!r})" if e.value is not None else ""
        self.rejected.append(Rejection(self.file, row, image_id, e.reason + shown))

    # -- a chunk, vectorised ------------------------------------------------------------------
    def start_chunk(self, chunk: pd.DataFrame) -> _ChunkRows:
        """Take the next chunk's cells; the numbers it needs for the run arithmetic."""
        n = len(chunk)
        row0 = self.next_row
        self.next_row += n
        hs_txt, ws_txt = chunk["Height"].tolist(), chunk["Width"].tolist()
        h = np.array([_positive_int(t) or 0 for t in hs_txt], dtype=np.int64)
        w = np.array([_positive_int(t) or 0 for t in ws_txt], dtype=np.int64)
        eps = chunk["EncodedPixels"].tolist()
        return _ChunkRows(
            row0=row0, ids=[s.strip() for s in chunk["ImageId"].tolist()], eps=eps,
            hs_txt=hs_txt, ws_txt=ws_txt, cls_txt=chunk["ClassId"].tolist(),
            at_txt=chunk["AttributesIds"].tolist() if self.year == 2020 else [None] * n,
            texts=[e.strip() for e in eps], h=np.maximum(h, 1), w=np.maximum(w, 1),
            size_bad=(h < 1) | (w < 1))

    def finish_chunk(self, rows: _ChunkRows, runs: tuple) -> None:
        """Row checks, images, classes; then the annotations of the good rows, in order."""
        run_bad, strings, bbox, area = runs
        n, row0, ids = len(rows.ids), rows.row0, rows.ids
        h, w = rows.h, rows.w
        bad = rows.size_bad | np.array([not s or fields.has_control(s) for s in ids], dtype=bool)

        # images: create on first sight (checks the file), then the size must agree
        img = np.full(n, -1, dtype=np.int64)
        for k in np.flatnonzero(~bad).tolist():
            idx = self.image_index.get(ids[k])
            img[k] = idx if idx is not None else self._image(ids[k], int(h[k]), int(w[k]),
                                                             row0 + k)
        ok = img >= 0
        if ok.any():  # (no image yet when every row so far was bad)
            ih = np.array([im["height"] for im in self.images], dtype=np.int64)
            iw = np.array([im["width"] for im in self.images], dtype=np.int64)
            at = np.where(ok, img, 0)
            bad |= ok & ((ih[at] != h) | (iw[at] != w))

        # classes: parse each distinct text once
        cat = np.zeros(n, dtype=np.int64)
        attrs: list[tuple[int, ...]] = [()] * n
        for k in range(n):
            try:
                cat[k], attrs[k] = self.classes(rows.cls_txt[k], rows.at_txt[k], row0 + k)
            except KitError:
                bad[k] = True
        run_ok = np.flatnonzero(~run_bad)  # rows whose runs were computed, in order
        bad |= run_bad
        if bad.any():
            nbad = int(bad.sum())
            for k in np.flatnonzero(bad).tolist():
                try:
                    self._row_checked(ids[k], rows.eps[k], rows.hs_txt[k], rows.ws_txt[k],
                                      rows.cls_txt[k], rows.at_txt[k], row0 + k)
                except KitError as e:
                    self._reject(e, ids[k], row0 + k, nbad)
                else:  # pragma: no cover - the vectorised and the precise checks disagree
                    raise AssertionError(f"row {row0 + k} flagged bad but passes the checks")
        out = self.annotations
        kept = []
        for k in run_ok.tolist():
            i = int(img[k])
            if bad[k] or i in self.dropped:
                continue
            if i in self.transposed:
                hh, ww, counts, bb, ar = self._transposed(rows.eps[k], int(h[k]), int(w[k]))
            else:
                hh, ww, counts, bb, ar = int(h[k]), int(w[k]), strings[k], bbox[k], area[k]
            out.append(_annotation_json(len(out) + 1, i + 1, int(cat[k]), hh, ww, counts,
                                        bb, int(ar), attrs[k]))
            kept.append(k)
        kept_a = np.asarray(kept, dtype=np.int64)
        self.ann_image.append(img[kept_a])
        self.ann_category.append(cat[kept_a])

    @staticmethod
    def _transposed(ep: str, h: int, w: int) -> tuple[int, int, str, list[int], int]:
        m = np.asfortranarray(rle_mod.decode(ep, h, w).T)
        seg = mask_util.encode(m)
        bb = [int(v) for v in mask_util.toBbox(seg)]
        return w, h, seg["counts"].decode("ascii"), bb, int(mask_util.area(seg))

    def result(self) -> CocoData:
        for i in self.transposed:
            im = self.images[i]
            im["height"], im["width"] = im["width"], im["height"]
        ann_image = (np.concatenate(self.ann_image) if self.ann_image
                     else np.zeros(0, dtype=np.int64))
        ann_category = (np.concatenate(self.ann_category) if self.ann_category
                        else np.zeros(0, dtype=np.int64))
        keep = np.ones(len(self.images), dtype=bool)
        keep[list(self.dropped)] = False
        has_ann = np.zeros(len(self.images), dtype=bool)
        has_ann[ann_image] = True
        for i in np.flatnonzero(~has_ann & keep).tolist():
            self.rejected.append(Rejection(self.file, self.image_first_row[i],
                                           self.images[i]["image_key"],
                                           NO_ANNOTATIONS))
        keep &= has_ann
        self.rejected.sort(key=lambda r: r.row)
        data = CocoData(images=self.images, categories=list(self.labels.categories),
                        attributes=list(self.labels.attributes), annotations=self.annotations,
                        ann_image=ann_image, ann_category=ann_category,
                        info={"description": "iMaterialist Fashion, converted by imat-kit",
                              "source": Path(self.file).name, "layout": self.year},
                        rejected=self.rejected, size_fixes=self.size_fixes)
        if not keep.all():
            data = _subset_renumbered(data, np.flatnonzero(keep))
        return data


def _annotation_json(ann_id: int, image_id: int, cat: int, h: int, w: int, counts: str,
                     bbox, area: int, attrs: tuple[int, ...]) -> str:
    """One annotation as compact JSON, formatted directly (counts text may hold a backslash,
    the only character of its alphabet that JSON escapes)."""
    c = counts.replace("\\", "\\\\")
    return (f'{{"id":{ann_id},"image_id":{image_id},"category_id":{cat},'
            f'"segmentation":{{"size":[{h},{w}],"counts":"{c}"}},"area":{area},'
            f'"bbox":[{int(bbox[0])},{int(bbox[1])},{int(bbox[2])},{int(bbox[3])}],'
            f'"iscrowd":0,"attribute_ids":[{",".join(map(str, attrs))}]}}')


def _subset_renumbered(data: CocoData, image_index: np.ndarray) -> CocoData:
    """Only the given images, with image ids renumbered 1..N (annotation ids kept)."""
    new_of_old = np.full(len(data.images), -1, dtype=np.int64)
    new_of_old[image_index] = np.arange(len(image_index))
    images = []
    for new, old in enumerate(image_index.tolist()):
        im = dict(data.images[old])
        im["id"] = new + 1
        images.append(im)
    sel = np.flatnonzero(new_of_old[data.ann_image] >= 0)
    anns = []
    for i in sel.tolist():
        a = json.loads(data.annotations[i])
        a["image_id"] = int(new_of_old[data.ann_image[i]]) + 1
        anns.append(json.dumps(a, separators=(",", ":")))
    return CocoData(images=images, categories=data.categories, attributes=data.attributes,
                    annotations=anns, ann_image=new_of_old[data.ann_image[sel]],
                    ann_category=data.ann_category[sel], info=data.info,
                    rejected=data.rejected, size_fixes=data.size_fixes)
