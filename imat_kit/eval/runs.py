"""A fold's validation run: its predictions file, header, predictions and the fold's truth,
read and checked once, with the fold's training annotations loaded when first needed (the
per-category attribute prior is learnt from them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from imat_kit.data.paths import ann_relpath, find_labels, read_ann
from imat_kit.errors import KitError
from imat_kit.fields import is_int
from imat_kit.predictions import Expected, read_header, read_predictions


@dataclass
class FoldRun:
    """One fold's validation predictions (``preds``: ``image_key → ImagePrediction``) with
    their file, header, fold, truth (``gt``, COCO dict) and the prepared data folder the truth
    came from (``data``; ``None`` for a run built in memory: then ``train_gt`` must be given
    for the attribute prior)."""

    file: str
    fold: int
    head: dict
    preds: dict
    gt: dict
    data: Path | None = None
    _train_gt: dict | None = field(default=None, repr=False)

    @property
    def train_gt(self) -> dict | None:
        """The fold's training annotations (read from ``data`` once), or ``None`` when the run
        has neither them nor a data folder."""
        if self._train_gt is None and self.data is not None:
            self._train_gt = read_ann(self.data, "train", self.fold)
        return self._train_gt

    def read_train_gt(self) -> dict | None:
        """The fold's training annotations without keeping them: those given, else read from
        ``data`` afresh (the annotations of real data take gigabytes; a caller that only
        reduces them lets them go), ``None`` without either."""
        if self._train_gt is not None:
            return self._train_gt
        return read_ann(self.data, "train", self.fold) if self.data is not None else None

    @property
    def attributes(self) -> bool:
        """Whether the predictions speak of attributes: an instance carries some, or the
        header says an attribute model made them (one that detected nothing carries none)."""
        return bool(self.head.get("attribute_model")) or any(
            p.attr_probs or p.attributes for p in self.preds.values())

    def with_preds(self, preds: dict) -> FoldRun:
        """The same run with other predictions (e.g. attribute sets cut by thresholds); the
        training annotations, once read, are shared."""
        return replace(self, preds=preds)


def as_run(run: FoldRun | Mapping) -> FoldRun:
    """A :class:`FoldRun`, or a mapping with its fields (``file``, ``fold``, ``head``,
    ``preds``, ``gt``, optionally ``data``, ``train_gt``) as one."""
    if isinstance(run, FoldRun):
        return run
    return FoldRun(str(run.get("file", "")), int(run.get("fold", 0)), dict(run.get("head") or {}),
                   run["preds"], run["gt"], run.get("data"), run.get("train_gt"))


def read_fold_runs(data: str | Path, files: list[str]) -> list[FoldRun]:
    """Each validation predictions file with its header, predictions, fold and ground truth,
    sorted by fold: what the fold table, the tuners and the report are computed from, read
    once."""
    if not files:
        raise KitError("no predictions file to evaluate")
    runs = []
    labels = find_labels(data)
    for f in files:
        head = read_header(f)
        fold = head.get("fold")
        if head.get("split") != "val" or not is_int(fold) or fold < 0:
            raise KitError("evaluate needs validation predictions of one fold (imat-kit "
                           "predict --split val --fold k)", file=f, row=1)
        if not (Path(data) / ann_relpath("val", fold)).exists():
            have = sorted(int(p.name[4:-9]) for p in (Path(data) / "annotations").glob(
                "fold*_val.json") if p.name[4:-9].isdigit())
            raise KitError(f"the header names fold {fold}, which the preparation in {data} "
                           f"does not have (its folds: {', '.join(map(str, have)) or 'none'})",
                           file=f, row=1, value=fold)
        gt = read_ann(data, "val", fold)
        _, preds = read_predictions(f, Expected.of_split(labels, gt, fold))
        runs.append(FoldRun(str(f), int(fold), head, preds, gt, Path(data)))
    return sorted(runs, key=lambda r: r.fold)
