"""One checked reader per file kind: CSV tables and JSON documents.

Every reader raises :class:`KitError` naming the file (and the row, 1-based with the header as
row 1, where there is one) for a missing file, a 0-byte file, a header without the required
columns, a file without data rows where rows are required, and text that is not CSV or JSON.
Accepted CSV variants, which all read the same: a UTF-8 byte-order mark, CRLF line ends,
every field quoted, columns in any order, extra columns (ignored).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from imat_kit import fields
from imat_kit.errors import KitError

_CSV_ERRORS = (pd.errors.ParserError, UnicodeDecodeError, ValueError)


def _check_file(path: Path, what: str) -> str:
    file = str(path)
    if not path.exists():
        raise KitError(f"file not found (the {what})", file=file)
    if path.is_dir():
        raise KitError(f"a folder, not a file (the {what})", file=file)
    if path.stat().st_size == 0:
        raise KitError(f"file is empty (0 bytes; the {what})", file=file)
    return file


def csv_columns(path: str | Path, *, what: str = "CSV file",
                required: Sequence[str] = ()) -> list[str]:
    """The header of a CSV file (names stripped), checked to hold ``required``."""
    path = Path(path)
    file = _check_file(path, what)
    try:
        cols = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns.tolist()
    except pd.errors.EmptyDataError:
        raise KitError(f"{what} has no header line", file=file) from None
    except _CSV_ERRORS as e:
        raise _unreadable(e, path, what) from None
    cols = [str(c).strip() for c in cols]
    missing = [c for c in required if c not in cols]
    if missing:
        raise KitError(f"header lacks column(s) {', '.join(missing)}; expected "
                       f"{','.join(required)}", file=file, row=1, value=",".join(cols))
    return cols


def read_csv(path: str | Path, *, what: str = "CSV file", required: Sequence[str] = (),
             usecols: Sequence[str] | None = None, rows_required: bool = True) -> pd.DataFrame:
    """A whole CSV file as strings (no NA conversion), header checked; with ``rows_required``
    a file holding only its header is an error."""
    path = Path(path)
    csv_columns(path, what=what, required=required)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                         usecols=_usecols(usecols))
    except _CSV_ERRORS as e:
        raise _unreadable(e, path, what) from None
    df.columns = [str(c).strip() for c in df.columns]
    if rows_required and not len(df):
        raise KitError(f"{what} has a header but no rows", file=str(path), row=2)
    return df


def iter_csv(path: str | Path, *, usecols: Sequence[str], chunksize: int,
             what: str = "CSV file") -> Iterator[pd.DataFrame]:
    """A CSV file in chunks of strings; the header must have been checked with
    :func:`csv_columns`. Parse errors become :class:`KitError`."""
    path = Path(path)
    try:
        reader = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                             usecols=_usecols(usecols), chunksize=chunksize)
        for chunk in reader:
            chunk.columns = [str(c).strip() for c in chunk.columns]
            yield chunk
    except _CSV_ERRORS as e:
        raise _unreadable(e, path, what) from None


def _usecols(names: Sequence[str] | None):
    """Select columns by their stripped names (a header may pad them with spaces)."""
    if names is None:
        return None
    want = set(names)
    return lambda c: str(c).strip() in want


def read_json(path: str | Path, *, what: str = "JSON file") -> object:
    """A JSON document; a missing, empty or malformed file is a :class:`KitError`."""
    return read_json_text(path, what=what)[1]


def read_json_text(path: str | Path, *, what: str = "JSON file") -> tuple[str, object]:
    """:func:`read_json`, with the file's text (to name the line of a key in an error)."""
    path = Path(path)
    file = _check_file(path, what)
    text = fields.read_text(path, file=file)
    return text, fields.loads(text, what=what, file=file)


def _unreadable(e: Exception, path: Path, what: str) -> KitError:
    """A CSV parse error as a :class:`KitError`; bytes that are not UTF-8 at their line."""
    if isinstance(e, UnicodeDecodeError):
        bad = fields.first_bad_utf8_line(path)
        if bad is not None:
            return KitError("not valid UTF-8", file=str(path), row=bad[0], value=bad[1])
    return KitError(f"{what} is not a readable CSV: {_short(e)}", file=str(path))


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
