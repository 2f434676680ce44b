"""Learned re-scoring (``imat-kit tune --rescore``): a model of each prediction's chance to be
right replaces its score for ordering, thresholding and the cap (the 2020 winner's move).

**What it predicts**: a prediction's *TP rate* — the share of the rule's thresholds (the 2019
score's ten IoU thresholds, or the 2020 rule's IoU × attribute-F1 pairs) at which it is a true
positive when every prediction of its image is kept and matched greedily by score (so a
lower-scoring duplicate of a found garment counts as a false positive).

**From what** (:data:`FEATURES`, all read off one image's predictions, so ``submit`` computes
them for a test image exactly as ``tune`` did for a validation one): the category, the score,
its rank in the image and among its category's predictions there, the number of predictions in
the image, the score over the image's best, the mask's area (log) and its share of the image, the
box's aspect, the soft mask's mean probability where stored (``predict --soft-size``), the
number of attributes at 0.5 and their mean probability, and two per-category figures learnt on
the fitting folds: the category's mean TP rate (shrunk toward the global one by its support)
and its mean attribute F1 on the truths its predictions found.

**The model**: scikit-learn's ``HistGradientBoostingRegressor`` (100 trees of depth ≤ 6, seeded;
fitted on at most 200,000 predictions drawn with the seed). It is stored as data — each tree's
split features, thresholds, children, missing-value directions and leaf values as JSON arrays,
evaluated here with numpy — so a postprocess file executes no code when read (no pickle). The
export is checked against scikit-learn's own ``predict`` when fitted; a file whose feature list
is not this version's, or whose trees do not form valid trees, is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace

import numpy as np

from imat_kit import fields
from imat_kit.data import rle as rle_mod
from imat_kit.errors import KitError

FORMAT = "imat-kit-rescore"
FEATURES = ("category", "score", "rank", "rank_in_category", "predictions_in_image",
            "score_to_image_best", "log_area", "area_share", "box_log_aspect", "soft_mean",
            "attributes", "attribute_mean_probability", "category_tp_rate",
            "category_attribute_f1")
N_IMAGE_FEATURES = 12  # the first ones, read off the image; the last two from the tables
MAX_ROWS = 200_000
MIN_ROWS = 100  # fewer predictions to fit on: no re-scorer (tune says so)
PRIOR_STRENGTH = 20.0  # a category's TP rate shrunk toward the global one: (Σy + λȳ) / (n + λ)
_TREE_KEYS = ("feature", "threshold", "missing_left", "left", "right", "leaf", "value")


# --- features -------------------------------------------------------------------------------

def image_features(preds: list) -> np.ndarray:
    """The first :data:`N_IMAGE_FEATURES` features of every prediction of ``preds`` (a list of
    ``ImagePrediction``), rows image after image in each image's stored order."""
    n = np.array([len(p) for p in preds], np.int64)
    total = int(n.sum())
    x = np.full((total, N_IMAGE_FEATURES), np.nan)
    if not total:
        return x
    img = np.repeat(np.arange(len(preds)), n)
    start = np.concatenate(([0], np.cumsum(n)[:-1]))
    local = np.arange(total) - start[img]
    labels = np.concatenate([p.labels for p in preds if len(p)]).astype(np.int64)
    scores = np.concatenate([p.scores for p in preds if len(p)]).astype(np.float64)
    order = np.lexsort((local, -scores, img))
    rank = np.empty(total, np.int64)
    rank[order] = np.arange(total) - start[img[order]]
    order_c = np.lexsort((local, -scores, labels, img))
    lab_o, img_o = labels[order_c], img[order_c]
    new = np.concatenate(([True], (lab_o[1:] != lab_o[:-1]) | (img_o[1:] != img_o[:-1])))
    group_start = np.maximum.accumulate(np.where(new, np.arange(total), 0))
    rank_c = np.empty(total, np.int64)
    rank_c[order_c] = np.arange(total) - group_start
    nz = n > 0
    best = np.zeros(len(preds))
    best[nz] = np.maximum.reduceat(scores, start[nz])
    hw = np.array([float(p.height) * float(p.width) for p in preds])
    areas = rle_mod.coco_strings_areas([m for p in preds for m in p.masks]).astype(np.float64)
    boxes = np.concatenate([np.asarray(p.bboxes, np.float64).reshape(-1, 4)
                            for p in preds if len(p)])
    x[:, 0] = labels
    x[:, 1] = scores
    x[:, 2] = rank
    x[:, 3] = rank_c
    x[:, 4] = n[img]
    x[:, 5] = scores / np.maximum(best[img], 1e-12)
    x[:, 6] = np.log1p(areas)
    x[:, 7] = areas / np.maximum(hw[img], 1.0)
    x[:, 8] = np.log((np.maximum(boxes[:, 2], 0) + 1) / (np.maximum(boxes[:, 3], 0) + 1))
    row = 0
    for p in preds:
        k = len(p)
        if k and p.soft is not None and len(p.soft) == k:
            s = p.soft.reshape(k, -1).astype(np.float64)
            on = s >= 128
            cnt = on.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                x[row:row + k, 9] = np.where(cnt > 0, (s * on).sum(axis=1) / cnt / 255.0,
                                             np.nan)
        if k and p.attr_probs:
            for j, probs in enumerate(p.attr_probs):
                vals = [v for v in probs.values() if v >= 0.5]
                x[row + j, 10] = len(vals)
                x[row + j, 11] = float(np.mean(vals)) if vals else np.nan
        elif k and p.attributes:
            x[row:row + k, 10] = [len(a) for a in p.attributes]
        elif k:
            x[row:row + k, 10] = 0
        row += k
    return x


