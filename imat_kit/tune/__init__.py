"""``imat-kit tune``: the post-processing settings of ``submit`` tuned on out-of-fold predictions.

**What is tuned** (the :class:`postprocess.PostProcess` settings): the global score threshold,
a score threshold per category (categories with at least ``min_support`` truths matched at the
defaults; shrunk toward the global one by their support: ``(n·t_c + λ·t) / (n + λ)``, the
strength λ chosen by the nested figure among :data:`SHRINK_GRID`), the mask binarisation
threshold (from the stored soft masks; files without them keep their masks), the minimum mask
area, the maximum instances per image, and for attribute models how attribute sets are decoded
(a global 0.5, the thresholds of ``tune-attributes``, a threshold per (category, attribute)
shrunk toward the attribute's, or the ``k`` most probable attributes, ``k`` per category).
With ``rescore``, a learned re-scorer (:mod:`imat_kit.rescore`, :mod:`imat_kit.tune.rescoring`) too.

**The search** runs over the validation predictions of every given fold pooled (their images
averaged together): coordinate ascent over grids — the score threshold (0.05…0.95 by 0.05), the
cap (1, 2, 3, 5, 10, 20, 30, 50, 75, 100: under the 2020 formula, which ignores false
negatives, one sure prediction per image can be best), the minimum area (0, 10, 20, 50, 100,
200, 400 px) and the mask threshold (as stored, 0.3…0.7) in turn, each over its grid with the
others fixed, until a round changes nothing (at most 3 rounds); then each category's threshold
over the score grid (most supported first); then the attribute decoding (``k`` per category:
the category's median number of attributes in training annotations that never include the
scored images — for the search that scores fold f, fold f's own training split; for the final
settings, every training annotation — moved by coordinate ascent, up to 3 rounds, only for
categories with at least ``min_support`` matched instances). A setting replaces the current one
only when it scores strictly higher. The attribute decoding is chosen by the target metric when
it involves attributes (``competition2020``, ``ap_iou_f1``), else by the attribute micro F1 of
the instances matched at the defaults (what ``evaluate`` reports).

**Scores are exact.** For the competition rules (2019 and 2020) every setting is scored from
IoUs computed once per image and mask variant (pycocotools, on the leftover masks that
:func:`postprocess.kept_instances` — the function ``submit`` writes its rows with — leaves):
where each kept detection has at most one truth it could match (mask IoU ≥ 0.5), greedy matching
by score reduces to "a truth is found at a threshold when some kept detection linked to it
passes it", computed for all images at once; the rare (image, class) groups where a detection
has two candidate truths are matched by the greedy rule itself (:mod:`matching`). So the score
``tune`` reports for its settings is the score of the submission ``submit --postprocess``
writes, scored by ``imat-kit score`` (a test checks it). ``ap_iou_f1`` is scored by
:func:`attr_metric.fashionpedia_eval` on the post-processed predictions of each setting (slower:
no per-category thresholds).

**Honest figure.** For each fold, the whole search is run on the other folds and its settings
are applied to that fold: the nested score, whose mean gain over the defaults (and its spread
over folds) ``tune`` prints as the expected gain. The search's three groups (global settings,
per-category thresholds, attribute decoding) are each kept only when their nested gain is
positive (else left at the defaults, and the output says so); the nested figure reported is
that of the recipe kept. With one fold there is no honest figure, and the output says so.

**Where it lives.** :mod:`imat_kit.tune.search` (the search), :mod:`imat_kit.tune.nested` (the
nested figure and the command's result), :mod:`imat_kit.tune.attributes` (attribute decoding),
:mod:`imat_kit.tune.rescoring` (``--rescore``); the exact scores they compare come from
:mod:`imat_kit.eval.score_parts` and :mod:`imat_kit.eval.fast_score`, beside the reference
metric they equal.
"""
