"""One way to read a field of a user's file: a number, an id, a text, a file's text, a JSON
document or line. Every reader of the kit goes through these, so that no input ends in a
traceback: what they refuse becomes a :class:`KitError` naming the file, the row or line and
the value.

- **Integers** are ASCII digits only (``str.isdigit`` also accepts ``²`` and ``١``, which
  ``int`` refuses), at most :data:`MAX_DIGITS` of them (no 5,000-digit Height reaches
  ``int``), within the range the field allows.
- **Texts** (ids, names) hold no control character (a NUL byte in an image id would reach the
  file system).
- **Files** are read as UTF-8 (a byte-order mark allowed); bytes that are not UTF-8 are
  reported as ``FILE:LINE: not valid UTF-8`` with the offending bytes.
- **JSON** is parsed with bounded nesting (the parser's own bound, caught: a line nested
  100,000 deep is refused at its line); numbers must be JSON numbers (not ``"0.95"``, not
  ``true``) where a reader asks for numbers (:func:`is_number`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from imat_kit.errors import KitError

#: the most digits an integer field may have (ids and sizes fit far below 2**63)
MAX_DIGITS = 18
#: the largest image side a file may give (JPEG's limit; the competitions' largest is 10,717)
MAX_SIDE = 65_535
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_digits(text: object) -> bool:
    """``text`` is 1 to :data:`MAX_DIGITS` ASCII digits (nothing else: no sign, no space)."""
    return (isinstance(text, str) and 0 < len(text) <= MAX_DIGITS and text.isascii()
            and text.isdigit())


def int_or_none(text: object, lo: int = 0, hi: int = 10 ** MAX_DIGITS) -> int | None:
    """The integer a field's text (spaces around allowed) writes, or None when it is not
    ASCII digits or outside ``lo``…``hi``."""
    if not isinstance(text, str):
        return None
    t = text.strip()
    if not is_digits(t):
        return None
    v = int(t)
    return v if lo <= v <= hi else None


def int_field(text: object, *, what: str, file: str | None = None, row: int | None = None,
              lo: int = 0, hi: int = 10 ** MAX_DIGITS) -> int:
    """:func:`int_or_none`, or a :class:`KitError` naming the field."""
    v = int_or_none(text, lo, hi)
    if v is None:
        rng = f"{lo}…{hi}" if hi < 10 ** MAX_DIGITS else f"at least {lo}"
        raise KitError(f"{what} must be an integer written in ASCII digits ({rng})",
                       file=file, row=row, value=text)
    return v


def is_int(x: object) -> bool:
    """A JSON integer (not a boolean, not a text)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """A finite JSON number that a float can hold (not a boolean, not a text such as
    ``"0.95"``, not an integer of 400 digits, which ``float`` and ``math`` would raise on)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return abs(x) <= sys.float_info.max if isinstance(x, int) else math.isfinite(x)


def has_control(text: str) -> bool:
    """``text`` holds a control character (NUL, tab, newline, escape, …)."""
    return bool(_CONTROL.search(text))


def text_field(text: str, *, what: str, file: str | None = None, row: int | None = None
               ) -> str:
    """``text`` as given, refused when it holds a control character."""
    if has_control(text):
        raise KitError(f"{what} holds a control character", file=file, row=row, value=text)
    return text


def decode(raw: bytes, *, file: str, first_line: int = 1) -> str:
    """UTF-8 bytes (a byte-order mark allowed) as text; otherwise a :class:`KitError`
    ``FILE:LINE: not valid UTF-8`` (``first_line``: the line ``raw`` starts on)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = first_line + raw.count(b"\n", 0, e.start)
        raise KitError("not valid UTF-8", file=file, row=line,
                       value=raw[e.start:e.start + 4]) from None


def first_bad_utf8_line(path: str | Path) -> tuple[int, bytes] | None:
    """The first line (1-based) of a file that is not UTF-8, with its first bad bytes."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            try:
                line.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                return n, line[e.start:e.start + 4]
    return None


def read_text(path: str | Path, *, file: str | None = None) -> str:
    """A file's text (:func:`decode`)."""
    return decode(Path(path).read_bytes(), file=file or str(path))


def loads(text: str | bytes, *, what: str, file: str, row: int | None = None) -> object:
    """A JSON document or line; malformed text is a :class:`KitError` at its line (``row``:
    the line the text starts on), and so is nesting past the parser's bound (Python's
    recursion limit, about 1,000 levels: the kit's files nest 5 deep)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        line = (row or 1) + e.lineno - 1
        raise KitError(f"{what} is not valid JSON (line {line}, column {e.colno}): {e.msg}",
                       file=file, row=line) from None
    except UnicodeDecodeError:
        raise KitError(f"{what} is not valid UTF-8", file=file, row=row) from None
    except RecursionError:
        raise KitError(f"{what} nests arrays/objects too deep to read", file=file,
                       row=row) from None


def key_line(text: str, key: str) -> int | None:
    """The 1-based line of a JSON file where the object key ``key`` first appears."""
    at = text.find(f'"{key}":')
    return text.count("\n", 0, at) + 1 if at >= 0 else None
