"""Jobs with dependencies on a set of devices: the (model, fold) trainings and predictions.

With one slot (no ``--gpus``) the jobs run one after another in this process, in their order.
With several device ids each job runs on one free device (its ``device`` argument; a job that
starts a process sets ``CUDA_VISIBLE_DEVICES`` to it), as many at once as there are devices;
a ready job starts in the order the jobs were given, so each fold's predictions follow its
training as soon as a device is free. A job that fails stops the jobs that depend on it, and
nothing else: the others run to their end, then :func:`run_jobs` raises one error listing every
failure and every job left out because of one (each with its log).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imat_kit.errors import KitError


@dataclass
class Job:
    """``run(device)`` does the work (``device`` is a GPU id, or None without ``--gpus``) and
    returns what later steps need; ``after`` names the jobs it needs; ``log`` is where its
    output goes (named in its error)."""

    key: str
    run: Callable[[str | None], object]
    after: tuple[str, ...] = ()
    log: Path | None = None


@dataclass
class Outcome:
    key: str
    status: str  # done, failed, blocked
    device: str | None = None
    result: object = None
    error: str | None = None
    order: int = -1  # when it started (0, 1, …)


@dataclass
class _State:
    outcomes: dict = field(default_factory=dict)
    running: set = field(default_factory=set)
    started: int = 0


def run_jobs(jobs: list[Job], devices: tuple[str, ...] = (), *,
             on_event: Callable[[str, Outcome], None] | None = None) -> dict[str, Outcome]:
    """Run every job; ``on_event(kind, outcome)`` hears ``start``, ``done``, ``failed`` and
    ``blocked``. Returns the outcomes by key when all succeeded, else raises."""
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise KitError("two jobs have the same name", value=keys)
    for j in jobs:
        unknown = [a for a in j.after if a not in keys]
        if unknown:
            raise KitError(f"job {j.key} needs an unknown job", value=unknown[0])
    notify = on_event or (lambda _kind, _outcome: None)
    state = _State()
    if len(devices) <= 1:
        _serial(jobs, devices[0] if devices else None, state, notify)
    else:
        _parallel(jobs, list(devices), state, notify)
    failed = [o for o in state.outcomes.values() if o.status != "done"]
    if failed:
        logs = {j.key: j.log for j in jobs}
        lines = [f"{o.key}: {o.status}" + (f" ({o.error})" if o.error else "")
                 + (f"; its log: {logs[o.key]}" if logs[o.key] and o.status == "failed" else "")
                 for o in failed]
        raise KitError(f"{sum(o.status == 'failed' for o in failed)} job(s) failed; "
                       + " | ".join(lines) + ". Run the same command again to resume")
    return state.outcomes


def _blocked(job: Job, state: _State) -> str | None:
    for a in job.after:
        o = state.outcomes.get(a)
        if o is not None and o.status in ("failed", "blocked"):
            return a
    return None


def _execute(job: Job, device: str | None, state: _State, notify, lock=None) -> None:
    outcome = state.outcomes[job.key]
    try:
        outcome.result = job.run(device)
        outcome.status = "done"
    except KitError as e:
        outcome.status, outcome.error = "failed", str(e)
    except Exception as e:  # a failure stops its dependents only
        outcome.status = "failed"
        outcome.error = f"{type(e).__name__}: {e}"
        if job.log is not None:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "a", encoding="utf-8") as f:
                f.write(traceback.format_exc())
    if lock is None:
        notify(outcome.status, outcome)
    else:
        with lock:
            notify(outcome.status, outcome)


def _start(job: Job, device: str | None, state: _State, notify) -> None:
    state.outcomes[job.key] = Outcome(job.key, "running", device, order=state.started)
    state.started += 1
    notify("start", state.outcomes[job.key])


def _block(job: Job, state: _State, notify) -> bool:
    cause = _blocked(job, state)
    if cause is None:
        return False
    state.outcomes[job.key] = Outcome(job.key, "blocked", error=f"needs {cause}, which did "
                                      "not finish")
    notify("blocked", state.outcomes[job.key])
    return True


def _serial(jobs: list[Job], device: str | None, state: _State, notify) -> None:
    for job in jobs:  # the order given: every job's dependencies come before it
        if any(a not in state.outcomes for a in job.after):
            raise KitError(f"job {job.key} is listed before a job it needs", value=job.after)
        if _block(job, state, notify):
            continue
        _start(job, device, state, notify)
        _execute(job, device, state, notify)


def _parallel(jobs: list[Job], devices: list[str], state: _State, notify) -> None:
    lock = threading.Condition()
    free = list(devices)
    pending = list(jobs)
    threads = []

    def finish(job: Job, device: str) -> None:
        _execute(job, device, state, notify, lock)
        with lock:
            free.append(device)
            free.sort(key=devices.index)
            lock.notify_all()

    with lock:
        while pending or any(t.is_alive() for t in threads):
            progressed = False
            for job in list(pending):
                if _blocked(job, state) is not None:
                    pending.remove(job)
                    _block(job, state, notify)
                    progressed = True
                    continue
                ready = all(state.outcomes.get(a) is not None
                            and state.outcomes[a].status == "done" for a in job.after)
                if ready and free:
                    pending.remove(job)
                    device = free.pop(0)
                    _start(job, device, state, notify)
                    t = threading.Thread(target=finish, args=(job, device), daemon=True)
                    threads.append(t)
                    t.start()
                    progressed = True
            if not progressed:
                lock.wait(timeout=0.5)
    for t in threads:
        t.join()