@dataclass
class Tables:
    """The per-category figures the last two features read (learnt on the fitting folds)."""

    tp_rate: dict = field(default_factory=dict)  # category → shrunk mean TP rate
    default_tp_rate: float = 0.0
    attribute_f1: dict = field(default_factory=dict)  # category → mean F1 on found truths

    @classmethod
    def fit(cls, labels: np.ndarray, y: np.ndarray, f1_labels: np.ndarray,
            f1: np.ndarray) -> Tables:
        glob = float(y.mean()) if y.size else 0.0
        tp = {}
        for c in np.unique(labels).tolist():
            sel = labels == c
            tp[int(c)] = round(float((y[sel].sum() + PRIOR_STRENGTH * glob)
                                     / (sel.sum() + PRIOR_STRENGTH)), 6)
        f = {int(c): round(float(f1[f1_labels == c].mean()), 6)
             for c in np.unique(f1_labels).tolist()}
        return cls(tp, round(glob, 6), f)

    def columns(self, labels: np.ndarray) -> np.ndarray:
        out = np.empty((len(labels), 2))
        out[:, 0] = [self.tp_rate.get(int(c), self.default_tp_rate) for c in labels]
        out[:, 1] = [self.attribute_f1.get(int(c), np.nan) for c in labels]
        return out


def features(preds: list, tables: Tables) -> np.ndarray:
    """Every feature (:data:`FEATURES`) of every prediction of ``preds``, rows as
    :func:`image_features`."""
    x = image_features(preds)
    return np.hstack([x, tables.columns(x[:, 0])])


# --- the model, as data -----------------------------------------------------------------------

