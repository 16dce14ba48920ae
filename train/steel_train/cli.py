"""``steel-train``: generate data, check data sets, fit and evaluate models.

TensorFlow is imported inside the sub-commands that build models, so ``synth`` and ``check-data`` start
in a fraction of a second and run where only the light dependencies are installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from steel_edge.configfile import ConfigError, parse_set_flags
from steel_edge.data.errors import DataError


def _cmd_synth(args: argparse.Namespace) -> int:
    from steel_edge.data.synth import write_dataset

    summary = write_dataset(Path(args.out), images=args.images, seed=args.seed, progress=not args.quiet)
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from steel_edge.data.labelled import detect_layout, load_labelled
    from steel_edge.data.severstal import load_severstal

    root = Path(args.data)
    layout = detect_layout(root)
    summary: dict[str, object]
    if layout == "severstal":
        ds = load_severstal(root, on_error=args.on_error)
        summary = {
            "layout": "severstal",
            "csv_form": ds.csv_form,
            "images": len(ds),
            "defect_free": ds.defect_free,
            "images_per_class": {str(k): v for k, v in ds.class_counts().items()},
        }
        issues = ds.issues
    else:
        lds = load_labelled(root, on_error=args.on_error)
        summary = {"layout": "labelled", "form": lds.form, "images": len(lds),
                   "images_per_class": lds.class_counts()}
        issues = lds.issues
    summary["skipped"] = [str(i) for i in issues]
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from steel_train.config import load_train_config
    from steel_train.fit import fit
    from steel_train.oof import fit_oof

    overrides = {"fit.epochs": args.epochs, "fit.seed": args.seed, "fit.steps_per_epoch": args.steps_per_epoch}
    overrides.update(parse_set_flags(args.set))
    cfg = load_train_config(args.model, args.config, overrides)
    train = fit_oof if cfg.data.oof_folds else fit  # out-of-fold folds, or one split
    result = train([Path(d) for d in args.data], cfg, Path(args.out))
    print(json.dumps(result["metrics"], indent=2, default=str))
    return 0


def _cmd_cv(args: argparse.Namespace) -> int:
    from steel_train.config import load_train_config
    from steel_train.cv import cross_validate

    overrides = {"fit.epochs": args.epochs, "fit.seed": args.seed}
    overrides.update(parse_set_flags(args.set))
    cfg = load_train_config(args.model, args.config, overrides)
    summary = cross_validate([Path(d) for d in args.data], cfg, Path(args.out), folds=args.folds)
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from steel_train.retune import retune

    metrics = retune(Path(args.run), parse_set_flags(args.set))
    print(json.dumps(metrics, indent=None if args.json else 2, default=str))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from steel_train.evaluate import evaluate_path

    result = evaluate_path(Path(args.model), [Path(d) for d in args.data], Path(args.plot) if args.plot else None,
                           on_error=args.on_error, split=args.split, test_fraction=args.test_fraction,
                           test_seed=args.test_seed)
    print(json.dumps(result, indent=None if args.json else 2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steel-train", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic data set in the Kaggle Severstal layout")
    synth.add_argument("--out", required=True, help="output folder (gets train.csv and train_images/)")
    synth.add_argument("--images", type=int, default=200, help="number of 1600x256 images")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data")
    synth.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)

    check = sub.add_parser("check-data", help="validate a data folder and summarise it")
    check.add_argument("data", help="Severstal-layout or labelled-image folder")
    check.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                       help="stop at the first bad row (raise) or skip bad rows with a warning")
    check.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    check.set_defaults(func=_cmd_check_data)

    fit = sub.add_parser("fit", help="train a model and write a run folder")
    fit.add_argument("--data", action="append", required=True, help="data folder; repeat to combine several")
    fit.add_argument("--model", choices=["seg", "cls", "baseline"], required=True, help="which network")
    fit.add_argument("--out", required=True, help="run folder to write")
    fit.add_argument("--epochs", type=int, help="override fit.epochs")
    fit.add_argument("--seed", type=int, help="override fit.seed")
    fit.add_argument("--steps-per-epoch", type=int, help="override fit.steps_per_epoch")
    fit.add_argument("--config", help="YAML config (default: configs/train_<model>.yaml)")
    fit.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override any config key, e.g. --set data.val_fraction=0.25 (repeatable)")
    fit.set_defaults(func=_cmd_fit)

    cv = sub.add_parser("cv", help="k-fold cross-validation of a cls or baseline recipe (final weights, no selection)")
    cv.add_argument("--data", action="append", required=True, help="data folder; repeat to combine several")
    cv.add_argument("--model", choices=["cls", "baseline"], required=True, help="which network")
    cv.add_argument("--out", required=True, help="folder for the fold runs (foldK/) and cv.json")
    cv.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    cv.add_argument("--epochs", type=int, help="override fit.epochs")
    cv.add_argument("--seed", type=int, help="override fit.seed")
    cv.add_argument("--config", help="YAML config (default: configs/train_<model>.yaml)")
    cv.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key (repeatable)")
    cv.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    cv.set_defaults(func=_cmd_cv)

    tune = sub.add_parser("tune", help="tune a seg run's post-processing again on its own validation split "
                          "(e.g. with new postprocess.* settings), no retraining; rewrites its metrics")
    tune.add_argument("run", help="seg run folder written by steel-train fit")
    tune.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="override a config key of the run, e.g. postprocess.tune_min_recall=0.6 (repeatable)")
    tune.add_argument("--json", action="store_true", help="print one JSON object on one line")
    tune.set_defaults(func=_cmd_tune)

    evaluate = sub.add_parser("evaluate", help="score a model (.keras, .onnx or run folder) on a data folder")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", action="append", required=True,
                          help="data folder; repeat to score several together (seg)")
    evaluate.add_argument("--split", choices=["all", "test"], default="all",
                          help="seg: score every frame (all) or only the frames a run's test split keeps apart "
                          "(test: data.test_fraction/test_seed of the run folder's config, else the default config)")
    evaluate.add_argument("--test-fraction", type=float, help="with --split test: override data.test_fraction")
    evaluate.add_argument("--test-seed", type=int, help="with --split test: override data.test_seed")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on one line")
    evaluate.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                          help="stop at the first bad row or image (raise) or skip it with a warning")
    evaluate.add_argument("--plot", help="write the worst-image overlay (seg) or confusion matrix (cls) PNG here")
    evaluate.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (DataError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"steel-train {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
