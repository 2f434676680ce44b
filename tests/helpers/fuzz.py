"""The fuzz suite's mutations and its contract (tests/fuzz): from a valid file of each kind,
hypothesis draws a mutation — bytes (flipped, inserted, deleted, cut off), lines (dropped,
doubled, swapped), one field (a CSV cell, a JSON value) replaced by a token from
:data:`TOKENS`/:data:`JSON_VALUES` or by drawn text — and the contract says what any command
or reader may answer: success, or one line naming the file (and its line where it has one),
exit 2, nothing written.

``IMAT_FUZZ_LOG=FILE``: each case's outcome is appended to FILE (a JSON line: the kind, the
mutation, ``ok``/``refused``/the violation), and a violation is recorded instead of failing,
so that a long run (``make fuzz``) reports every failure it meets, not only the first."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import time
import traceback
from pathlib import Path

from hypothesis import strategies as st

#: tokens a CSV cell or a text is replaced by: odd digits (superscript, Arabic-Indic,
#: full-width), huge numbers, signs, spaces, control characters, quotes, separators, encodings
TOKENS = ("", " ", "0", "-1", "+3", "1.5", "1e3", " 7 ", "²", "١٢", "３", "9" * 20, "9" * 400,
          "9" * 5000, "NaN", "inf", "-inf", "\x00", "a\x00b", "\ufeff", "\t", '"', '""', ",",
          "\n", "\r", "é", "null", "true", "[]", "{}", "x" * 300, "1 2", "0x10", "1_000",
          "1,2", "3_1", "1_2_3", "4,5,6", "99_1,2", "1 1", "1\n2", "\\", "/", "../x", "😀")
#: values a JSON value is replaced by
JSON_VALUES = (None, True, False, 0, -1, 1, 1.5, -0.5, 2, 10 ** 20, 10 ** 400, 1e308,
               float("nan"), float("inf"), "0.95", "", "²", "x", "a\x00b", [], {}, [[]],
               [1, 2], [[1, 2]], {"a": 1}, [None], ["0.5"], [True], "9" * 5000)
DEEP = "[" * 100_000 + "]" * 100_000


@st.composite
def byte_mutation(draw, data: bytes) -> tuple[bytes, str]:
    """One change to a file's bytes, and its description."""
    kind = draw(st.sampled_from(["flip", "insert", "delete", "cut", "bad_utf8", "nul"]))
    n = len(data)
    at = draw(st.integers(0, max(n - 1, 0)))
    if kind == "flip":
        b = draw(st.integers(0, 255))
        return data[:at] + bytes([b]) + data[at + 1:], f"byte {at} → {b}"
    if kind == "insert":
        ins = draw(st.binary(min_size=1, max_size=8))
        return data[:at] + ins + data[at:], f"insert {ins!r} at {at}"
    if kind == "delete":
        k = draw(st.integers(1, 64))
        return data[:at] + data[at + k:], f"delete {k} bytes at {at}"
    if kind == "cut":
        return data[:at], f"cut at {at}"
    if kind == "bad_utf8":
        return data[:at] + b"\xff\xfe" + data[at:], f"invalid UTF-8 at {at}"
    return data[:at] + b"\x00" + data[at:], f"NUL at {at}"


@st.composite
def line_mutation(draw, data: bytes) -> tuple[bytes, str]:
    """Lines dropped, doubled, swapped, or one replaced by drawn text or a deep nesting."""
    lines = data.split(b"\n")
    kind = draw(st.sampled_from(["drop", "double", "swap", "replace", "deep", "long"]))
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    if kind == "drop":
        del lines[i]
    elif kind == "double":
        lines.insert(i, lines[i])
    elif kind == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "replace":
        lines[i] = draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
    elif kind == "deep":
        lines[i] = DEEP.encode()
    else:
        lines[i] = lines[i] * 50
    return b"\n".join(lines), f"line {i + 1}: {kind}" + (f" with {j + 1}" if kind == "swap"
                                                         else "")


@st.composite
def csv_cell_mutation(draw, text: str) -> tuple[bytes, str]:
    """One cell of a CSV (header included) replaced by a token or drawn text."""
    rows = list(csv.reader(io.StringIO(text)))
    r = draw(st.integers(0, len(rows) - 1))
    if not rows[r]:
        return text.encode(), "no change"
    c = draw(st.integers(0, len(rows[r]) - 1))
    new = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=12)))
    rows[r][c] = new
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass"), f"row {r + 1} col {c + 1} → {new!r}"


