"""Writing and reading predictions files: the header, the writer, and the reader that checks
every line (:mod:`imat_kit.predictions.checks`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from imat_kit import fields
from imat_kit.errors import KitError
from imat_kit.files import atomic_open
from imat_kit.predictions.checks import (
    CHECK_CHUNK,
    Expected,
    FlatAttributes,
    LineProblem,
    chunk_problems,
    image_problem,
    parse_line_fields,
    short_value,
)
from imat_kit.predictions.instances import FORMAT, VERSION, ImagePrediction


def header(**meta) -> str:
    """The header line (without its newline) of a predictions file."""
    return json.dumps({"format": FORMAT, "version": VERSION, **meta})


class PredictionsWriter:
    """Writes a predictions file atomically: the header on entering, one line per
    :meth:`write`, renamed onto ``path`` only when the block ends without an error::

        with PredictionsWriter(path, {"split": "test"}) as w:
            for p in preds:
                w.write(p)
    """

    def __init__(self, path: str | Path, meta: dict) -> None:
        self.path, self.meta, self.count = Path(path), dict(meta), 0
        self._ctx = atomic_open(self.path, "w", encoding="utf-8")
        self._f = None

    def __enter__(self) -> PredictionsWriter:
        self._f = self._ctx.__enter__()
        self._f.write(header(**self.meta) + "\n")
        return self

    def write(self, pred: ImagePrediction) -> None:
        self._f.write(pred.to_json() + "\n")
        self.count += 1

    def __exit__(self, *exc) -> bool | None:
        return self._ctx.__exit__(*exc)


def write_predictions(path: str | Path, meta: dict,
                      preds: Iterable[ImagePrediction]) -> int:
    """Write a whole predictions file atomically (header from ``meta``, then one line per
    image); returns the number of images written."""
    with PredictionsWriter(path, meta) as w:
        for p in preds:
            w.write(p)
    return w.count


def read_header(path: str | Path) -> dict:
    file = str(path)
    if not Path(path).is_file():
        raise KitError("predictions file not found", file=file)
    with open(path, "rb") as f:
        first = fields.decode(f.readline(), file=file)
    try:
        h = json.loads(first)
    except (json.JSONDecodeError, RecursionError):
        h = None
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise KitError(f"not an imat-kit predictions file (first line must be a {FORMAT} "
                       "header)", file=file, row=1, value=first.strip()[:60] or None)
    if not isinstance(h.get("version"), int) or not 1 <= h["version"] <= VERSION:
        raise KitError(f"predictions format version {h.get('version')!r} is not one this "
                       f"imat-kit reads (1–{VERSION}); a newer imat-kit wrote it?", file=file,
                       row=1, value=h.get("version"))
    ss = h.get("soft_size")
    if ss is not None and (not fields.is_int(ss) or ss < 0):
        raise KitError("soft_size must be a non-negative integer", file=file, row=1, value=ss)
    return h




def soft_size_of(head: dict) -> int | None:
    """The soft-mask size of a file: its header's ``soft_size``; for an ensemble written
    before ensembles recorded it, the one size all its inputs' headers give."""
    if head.get("soft_size") or not isinstance(head.get("inputs"), list):
        return head.get("soft_size")
    sizes = {i.get("soft_size") if isinstance(i, dict) else None for i in head["inputs"]}
    return sizes.pop() if len(sizes) == 1 else None


