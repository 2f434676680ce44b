"""Quiet-aware progress bars, and the kit's process-parallel map (with a bar over items)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(it: Iterable[T], *, desc: str, total: int | None = None, quiet: bool = False,
             unit: str = "it") -> Iterable[T]:
    """A tqdm bar on stderr, silent when ``quiet``."""
    return tqdm(it, desc=desc, total=total, disable=quiet, unit=unit, leave=False,
                dynamic_ncols=True, mininterval=0.5)


def default_workers() -> int:
    """Worker processes for the kit's parallel steps: up to 2 (the target machines' cores)."""
    return min(2, os.cpu_count() or 1)


def parallel_map(fn, items: list, kwargs: dict, *, workers: int | None = None,
                 desc: str = "", quiet: bool = False, chunk: int = 64) -> list:
    """``fn(items_chunk, kwargs)`` over chunks of ``items`` (in order), in ``workers`` processes
    (0 or 1: in this one), with a progress bar over items. ``fn`` must be picklable and
    return one result per item."""
    from concurrent.futures import ProcessPoolExecutor

    workers = default_workers() if workers is None else workers
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    out: list = []
    with tqdm(total=len(items), desc=desc, disable=quiet, unit="img", leave=False,
              dynamic_ncols=True, mininterval=0.5) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for c in chunks:
                out += fn(c, kwargs)
                bar.update(len(c))
            return out
        with ProcessPoolExecutor(workers) as pool:
            for c, res in zip(chunks, pool.map(fn, chunks, [kwargs] * len(chunks))):
                out += res
                bar.update(len(c))
    return out
