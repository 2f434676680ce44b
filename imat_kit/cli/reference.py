"""``docs/cli.md``, generated from the argparse parser (``make docs`` writes it; a test fails
when the file is out of date)."""

from __future__ import annotations

import argparse
import functools

from imat_kit.cli.commands import build_parser

WIDTH = 100

HEADER = """# Command line reference

Generated from the parser by `make docs` (do not edit by hand; a test checks it is current).
Every command takes `--quiet`/`-q` and exits 0 on success, 2 on bad input (one line naming the
file, row and value), 1 when a submission fails validation, 130 when interrupted.
"""


def _fixed_width(parser: argparse.ArgumentParser) -> None:
    """Help at a fixed width, whatever the terminal."""
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH,
                                               max_help_position=32)


def cli_markdown() -> str:
    """The reference page: the overview, then each command's ``--help``."""
    parser = build_parser()
    _fixed_width(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = [HEADER, "```text", parser.format_help().rstrip(), "```", ""]
    for name, p in sub.choices.items():
        _fixed_width(p)
        out += [f"## `imat-kit {name}`", "", "```text", p.format_help().rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(cli_markdown(), end="")
