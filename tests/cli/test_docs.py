"""The documentation runs as written: every command in the README parses as the parser
expects (options, choices, configs and make targets that exist), every `imat-kit` option the
docs name exists, and docs/cli.md is the parser's current help."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from imat_kit.cli.commands import build_parser
from imat_kit.cli.reference import cli_markdown
from tests.helpers import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))


def _code_lines(text: str) -> list[str]:
    """The lines of the page's ```bash / ``` blocks, continuation lines joined, comments
    dropped."""
    out = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang not in ("", "bash", "sh"):
            continue
        joined = re.sub(r"\\\n\s*", " ", block)
        out += [line.split(" # ")[0].strip() for line in joined.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    return out


def _readme_commands(page: str = "README.md") -> list[list[str]]:
    lines = _code_lines((REPO / page).read_text())
    return [shlex.split(x) for x in lines]


def test_readme_is_short():
    assert (REPO / "README.md").stat().st_size <= 12 * 1024


@pytest.mark.parametrize("page", ["README.md", "docs/run.md"])
def test_readme_commands_parse_as_written(page):
    """The README's real run is the one `imat-kit run` command; docs/run.md has it too and
    the same run step by step."""
    parser = build_parser()
    commands = _readme_commands(page)
    kit = [c for c in commands if c[0] == "imat-kit"]
    make = [c for c in commands if c[0] == "make"]
    if page == "README.md":
        assert [c[1] for c in kit] == ["run"] and "--folds" in kit[0]
        assert [c[1] for c in make] == ["demo", "test"]
    else:
        assert {c[1] for c in kit} >= {"run", "prepare", "train", "predict", "evaluate", "tune",
                                       "ensemble", "submit", "report"}
    for c in kit:
        args = parser.parse_args(c[1:])  # exits (fails the test) on an unknown option or value
        config = getattr(args, "config", None)
        if config:
            assert (REPO / config).is_file(), config
    for c in make:
        r = subprocess.run(["make", "-n", "-C", str(REPO), c[1]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_readme_links_exist():
    text = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert (REPO / target).exists(), target
    for config in re.findall(r"`((?:tiny/)?[a-z0-9_]+_imat[a-z0-9_]*\.py)`", text):
        assert (REPO / "configs" / config).is_file(), config


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_docs_name_only_existing_commands_and_options(page):
    """Every `imat-kit COMMAND --option` a page shows is one the parser has (placeholders such
    as CONFIG or […] are allowed: only the command and the option names are checked)."""
    if page.name == "cli.md":
        return
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = page.read_text()
    snippets = _code_lines(text) + re.findall(r"`(imat-kit [^`]+)`", text)
    for snippet in snippets:
        for m in re.finditer(r"imat-kit ([a-z][a-z-]*)((?: [^|;]*)?)", snippet):
            name, rest = m.group(1), m.group(2)
            assert name in sub.choices, f"{page.name}: no command {name!r} in `{snippet}`"
            known = {o for a in sub.choices[name]._actions for o in a.option_strings}
            for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                assert opt in known, f"{page.name}: imat-kit {name} has no {opt} (`{snippet}`)"


def test_links_between_docs_exist():
    for page in [*DOCS, REPO / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_cli_reference_is_current():
    assert (REPO / "docs" / "cli.md").read_text() == cli_markdown(), \
        "docs/cli.md is out of date: run `make docs`"
