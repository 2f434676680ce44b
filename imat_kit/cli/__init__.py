"""The ``imat-kit`` command line (``commands``), the demo (``demo``) and the terminal output
both share (``formatting``)."""

from imat_kit.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
