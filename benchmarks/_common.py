"""Helpers for the benchmark scripts: timing, peak memory of a process tree, machine facts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    return (f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.machine()}")


def best_of(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (the least disturbed by a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its direct children (the conversion's worker pool)."""
    total = 0
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def run_measured(cmd: list[str], **popen) -> tuple[float, float]:
    """Run ``cmd`` (``popen``: e.g. ``stdout=``); return (wall seconds, peak resident GiB of
    it and its workers together)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss_kib(proc.pid))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    wall = time.perf_counter() - t
    stop.set()
    th.join()
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit code {rc}")
    return wall, peak / 1024**2