@dataclass(eq=False)
class Rescorer:
    """A fitted re-scorer: trees as arrays (:func:`fit`), the tables, what it was fitted on."""

    baseline: float
    trees: list  # dicts of numpy arrays, keys _TREE_KEYS
    tables: Tables
    target: str  # the rule whose TP rate it predicts
    rows: int  # predictions it was fitted on
    sklearn: str
    features: tuple = FEATURES
    fitted: object = None  # the scikit-learn model, when fitted here and equal bit for bit

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The raw model output for feature rows ``x`` (n × len(FEATURES)): the trees
        evaluated with numpy, or by scikit-learn's compiled ``predict`` where this process
        fitted the model and found it equal to the numpy evaluation bit for bit."""
        if self.fitted is not None:
            return self.fitted.predict(x)
        out = np.full(len(x), self.baseline)
        rows = np.arange(len(x))
        for t in self.trees:
            node = np.zeros(len(x), np.int64)
            for _ in range(len(t["leaf"])):
                leaf = t["leaf"][node]
                if leaf.all():
                    break
                v = x[rows, t["feature"][node]]
                left = np.where(np.isnan(v), t["missing_left"][node], v <= t["threshold"][node])
                node = np.where(leaf, node, np.where(left, t["left"][node], t["right"][node]))
            out += t["value"][node]
        return out

    def scores(self, preds: list) -> list[np.ndarray]:
        """The new score of every prediction of ``preds`` (a list of ``ImagePrediction``):
        the predicted TP rate, clipped to 0..1 and rounded to 1e-6 (ties by position)."""
        x = features(preds, self.tables)
        y = self.new_scores(x)
        out, row = [], 0
        for p in preds:
            out.append(y[row:row + len(p)])
            row += len(p)
        return out

    def new_scores(self, x: np.ndarray) -> np.ndarray:
        """The scores for feature rows ``x``: the predicted TP rate clipped to 0..1 and
        rounded to 1e-6."""
        return np.round(np.clip(self.predict(x), 0.0, 1.0), 6) if len(x) else np.zeros(0)

    def apply(self, preds: dict, chunk: int = 4096) -> dict:
        """``image_key → ImagePrediction`` with every score replaced by the model's (in
        chunks of images: the trees are evaluated for many predictions at once)."""
        keys = list(preds)
        out = {}
        for s in range(0, len(keys), chunk):
            part = [preds[k] for k in keys[s:s + chunk]]
            for k, p, new in zip(keys[s:s + chunk], part, self.scores(part)):
                out[k] = replace(p, scores=new)
        return out

    def as_dict(self) -> dict:
        return {"format": FORMAT, "model": "HistGradientBoostingRegressor",
                "sklearn": self.sklearn, "target": self.target, "rows": self.rows,
                "features": list(self.features), "baseline": self.baseline,
                "tables": {"tp_rate": {str(c): v for c, v in sorted(self.tables.tp_rate.items())},
                           "default_tp_rate": self.tables.default_tp_rate,
                           "attribute_f1": {str(c): v for c, v in
                                            sorted(self.tables.attribute_f1.items())}},
                "trees": [{k: (t[k].astype(int).tolist() if k != "threshold" and k != "value"
                               else [_finite(v) for v in t[k].tolist()]) for k in _TREE_KEYS}
                          for t in self.trees]}

    def digest(self) -> str:
        """SHA-256 of the model's JSON (what the settings record)."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def summary(self) -> dict:
        return {"model": "HistGradientBoostingRegressor", "trees": len(self.trees),
                "features": len(self.features), "target": self.target, "rows": self.rows,
                "sha256": self.digest()}


def _finite(v: float) -> float:
    """A JSON-safe number: ±inf (a split sending every present value one way, the missing
    ones the other) becomes ±the largest float, the same split for every finite value."""
    if math.isnan(v):
        raise KitError("rescore: a NaN in the fitted trees")
    return float(np.clip(v, -np.finfo(np.float64).max, np.finfo(np.float64).max))


def from_dict(d: object, *, file: str = "<rescorer>", row: int | None = None) -> Rescorer:
    """A :class:`Rescorer` from :meth:`Rescorer.as_dict`, every array checked: the feature
    list must be this version's, every node's children later nodes of its tree, every split
    feature a feature, every number finite; anything else is refused (nothing is executed)."""
    def bad(msg: str, value: object = None) -> KitError:
        return KitError(f"rescore: {msg}", file=file, row=row, value=value)

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise bad(f"not a re-scorer (needs \"format\": \"{FORMAT}\"; write one with imat-kit "
                  "tune --rescore)")
    if d.get("features") != list(FEATURES):
        raise bad("another feature list than this version's (tuned with another imat-kit: "
                  "run imat-kit tune --rescore again)", ",".join(map(str, d.get("features")
                                                                     or []))[:120])
    base = d.get("baseline")
    if not fields.is_number(base):
        raise bad("baseline must be a number", base)
    tabs = d.get("tables")
    if not isinstance(tabs, dict):
        raise bad("tables missing")
    tables = Tables(_id_map(tabs.get("tp_rate"), bad), tabs.get("default_tp_rate"),
                    _id_map(tabs.get("attribute_f1"), bad))
    if not fields.is_number(tables.default_tp_rate):
        raise bad("default_tp_rate must be a number", tables.default_tp_rate)
    trees_in = d.get("trees")
    if not isinstance(trees_in, list) or not trees_in:
        raise bad("trees must be a non-empty list")
    trees = []
    nf = len(FEATURES)
    for i, t in enumerate(trees_in):
        if not isinstance(t, dict) or sorted(t) != sorted(_TREE_KEYS):
            raise bad(f"tree {i} must have exactly {', '.join(_TREE_KEYS)}")
        lens = {len(t[k]) if isinstance(t[k], list) else -1 for k in _TREE_KEYS}
        if len(lens) != 1 or -1 in lens or 0 in lens:
            raise bad(f"tree {i}: arrays of one same non-zero length needed")
        for k in _TREE_KEYS:
            whole = k not in ("threshold", "value")
            if not all(isinstance(v, int if whole else (int, float)) and not isinstance(v, bool)
                       and (not whole or -2**31 < v < 2**31) for v in t[k]):
                raise bad(f"tree {i}: {k} must hold {'integers' if whole else 'numbers'} only")
        arr = {k: np.asarray(t[k], np.float64 if k in ("threshold", "value") else np.int64)
               for k in _TREE_KEYS}
        if any(arr[k].ndim != 1 for k in _TREE_KEYS) or not (
                np.isfinite(arr["threshold"]).all() and np.isfinite(arr["value"]).all()):
            raise bad(f"tree {i}: finite numbers needed")
        n = len(arr["leaf"])
        idx = np.arange(n)
        inner = arr["leaf"] == 0
        if not np.isin(arr["leaf"], (0, 1)).all() or not np.isin(arr["missing_left"],
                                                                  (0, 1)).all():
            raise bad(f"tree {i}: leaf and missing_left must be 0 or 1")
        if inner.any() and not (
                (arr["left"][inner] > idx[inner]).all() and (arr["right"][inner] > idx[inner]).all()
                and (arr["left"][inner] < n).all() and (arr["right"][inner] < n).all()
                and (arr["feature"][inner] >= 0).all() and (arr["feature"][inner] < nf).all()):
            raise bad(f"tree {i}: a node's children must be later nodes of the tree and its "
                      "feature one of the features")
        arr["leaf"] = arr["leaf"].astype(bool)
        arr["missing_left"] = arr["missing_left"].astype(bool)
        arr["feature"] = np.where(inner, arr["feature"], 0)
        trees.append(arr)
    rows = d.get("rows")
    return Rescorer(float(base), trees, tables, str(d.get("target", "")),
                    int(rows) if fields.is_int(rows) else 0,
                    str(d.get("sklearn", "")))


