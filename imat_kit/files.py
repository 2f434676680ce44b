"""File output that never leaves a half-written file, and what identifies a file or a setting
(content hashes, differences between two records)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_fingerprint(path: str | Path) -> dict:
    """What identifies a file's content: its size and SHA-256 (a copied or touched file keeps
    its fingerprint; a retrained checkpoint at the same path does not)."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": p.stat().st_size, "sha256": h.hexdigest()}


def json_fingerprint(value: object) -> str:
    """SHA-256 of a JSON-able value, independent of dict order."""
    import hashlib
    import json

    text = json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def describe_differences(recorded: dict, current: dict, keys: Iterable[str] | None = None
                         ) -> list[str]:
    """``"key: was A, now B"`` for every key (of ``keys``, default: both dicts') whose value
    differs between what an earlier run recorded and the current run."""
    keys = list(keys) if keys is not None else sorted(set(recorded) | set(current))
    out = []
    for k in keys:
        a, b = recorded.get(k), current.get(k)
        if a != b:
            out.append(f"{k}: was {_shown(a)}, now {_shown(b)}")
    return out


def _shown(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 70 else text[:67] + "..."
