"""The ``imat-kit`` command line: parses arguments, calls the core, prints results.

Every command exits 0 on success, 2 on bad input (with a one-line error naming the file, row
and value), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import KitError


def _cmd_synth(a: argparse.Namespace) -> int:
    from . import synth

    if a.scale == "full":
        images = a.images or synth.FULL_IMAGES
        rows = round(images * synth.FULL_ROWS / synth.FULL_IMAGES)
        s = synth.generate_full_csv(a.out, seed=a.seed, images=images, rows=rows, quiet=a.quiet)
        print(f"wrote {a.out}/train.csv: {s['train_images']:,} images, {s['rows']:,} rows "
              "(full scale, no images)")
    else:
        s = synth.generate_images(a.out, images=a.images or 200, test_images=a.test_images,
                                  seed=a.seed, quiet=a.quiet)
        print(f"wrote {a.out}: {s['train_images']} train images ({s['rows']} instances, "
              f"{s['attr_rows']} with attributes), {s['test_images']} test images")
    return 0


def _cmd_prepare(a: argparse.Namespace) -> int:
    from .prepare import prepare

    r = prepare(a.data, a.out, n_folds=a.folds, split=a.split, seed=a.seed,
                size_mismatch=a.size_mismatch, image_check=not a.no_image_check,
                skip_bad_rows=a.skip_bad_rows, quiet=a.quiet)
    out = Path(r["out"])
    b = r["balance"]
    print(f"{r['images']:,} images, {r['annotations']:,} instances ({r['layout']} layout) "
          f"→ {out / 'annotations'}/all.json")
    print(f"{r['folds']} {r['split']} folds (seed {r['seed']}), images per fold "
          f"{r['images_per_fold']} → {out / 'folds.csv'}")
    print(f"category balance (images per fold): mean max relative deviation "
          f"{b['mean_max_rel_dev']:.4f}, worst {b['worst_max_rel_dev']:.4f} "
          f"({b['worst_category']}) → {out / 'fold_balance.csv'}")
    if r["test_images"] is not None:
        print(f"{r['test_images']} test images → {out / 'annotations'}/test.json")
    for fix in r["size_fixes"]:
        print(f"size fix: {fix}")
    if r["rejected_rows"]:
        print(f"{r['rejected_rows']} row(s) left out, listed in {out / 'rejected_rows.csv'}")
    return 0


def _cmd_stats(a: argparse.Namespace) -> int:
    from .prepare import find_labels
    from .stats import dataset_stats, plot_category_distribution

    data = Path(a.data)
    s = dataset_stats(data / "train.csv", find_labels(data))
    cats = s["categories"]
    if a.json:
        out = {k: v for k, v in s.items() if k not in ("categories", "attributes")}
        out["categories"] = cats.to_dict(orient="records")
        out["attributes"] = s["attributes"].to_dict(orient="records")
        print(json.dumps(out, indent=2, default=int))
    else:
        print(f"{s['rows']:,} instances on {s['images']:,} images ({s['layout']} layout); "
              f"{s['instances_per_image']['mean']:.2f} per image (max "
              f"{s['instances_per_image']['max']}); {s['rows_with_attributes']:,} rows with "
              "attributes")
        print(f"height {s['height']}, width {s['width']}; smallest {s['smallest'][0]}x"
              f"{s['smallest'][1]}, largest {s['largest'][0]}x{s['largest'][1]} (HxW)")
        print(cats.sort_values("instances", ascending=False).to_string(index=False))
        if len(s["attributes"]):
            top = s["attributes"].sort_values("rows", ascending=False).head(15)
            print("\nmost frequent attributes:")
            print(top.to_string(index=False))
    if a.plot:
        plot_category_distribution(cats, a.plot)
        print(f"category distribution → {a.plot}")
    return 0


def _parse_folds(text: str) -> list[int]:
    try:
        folds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be like 0,1,2 (got {text!r})") from None
    if not folds or min(folds) < 0:
        raise argparse.ArgumentTypeError(f"folds must be non-negative (got {text!r})")
    return folds


def _cmd_train(a: argparse.Namespace) -> int:
    from .mmdet_ext.train import train_folds

    recs = train_folds(a.config, a.folds, work_root=a.work_root, data_root=a.data_root,
                       cfg_options=a.cfg_options or [], launcher=a.launcher, gpus=a.gpus,
                       auto_scale_lr=a.auto_scale_lr, dry_run=a.dry_run, quiet=a.quiet)
    for r in recs:
        print(f"fold {r['fold']} {r['phase']}: {r['status']}"
              + (f" → {r['checkpoint']}" if "checkpoint" in r else ""))
    return 0


def _cmd_submit(a: argparse.Namespace) -> int:
    from .predictions import read_predictions
    from .prepare import find_labels, test_image_sizes
    from .submission import SubmitConfig, sample_image_ids, validate_submission, write_submission

    cfg = SubmitConfig(score_thr=a.score_thr, max_per_image=a.max_per_image,
                       min_area=a.min_area, mask_size=a.mask_size, attributes=a.attributes)
    head, preds = read_predictions(a.predictions)
    ids = sample_image_ids(a.data)
    extra = {"predictions": str(a.predictions), "source": head}
    if a.evaluation:  # the fold table of `imat-kit evaluate`, recorded with the submission
        import pandas as pd

        try:
            extra["fold_scores"] = pd.read_csv(a.evaluation).to_dict(orient="records")
        except (OSError, pd.errors.ParserError) as e:
            raise KitError(f"cannot read the evaluation table: {e}", file=a.evaluation) from None
    man = write_submission(preds, ids, a.out, cfg, quiet=a.quiet, manifest=extra)
    print(f"{man['rows']} rows for {man['images']} images ({man['images_without_prediction']} "
          f"without a mask) → {a.out}, manifest {Path(a.out).with_suffix('.json')}")
    problems = validate_submission(a.out, ids, test_image_sizes(Path(a.data), quiet=a.quiet),
                                   find_labels(Path(a.data)), mask_size=a.mask_size)
    for p in problems:
        print(f"{a.out}: {p}", file=sys.stderr)
    if problems:
        return 1
    print("validated: no problems")
    return 0


def _cmd_validate(a: argparse.Namespace) -> int:
    from .prepare import find_labels, test_image_sizes
    from .submission import sample_image_ids, validate_submission

    data = Path(a.data)
    problems = validate_submission(a.submission, sample_image_ids(data),
                                   test_image_sizes(data, quiet=a.quiet), find_labels(data),
                                   mask_size=a.mask_size)
    for p in problems:
        print(f"{a.submission}: {p}")
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{a.submission}: valid")
    return 0


def _cmd_score(a: argparse.Namespace) -> int:
    from .metric import competition_score
    from .prepare import test_image_sizes
    from .submission import csv_instances

    sizes = test_image_sizes(Path(a.data), quiet=a.quiet)
    truth = csv_instances(a.solution, sizes, use_attributes=a.attributes)
    sub = csv_instances(a.submission, sizes, use_attributes=a.attributes, with_scores=True)
    r = competition_score(truth, sub, average=a.average)
    print(f"competition score ({a.average} average, attributes "
          f"{'matched' if a.attributes else 'ignored'}): {r['score']:.4f} over {r['count']} "
          f"{'images' if a.average == 'image' else 'units'}")
    return 0


def _cmd_ensemble(a: argparse.Namespace) -> int:
    from .ensemble import ensemble
    from .io import atomic_open
    from .predictions import header, read_predictions

    heads, inputs = [], []
    for f in a.inputs:
        h, p = read_predictions(f)
        heads.append({"file": f, **h})
        inputs.append(p)
    fused = ensemble(inputs, method=a.method, iou=a.iou, weights=a.weights, quiet=a.quiet)
    with atomic_open(a.out, "w") as f:
        f.write(header(split=heads[0].get("split"), method=a.method, iou=a.iou,
                       weights=a.weights, inputs=heads) + "\n")
        for p in fused.values():
            f.write(p.to_json() + "\n")
    n = sum(len(p) for p in fused.values())
    print(f"{len(inputs)} inputs → {len(fused)} images, {n} instances ({a.method}) → {a.out}")
    return 0


def _cmd_predict(a: argparse.Namespace) -> int:
    from .mmdet_ext.predict import predict

    opts = {}
    for kv in a.cfg_options or []:
        k, _, v = kv.partition("=")
        try:
            opts[k] = json.loads(v)
        except json.JSONDecodeError:
            opts[k] = v
    r = predict(a.config, a.checkpoint, split=a.split, fold=a.fold, out=a.out,
                data_root=a.data_root, tta=a.tta, batch_size=a.batch_size, device=a.device,
                soft_size=a.soft_size, cfg_options=opts, quiet=a.quiet)
    print(f"{r['images']} images ({r['predicted_now']} predicted now) → {r['out']}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    import glob

    from .evaluate import REFERENCE_TABLE3, evaluate_files
    from .io import atomic_open
    from .prepare import find_labels

    files = sorted({f for pat in a.predictions for f in glob.glob(pat)})
    if not files:
        raise KitError(f"no predictions file matches {' '.join(a.predictions)}")
    table, cats = evaluate_files(a.data, files, average=a.average, score_thr=a.score_thr)
    names = find_labels(Path(a.data)).class_names
    cats.insert(0, "category", [names[i] for i in cats.index])
    out = Path(a.out)
    with atomic_open(out / "evaluation.csv", "w", newline="") as f:
        table.to_csv(f, index=False, float_format="%.4f")
    with atomic_open(out / "per_category_ap.csv", "w", newline="") as f:
        cats.to_csv(f, float_format="%.4f")
    show = table[["fold", "segm_AP", "segm_AP50", "segm_AP75", "segm_APs", "segm_APm",
                  "segm_APl", "bbox_AP", "competition", "images"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    m, sd = table.iloc[-2], table.iloc[-1]
    print(f"\nsegm AP {100 * m.segm_AP:.1f} ± {100 * sd.segm_AP:.1f}, AP50 {100 * m.segm_AP50:.1f},"
          f" AP75 {100 * m.segm_AP75:.1f}; competition score ({a.average}) "
          f"{m.competition:.4f} ± {sd.competition:.4f}")
    print("reference study (Matterport R50, 100 val images):")
    print(REFERENCE_TABLE3.to_string(index=False))
    print(f"→ {out / 'evaluation.csv'}, {out / 'per_category_ap.csv'}")
    return 0


def _gt_for(data: Path, head: dict) -> tuple[dict, Path]:
    """The ground truth (COCO dict) and image folder matching a predictions header."""
    from .prepare import ann_relpath

    if head.get("split") == "val" and head.get("fold") is not None:
        path, images = data / ann_relpath("val", head["fold"]), data / "train"
    else:
        path, images = data / ann_relpath("test"), data / "test"
    if not path.exists():
        raise KitError(f"{path} does not exist (run imat-kit prepare)", file=str(path))
    return json.loads(path.read_text()), images


def _cmd_plot(a: argparse.Namespace) -> int:
    from . import plots

    if a.what == "losses":
        plots.plot_losses(a.work_dirs, a.out, a.labels)
    elif a.what == "categories":
        from .prepare import find_labels
        from .stats import dataset_stats, plot_category_distribution

        data = Path(a.data)
        plot_category_distribution(dataset_stats(data / "train.csv",
                                                 find_labels(data))["categories"], a.out)
    else:
        from .metric import coco_eval
        from .predictions import read_predictions
        from .prepare import find_labels

        data = Path(a.data)
        head, preds = read_predictions(a.predictions)
        gt, image_dir = _gt_for(data, head)
        if a.what == "pr":
            plots.plot_pr_curves(coco_eval(gt, preds, "segm"), a.out)
        elif a.what == "confusion":
            names = find_labels(data).class_names
            cm = plots.confusion_matrix(gt, preds, len(names), score_thr=a.score_thr)
            plots.plot_confusion(cm, names, a.out)
        else:
            keys = plots.plot_overlays(gt, preds, image_dir, a.out, image_keys=a.images,
                                       n=a.n, seed=a.seed, score_thr=a.score_thr)
            print("images: " + " ".join(keys))
    print(f"{a.what} → {a.out}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(a.out, images=a.images, folds=tuple(a.folds), iters=a.iters, seed=a.seed,
             submission=a.submission, quiet=a.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imat-kit", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"imat-kit {__version__}")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", parents=[quiet], help="write a synthetic dataset in the "
                       "competition layout")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--images", type=int, default=None,
                   help="training images (default 200; 45,625 with --scale full)")
    s.add_argument("--test-images", type=int, default=None,
                   help="test images (default: a fifth of --images)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", choices=["small", "full"], default="small",
                   help="full: only a full-size train.csv (45,625 images, ~333k rows), "
                   "for benchmarks")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("prepare", parents=[quiet], help="train.csv → COCO json, folds, "
                       "per-fold COCO files")
    s.add_argument("--data", required=True, help="folder with the competition files")
    s.add_argument("--out", default=None, help="output folder (default: --data)")
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--split", choices=["stratified", "random"], default="stratified")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size-mismatch", choices=["error", "transpose", "drop"], default="error",
                   help="when a CSV Height/Width disagrees with the JPEG: fail (default), "
                   "transpose the masks of an exact swap, or drop the image")
    s.add_argument("--no-image-check", action="store_true",
                   help="convert without the train/ images (sizes are not checked)")
    s.add_argument("--skip-bad-rows", action="store_true",
                   help="leave malformed rows out (listed in rejected_rows.csv) instead of "
                   "failing")
    s.set_defaults(func=_cmd_prepare)

    s = sub.add_parser("stats", parents=[quiet], help="category/attribute counts, image sizes")
    s.add_argument("--data", required=True, help="folder with train.csv")
    s.add_argument("--plot", default=None, help="write the category distribution to this PNG")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_stats)

    s = sub.add_parser("train", parents=[quiet], help="train folds one after another, each "
                       "through its config's phases (resumable)")
    s.add_argument("config", help="an MMDetection config, e.g. configs/maskrcnn_r50_imat.py")
    s.add_argument("--folds", type=_parse_folds, default=[0], help="e.g. 0,1,2,3,4 (default 0)")
    s.add_argument("--work-root", default="work_dirs",
                   help="work dirs go to WORK_ROOT/<config name>/fold<k> (default work_dirs)")
    s.add_argument("--data-root", default=None,
                   help="the prepared data folder (sets IMAT_DATA_ROOT; default: the config's)")
    s.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="pytorch: N processes on this machine; slurm: through srun (mim)")
    s.add_argument("--gpus", type=int, default=1, help="processes/GPUs with --launcher")
    s.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help="passed to every run, e.g. load_from=None train_cfg.max_epochs=2")
    s.add_argument("--auto-scale-lr", action="store_true",
                   help="scale lr to the real total batch (mmdet's auto_scale_lr)")
    s.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("submit", parents=[quiet], help="predictions → competition CSV + "
                       "manifest, validated")
    s.add_argument("--predictions", required=True, help="a predictions .jsonl (test split)")
    s.add_argument("--data", required=True, help="folder with sample_submission.csv and test/")
    s.add_argument("--out", required=True, help="e.g. submissions/NAME.csv")
    s.add_argument("--score-thr", type=float, default=0.3)
    s.add_argument("--max-per-image", type=int, default=100)
    s.add_argument("--min-area", type=int, default=20,
                   help="drop instances left with fewer pixels after overlap removal")
    s.add_argument("--mask-size", choices=["original", "512"], default="original")
    s.add_argument("--attributes", action="store_true",
                   help="write ClassId with attributes when predictions carry them")
    s.add_argument("--evaluation", default=None,
                   help="evaluation.csv of `imat-kit evaluate`: fold scores for the manifest")
    s.set_defaults(func=_cmd_submit)

    s = sub.add_parser("validate", parents=[quiet], help="check a submission CSV")
    s.add_argument("--submission", required=True)
    s.add_argument("--data", required=True, help="folder with sample_submission.csv and test/")
    s.add_argument("--mask-size", choices=["original", "512"], default="original")
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("score", parents=[quiet], help="score a submission against a solution "
                       "in train.csv layout (e.g. the synthetic test_solution.csv)")
    s.add_argument("--submission", required=True)
    s.add_argument("--solution", required=True)
    s.add_argument("--data", required=True, help="folder with test/ (image sizes)")
    s.add_argument("--average", choices=["image", "image_class", "class"], default="image")
    s.add_argument("--attributes", action="store_true", help="ClassIds must match attributes")
    s.set_defaults(func=_cmd_score)

    s = sub.add_parser("ensemble", parents=[quiet], help="fuse several prediction files")
    s.add_argument("--inputs", nargs="+", required=True, help="predictions .jsonl files")
    s.add_argument("--out", required=True)
    s.add_argument("--method", choices=["fusion", "nms"], default="fusion")
    s.add_argument("--iou", type=float, default=0.5, help="mask IoU to group/suppress")
    s.add_argument("--weights", type=float, nargs="+", default=None,
                   help="one weight per input (default equal)")
    s.set_defaults(func=_cmd_ensemble)

    s = sub.add_parser("predict", parents=[quiet], help="run a model over a fold's val images "
                       "or the test set; resumable")
    s.add_argument("config")
    s.add_argument("checkpoint")
    s.add_argument("--split", choices=["val", "test"], required=True)
    s.add_argument("--fold", type=int, default=0)
    s.add_argument("--out", required=True, help="predictions .jsonl")
    s.add_argument("--data-root", default=None, help="prepared data (default: the config's)")
    s.add_argument("--tta", choices=["flip"], default=None, help="add a mirrored pass, fused")
    s.add_argument("--batch-size", type=int, default=2)
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    s.add_argument("--soft-size", type=int, default=0,
                   help="also keep each mask's probabilities inside its box at SxS (e.g. 28), "
                   "for soft ensembling")
    s.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help="e.g. model.test_cfg.rcnn.score_thr=0.01")
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("evaluate", parents=[quiet], help="fold table: COCO AP and competition "
                       "score per fold, mean ± std, per-category AP")
    s.add_argument("--data", required=True, help="the prepared data folder")
    s.add_argument("--predictions", nargs="+", required=True,
                   help="validation predictions, one file per fold (glob patterns allowed)")
    s.add_argument("--out", default=".", help="folder for evaluation.csv, per_category_ap.csv")
    s.add_argument("--average", choices=["image", "image_class", "class"], default="image")
    s.add_argument("--score-thr", type=float, default=0.3,
                   help="score threshold for the competition score (COCO AP uses all)")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("plot", parents=[quiet], help="figures (PNG)")
    s.add_argument("what", choices=["losses", "pr", "confusion", "overlays", "categories"])
    s.add_argument("--out", required=True, help="PNG file")
    s.add_argument("--work-dirs", nargs="+", help="losses: mmengine work dirs")
    s.add_argument("--labels", nargs="+", help="losses: a name per work dir")
    s.add_argument("--data", help="pr/confusion/overlays/categories: the prepared data")
    s.add_argument("--predictions", help="pr/confusion/overlays: a predictions .jsonl")
    s.add_argument("--score-thr", type=float, default=0.3)
    s.add_argument("--images", nargs="+", help="overlays: these ImageIds")
    s.add_argument("--n", type=int, default=6, help="overlays: random images")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_plot)

    s = sub.add_parser("demo", parents=[quiet], help="the whole pipeline on synthetic data "
                       "(resumable)")
    s.add_argument("--out", default="outputs/demo")
    s.add_argument("--images", type=int, default=300)
    s.add_argument("--folds", type=_parse_folds, default=[0, 1], help="folds to train")
    s.add_argument("--iters", type=int, default=500, help="training iterations per fold")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--submission", default="submissions/demo.csv")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "plot":
        need = {"losses": ["work_dirs"], "categories": ["data"]}.get(
            args.what, ["data", "predictions"])
        lacking = [n for n in need if not getattr(args, n)]
        if lacking:
            parser.error(f"plot {args.what} needs --{lacking[0].replace('_', '-')}")
    try:
        return args.func(args)
    except KitError as e:
        print(f"imat-kit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