def _paths(v: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(v, dict):
        for k, x in list(v.items())[:50]:
            out += _paths(x, (*prefix, k))
    elif isinstance(v, list):
        for k, x in list(enumerate(v))[:20]:
            out += _paths(x, (*prefix, k))
    return out


def _set(v: object, path: tuple, new: object) -> object:
    if not path:
        return new
    v[path[0]] = _set(v[path[0]], path[1:], new)
    return v


@st.composite
def json_mutation(draw, doc: object) -> tuple[str, str]:
    """One value of a JSON document (at any depth) replaced, or a key dropped."""
    doc = json.loads(json.dumps(doc))
    path = draw(st.sampled_from(_paths(doc)))
    if path and draw(st.booleans()) and isinstance(_get(doc, path[:-1]), dict):
        del _get(doc, path[:-1])[path[-1]]
        return json.dumps(doc), f"drop {list(path)}"
    new = draw(st.one_of(st.sampled_from(JSON_VALUES), st.text(max_size=12),
                         st.integers(-10 ** 6, 10 ** 6), st.floats(allow_nan=False)))
    return json.dumps(_set(doc, path, new)), f"{list(path)} → {str(new)[:40]!r}"


def _get(v: object, path: tuple) -> object:
    for k in path:
        v = v[k]
    return v


@st.composite
def jsonl_mutation(draw, text: str) -> tuple[bytes, str]:
    """One line of a JSON-lines file mutated as :func:`json_mutation`."""
    lines = text.split("\n")
    i = draw(st.integers(0, max(len([x for x in lines if x]) - 1, 0)))
    new, what = draw(json_mutation(json.loads(lines[i])))
    lines[i] = new
    return "\n".join(lines).encode("utf-8", "surrogatepass"), f"line {i + 1}: {what}"


def any_mutation(kind: str, data: bytes):
    """Every mutation that fits a file of ``kind`` (``csv``, ``json``, ``jsonl``)."""
    text = data.decode("utf-8")
    fields = {"csv": csv_cell_mutation(text), "json": json_mutation(json.loads(text))
              if kind == "json" else None, "jsonl": jsonl_mutation(text)
              if kind == "jsonl" else None}[kind]
    if kind == "json":
        fields = fields.map(lambda t: (t[0].encode("utf-8", "surrogatepass"), t[1]))
    return st.one_of(byte_mutation(data), line_mutation(data), fields, fields)


def copy_data(data: Path, to: Path) -> Path:
    """A data folder whose files can be changed: the small files copied, the images linked."""
    to.mkdir(parents=True)
    for p in data.iterdir():
        if p.is_dir() and p.name in ("train", "test"):
            (to / p.name).symlink_to(p)
        elif p.is_dir():
            shutil.copytree(p, to / p.name)
        else:
            shutil.copy(p, to / p.name)
    return to


# --- running a command, and the contract ----------------------------------------------------

def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``imat-kit ARGV`` in this process: exit code, stdout, stderr. An exception that is not
    the kit's own error propagates (a traceback: the contract broken)."""
    from imat_kit.cli.commands import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*argv, "--quiet"])
    return rc, out.getvalue(), err.getvalue()


def _leftovers(folders: list[Path]) -> list[str]:
    return [str(p) for d in folders if d.exists() for p in d.rglob(".*.tmp")]


class Violation(AssertionError):
    pass


def check(kind: str, what: str, file: Path, call, *, outputs: tuple[Path, ...] = (),
          ok: tuple[int, ...] = (0,), seconds: float = 30.0) -> str:
    """Run ``call`` (returns ``(exit code, stdout, stderr)`` or raises) and check the
    contract; returns ``ok`` or ``refused``. A violation raises :class:`Violation` (or, under
    ``IMAT_FUZZ_LOG``, is logged)."""
    t0 = time.perf_counter()
    outcome, problem = "ok", None
    try:
        rc, _, err = call()
        lines = [x for x in err.splitlines() if x.strip()]
        if rc == 2:
            outcome = "refused"
            if len(lines) != 1:
                problem = f"exit 2 with {len(lines)} lines on stderr: {err[-400:]!r}"
            elif file.name not in lines[0]:
                problem = f"exit 2 without naming {file.name}: {lines[0][:300]!r}"
            else:
                written = [str(o) for o in outputs if o.exists()]
                if written:
                    problem = f"exit 2 but wrote {written}"
        elif rc not in ok:
            problem = f"exit {rc}: {err[-400:]!r}"
        left = _leftovers(sorted({o.parent for o in outputs}))
        if left and problem is None:
            problem = f"temporary files left: {left}"
    except Violation:
        raise
    except Exception as e:  # anything but the kit's own error breaks the contract
        from imat_kit.errors import KitError

        if isinstance(e, KitError):
            outcome = "refused"
            if file.name not in str(e):
                problem = f"KitError without naming {file.name}: {str(e)[:300]!r}"
        else:
            problem = "traceback: " + "".join(
                traceback.format_exception_only(type(e), e)).strip()[:400]
            problem += " @ " + " < ".join(
                f"{Path(f.filename).name}:{f.lineno}"
                for f in traceback.extract_tb(e.__traceback__)[-3:][::-1])
    spent = time.perf_counter() - t0
    if problem is None and spent > seconds:
        problem = f"took {spent:.1f} s (bound {seconds:.0f} s)"
    log = os.environ.get("IMAT_FUZZ_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "mutation": what, "outcome": outcome,
                                "problem": problem, "seconds": round(spent, 3)}) + "\n")
        return outcome
    if problem is not None:
        raise Violation(f"{kind} [{what}]: {problem}")
    return outcome
