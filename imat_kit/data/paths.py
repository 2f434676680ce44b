"""Where things are: the competition files and the prepared-data layout.

The competition folder (``--data``) holds ``train.csv``, ``train/``, ``test/``,
``sample_submission.csv`` and optionally ``label_descriptions.json``; ``imat-kit prepare``
writes beside them (or into ``--out``)::

    annotations/all.json                 every training image and instance
    annotations/fold{k}_train.json       images of the other folds
    annotations/fold{k}_val.json         images of fold k
    annotations/test.json                the test images (no annotations)
    folds.csv                            ImageId,fold: the single truth for the splits
"""

from __future__ import annotations

from pathlib import Path

from imat_kit import fields
from imat_kit.data.coco import image_file_name, image_size
from imat_kit.data.labels import Labels, load_labels
from imat_kit.data.readers import read_csv, read_json
from imat_kit.errors import KitError
from imat_kit.progress import progress

ANN_SPLITS = ("train", "val", "all", "test")


def ann_relpath(split: str, fold: int = 0) -> str:
    """Where ``prepare`` writes a split's COCO file, relative to its output folder."""
    if split not in ANN_SPLITS:
        raise KitError(f"split must be one of {', '.join(ANN_SPLITS)}", value=split)
    if split in ("all", "test"):
        return f"annotations/{split}.json"
    return f"annotations/fold{int(fold)}_{split}.json"


def image_dir(data_dir: Path, split: str) -> Path:
    """The image folder of a split: ``test/`` for the test set, ``train/`` for the rest."""
    return Path(data_dir) / ("test" if split == "test" else "train")


def read_ann(data_dir: str | Path, split: str, fold: int = 0) -> dict:
    """A prepared COCO file, with a clear error when ``prepare`` has not written it."""
    path = Path(data_dir) / ann_relpath(split, fold)
    if not path.exists():
        raise KitError(f"{path} does not exist: run `imat-kit prepare` first", file=str(path))
    coco = read_json(path, what="annotation file")
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise KitError("not a COCO annotation file (no 'images' list)", file=str(path))
    return coco


def find_labels(data_dir: str | Path) -> Labels:
    """``DATA/label_descriptions.json`` when present, else the shipped 2019 set."""
    path = Path(data_dir) / "label_descriptions.json"
    return load_labels(path if path.exists() else None)


def sample_image_ids(data_dir: str | Path) -> list[str]:
    """The test ImageIds of ``sample_submission.csv``, in its order, each once."""
    path = Path(data_dir) / "sample_submission.csv"
    df = read_csv(path, what="sample submission", required=["ImageId"])
    cells = [s.strip() for s in df["ImageId"]]
    for i, s in enumerate(cells):
        if not s:
            raise KitError("empty ImageId", file=str(path), row=i + 2)
        fields.text_field(s, what="ImageId", file=str(path), row=i + 2)
    return list(dict.fromkeys(cells))


def test_images(data_dir: str | Path, *, quiet: bool = False) -> list[dict]:
    """COCO image entries of the test set: ``sample_submission.csv`` order, sizes read from
    the JPEG headers of ``DATA/test/``."""
    data_dir = Path(data_dir)
    file = str(data_dir / "sample_submission.csv")
    out = []
    for i, image_id in enumerate(progress(sample_image_ids(data_dir), desc="test image sizes",
                                          quiet=quiet, unit="img")):
        name = image_file_name(image_id)
        try:
            h, w = image_size(data_dir / "test" / name)
        except OSError as e:
            raise KitError(f"test image {data_dir / 'test' / name} cannot be read: "
                           f"{getattr(e, 'strerror', None) or e}", file=file, row=i + 2,
                           value=image_id) from None
        out.append({"id": len(out) + 1, "file_name": name, "height": h, "width": w,
                    "image_key": image_id})
    return out


def test_image_sizes(data_dir: str | Path, *, quiet: bool = False) -> dict[str, tuple[int, int]]:
    """ImageId → (height, width) of the test images: from ``test.json`` when prepared, else
    from the JPEG headers."""
    data_dir = Path(data_dir)
    path = data_dir / ann_relpath("test")
    images = (read_ann(data_dir, "test")["images"] if path.exists()
              else test_images(data_dir, quiet=quiet))
    return {im["image_key"]: (im["height"], im["width"]) for im in images}