def _rows(path: str | Path, expected: Expected | None,
          resumable: bool) -> Iterator[tuple[int, ImagePrediction]]:
    """``(line number, prediction)`` of every image line, each checked (see
    :func:`iter_predictions`). The numeric checks run on chunks of :data:`CHECK_CHUNK` lines,
    each in a helper thread while the next chunk is parsed (the masks' check runs without the
    GIL); a chunk's lines are yielded once it passed, so the first problem in file order is
    the one reported, whatever the timing."""
    from concurrent.futures import ThreadPoolExecutor

    file = str(path)
    soft = soft_size_of(read_header(path))
    pending: list[tuple[int, ImagePrediction, FlatAttributes]] = []
    inflight: list = []  # the chunk being checked: [(future, its items)]

    def refuse(row: int, bad: LineProblem) -> KitError:
        return KitError(bad.text(), file=file, row=row,
                        value=None if bad.value is None else short_value(bad.value))

    def passed(problems: list, chunk: list) -> list[tuple[int, ImagePrediction]]:
        if problems:
            row, _, bad = min(problems, key=lambda t: t[:2])
            raise refuse(row, bad)
        return [(r, p) for r, p, _ in chunk]

    def settle() -> list[tuple[int, ImagePrediction]]:
        """The chunk in flight, once checked (its first problem raised)."""
        if not inflight:
            return []
        future, chunk = inflight.pop()
        return passed(future.result(), chunk)

    def rest() -> list[tuple[int, ImagePrediction]]:
        """Everything read so far, checked: the chunk in flight, then the pending lines."""
        done = settle()
        chunk = list(pending)
        pending.clear()
        return done + passed(chunk_problems(chunk, expected) if chunk else [], chunk)

    with ThreadPoolExecutor(1) as pool, open(path, "rb") as f:
        f.readline()
        for row, raw in enumerate(f, start=2):
            torn = not raw.endswith(b"\n")
            if torn and resumable:
                break  # torn by a kill mid-write: the image is predicted again on resume
            try:
                line = raw.decode("utf-8")
                d = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
                yield from rest()
                if isinstance(e, UnicodeDecodeError):
                    what = "is not valid UTF-8"
                    value = raw[e.start:e.start + 4]
                elif isinstance(e, RecursionError):
                    what, value = "nests arrays/objects too deep to read", None
                else:
                    what = ("is cut off: the file ends mid-line (an interrupted write or "
                            "copy?)" if torn else f"is not JSON ({e.msg}, column {e.colno})")
                    value = line.strip()[:60]
                raise KitError(f"line {what}", file=file, row=row, value=value) from None
            try:
                pred, flat = parse_line_fields(d, soft)
                bad = image_problem(pred, expected)
            except LineProblem as e:
                bad = e
            if bad is not None:
                yield from rest()
                raise refuse(row, bad)
            pending.append((row, pred, flat))
            if len(pending) >= CHECK_CHUNK:
                done = settle()
                chunk = list(pending)
                pending.clear()
                inflight.append((pool.submit(chunk_problems, chunk, expected), chunk))
                yield from done
        yield from rest()


def iter_predictions(path: str | Path, expected: Expected | None = None, *,
                     resumable: bool = False) -> Iterator[ImagePrediction]:
    """The images of a predictions file, in file order, each line checked: the array lengths
    agree; labels are integers (of ``expected``'s label space when given); scores within 0–1;
    boxes finite with non-negative sizes; every mask a valid COCO counts text covering exactly
    ``height × width`` pixels; soft masks of the header's ``soft_size``; attribute ids (of
    the label space) with probabilities within 0–1; and, when ``expected`` knows the split's
    images, ``image_key`` one of them at its size. The first problem raises a
    :class:`KitError` naming the file, the line (1-based, the header is line 1), the field
    and the value. ``resumable`` (predict's own partial files): a torn last line is ignored;
    otherwise it is an error too."""
    for _, p in _rows(path, expected, resumable):
        yield p


def read_predictions(path: str | Path, expected: Expected | None = None, *,
                     require_images: bool = True) -> tuple[dict, dict[str, ImagePrediction]]:
    """Header and ``image_key → prediction``, every line checked (:func:`iter_predictions`);
    an image on two lines is an error (a finished file holds each image once). A file
    without any image line is an error unless ``require_images`` is False."""
    head, preds, rows = read_header(path), {}, {}
    for row, p in _rows(path, expected, False):
        if p.image_key in rows:
            raise KitError(f"image_key is on line {rows[p.image_key]} already (each image "
                           "once: two files joined?)", file=str(path), row=row,
                           value=p.image_key)
        rows[p.image_key] = row
        preds[p.image_key] = p
    if require_images and not preds:
        raise KitError("the predictions file holds no image (only its header)", file=str(path),
                       row=2)
    return head, preds
