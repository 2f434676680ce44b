"""The ``imat-kit`` command line: the table of commands (each group's module holds its
commands' options beside what they run), the parser, and the exit codes.

Every command exits 0 on success, 2 on bad input (one line naming the file, row and value),
1 when a submission fails validation, 130 when interrupted. Each command's work is one
function of the core (or of ``imat_kit.mmdet_ext``) that ``imat-kit run`` and the demo call too.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from imat_kit import __version__
from imat_kit.cli import data, demo, figures, models, run, scoring, submission
from imat_kit.cli.options import quiet_parent, quiet_third_party_warnings
from imat_kit.errors import KitError, KitWarning

DESCRIPTION = """\
From the iMaterialist Fashion competition files to a scored submission with MMDetection.

Typical run (real data in data/imat2019, 5 folds):
  imat-kit prepare  --data data/imat2019
  imat-kit train    configs/maskrcnn_r50_imat.py --folds 0,1,2,3,4 --data-root data/imat2019
  imat-kit predict  CONFIG CHECKPOINT --split val --fold 0 --out preds/fold0_val.jsonl
  imat-kit evaluate --data data/imat2019 --predictions 'preds/fold*_val.jsonl'
  imat-kit ensemble --inputs preds/fold*_test.jsonl --out preds/ensemble_test.jsonl
  imat-kit submit   --predictions preds/ensemble_test.jsonl --data data/imat2019 \\
                    --out submissions/mine.csv
Try it all on synthetic data first: imat-kit demo (make demo)."""

#: command → the module holding it, in the order ``--help`` lists them
COMMANDS = {name: module for module in (data, models, scoring, submission, figures, demo, run)
            for name in module.PARSERS}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imat-kit", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"imat-kit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [quiet_parent()]
    for name, module in COMMANDS.items():
        module.PARSERS[name](sub, parents)
    return p


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", KitWarning)
        previous = warnings.showwarning

        def note(message, category, *rest) -> None:
            if issubclass(category, KitWarning):
                print(f"imat-kit {args.command}: note: {message}", file=sys.stderr)
            else:
                previous(message, category, *rest)

        warnings.showwarning = note
        return _run(args)


def _run(args: argparse.Namespace) -> int:
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
