"""A folder's content as one hash."""

import hashlib


def tree_digest(folder):
    """SHA-256 over the names and bytes of every file under ``folder``, in path order."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()