def _id_map(m: object, bad) -> dict:
    if not isinstance(m, dict):
        raise bad("tables must map category ids to numbers")
    out = {}
    for k, v in m.items():
        if not (fields.is_digits(k) and len(k) < 10) or not fields.is_number(v):
            raise bad("tables must map category ids to numbers", f"{k}: {v}"[:60])
        out[int(k)] = float(v)
    return out


# --- fitting --------------------------------------------------------------------------------

def fit(x: np.ndarray, y: np.ndarray, tables: Tables, *, target: str, seed: int = 0,
        max_rows: int = MAX_ROWS) -> Rescorer:
    """A :class:`Rescorer` fitted on feature rows ``x`` (all :data:`FEATURES`) and TP rates
    ``y`` (at most ``max_rows`` rows, drawn with ``seed``); its numpy evaluation is checked
    equal to scikit-learn's ``predict`` on them."""
    import sklearn
    from sklearn.ensemble import HistGradientBoostingRegressor

    if len(x) > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False))
        x, y = x[pick], y[pick]
    x = x.copy()
    x[:, np.isnan(x).all(axis=0)] = 0.0  # a feature never present here (no soft masks, no
    # attributes): constant, so no tree splits on it, whatever later rows hold
    model = HistGradientBoostingRegressor(max_iter=100, max_depth=6, learning_rate=0.1,
                                          min_samples_leaf=50, l2_regularization=1.0,
                                          early_stopping=False, random_state=seed)
    model.fit(x, y)
    trees = []
    for (pred,) in model._predictors:  # one regressor tree per iteration
        nodes = pred.nodes
        if nodes["is_categorical"].any():
            raise KitError("rescore: a categorical split in the fitted trees (not exported)")
        trees.append({"feature": nodes["feature_idx"].astype(np.int64),
                      "threshold": nodes["num_threshold"].astype(np.float64),
                      "missing_left": nodes["missing_go_to_left"].astype(bool),
                      "left": nodes["left"].astype(np.int64),
                      "right": nodes["right"].astype(np.int64),
                      "leaf": nodes["is_leaf"].astype(bool),
                      "value": nodes["value"].astype(np.float64)})
    base = float(np.asarray(model._baseline_prediction).ravel()[0])
    out = Rescorer(base, trees, tables, target, len(x), sklearn.__version__)
    out = from_dict(json.loads(json.dumps(out.as_dict())))  # as a file would give it back
    check = x[: min(len(x), 20_000)]
    mine, theirs = out.predict(check), model.predict(check)
    if check.size and not np.allclose(mine, theirs, atol=1e-9):
        raise KitError(f"rescore: the exported trees do not reproduce scikit-learn "
                       f"{sklearn.__version__}'s predictions (an unsupported version?)")
    if np.array_equal(mine, theirs):  # the same sums in the same order: the fast path
        out.fitted = model
    return out
