"""Per-image instance predictions on disk: one JSON line per image.

A predictions file (``.jsonl``) starts with a header line, then holds one line per image::

    {"format": "imat-kit-predictions", "version": 2, "split": "val", "fold": 0,
     "config": "...", "checkpoint": "...", "soft_size": 28, "tta": "flip",
     "attribute_floor": 0.05}
    {"image_key": "a1b2….jpg", "height": 683, "width": 1024,
     "labels": [31, 6], "scores": [0.97, 0.88], "bboxes": [[x, y, w, h], …],
     "masks": ["<COCO compressed counts>", …], "soft": "<base64 N×S×S uint8>",
     "attr_probs": [[], [[115, 0.93], [136, 0.41]]]}

``labels`` are competition category ids; ``masks`` are COCO RLE counts text at the image's
original size (``size`` is ``[height, width]``); ``soft`` (optional) holds each instance's mask
probabilities (0–255) inside its box resampled to S×S, for ensembling; ``attr_probs``
(version 2, attribute models only) holds each instance's attribute probabilities, sparse:
``[attribute id, probability]`` pairs of the attributes at or above the file's
``attribute_floor``, by id. ``attributes`` are hard attribute sets: written by hand-made files
and read from version-1 files; for a file with ``attr_probs`` they are those at or above
:data:`ATTRIBUTE_THRESHOLD`. Version-1 files (no ``attr_probs``) are read as before.

Every reader checks every line (:func:`iter_predictions`): a corrupt file is refused with the
file, the line, the field and the value, never scored, fused or submitted. A finished file
holds each image once. ``imat-kit predict`` appends to ``OUT.partial`` while it runs (a killed
run keeps every finished image, a torn last line is dropped, a resumed run's later line of an
image wins) and writes the finished file, each image once in the split's order, at the end.
A header may record ``label_space`` (the category and attribute ids of the data the
predictions were made for; ``predict`` and ``ensemble`` write it), which ``ensemble`` checks
the labels against when it is not given ``--data``.

The package: :mod:`.instances` (:class:`ImagePrediction` and the format's constants),
:mod:`.checks` (every line's checks, :class:`Expected`), :mod:`.reader` (the header, the writer,
the checking reader). Its names are importable from the package itself.
"""

from imat_kit.predictions.checks import CHECK_CHUNK, Expected, parse_line
from imat_kit.predictions.instances import (
    ATTRIBUTE_FLOOR,
    ATTRIBUTE_THRESHOLD,
    FORMAT,
    INSTANCE_FIELDS,
    VERSION,
    ImagePrediction,
    attribute_sets,
    empty_prediction,
    label_space,
    sparse_probs,
)
from imat_kit.predictions.reader import (
    PredictionsWriter,
    header,
    iter_predictions,
    read_header,
    read_predictions,
    soft_size_of,
    write_predictions,
)

__all__ = ["ATTRIBUTE_FLOOR", "ATTRIBUTE_THRESHOLD", "CHECK_CHUNK", "FORMAT", "INSTANCE_FIELDS",
           "VERSION", "Expected", "ImagePrediction", "PredictionsWriter", "attribute_sets",
           "empty_prediction", "header", "iter_predictions", "label_space", "parse_line",
           "read_header", "read_predictions", "soft_size_of", "sparse_probs", "write_predictions"]
