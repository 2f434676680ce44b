"""What the commands share: the options several of them take (declared once here), argument
parsers, and the terminal's echo."""

from __future__ import annotations

import argparse
import glob
import warnings

from imat_kit.errors import KitError
from imat_kit.eval.metric import AVERAGES, FN_RULES
from imat_kit.submission import MASK_SIZES

#: modules whose import-time deprecation notices are not the user's business
_THIRD_PARTY = r"(mmcv|mmdet|mmengine|mim|torch|pkg_resources|setuptools|albumentations|" \
               r"albucore|pycocotools|matplotlib|openxlab|yapf|numpy|pandas|cv2)(\.|$)"


def quiet_third_party_warnings() -> None:
    """Hide the deprecation warnings that mmcv/mmdet/mmengine and friends raise on import (and
    pkg_resources' notice about itself); warnings of imat-kit itself still show."""
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=_THIRD_PARTY)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API")


def echo(line: str) -> None:
    print(line, flush=True)


def parse_folds(text: str) -> list[int]:
    try:
        folds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be like 0,1,2 (got {text!r})") from None
    if not folds or min(folds) < 0:
        raise argparse.ArgumentTypeError(f"folds must be non-negative (got {text!r})")
    return folds


def quiet_parent() -> argparse.ArgumentParser:
    q = argparse.ArgumentParser(add_help=False)
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return q


def tta_scales(text: str | None) -> list[float] | None:
    """``--tta-scales 0.8,1.0,1.2`` as factors (None when not given)."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise KitError("--tta-scales takes factors like 0.8,1.0,1.2", value=text) from None


def data_option(s, help: str = "the prepared data folder") -> None:
    s.add_argument("--data", required=True, help=help)


def verbose_option(s) -> None:
    s.add_argument("--verbose", "-v", action="store_true",
                   help="show mmengine's whole training output live (by default one progress "
                   "bar per run; the output is in the run's train.log either way)")


def overwrite_option(s, what: str) -> None:
    s.add_argument("--overwrite", action="store_true", help=f"{what} (default: stop and say "
                   "what differs)")


def cfg_options_option(s, example: str) -> None:
    s.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help=f"config overrides, parsed as mim parses them, e.g. {example}")


def fold_inputs(s) -> None:
    """The prepared data and one validation predictions file per fold."""
    data_option(s)
    s.add_argument("--predictions", nargs="+", required=True,
                   help="validation predictions, one file per fold (glob patterns allowed)")


def fold_files(patterns: list[str]) -> list[str]:
    """The files the ``--predictions`` patterns match, sorted; none is an error."""
    files = sorted({f for pat in patterns for f in glob.glob(pat)})
    if not files:
        raise KitError(f"no predictions file matches {' '.join(patterns)}")
    return files


def jobs_option(s, default: int) -> None:
    s.add_argument("--jobs", type=int, default=default, metavar="N",
                   help="without GPUs: N (model, fold) trainings and predictions at once on the "
                   f"CPU, each with its share of the cores (default {default}; on 2 cores 2 "
                   "jobs train the demo's folds about 25%% faster than one after another)")


def mask_size_option(s) -> None:
    s.add_argument("--mask-size", choices=MASK_SIZES, default="original")


def thresholds_option(s) -> None:
    s.add_argument("--attribute-thresholds", default=None, metavar="FILE",
                   help="the per-attribute thresholds of a postprocess file, as `imat-kit "
                   "tune-attributes` writes it (default: a global 0.5)")


def postprocess_option(s, help: str) -> None:
    s.add_argument("--postprocess", default=None, metavar="FILE", help=help)


def average_option(s) -> None:
    s.add_argument("--average", choices=AVERAGES, default="image",
                   help="how the competition score averages (docs/metrics.md)")


def fn_option(s) -> None:
    s.add_argument("--fn", choices=FN_RULES, default="ignore",
                   help="2020: false negatives not counted, TP/(TP+FP) as the competition "
                   "published (ignore), or counted as in 2019 (count)")
