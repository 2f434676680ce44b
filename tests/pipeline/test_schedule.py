"""The (model, fold) job scheduler on fake device ids: which jobs run, where, in which order,
how many at once, their logs, and a failed job stopping its dependents and nothing else."""

from __future__ import annotations

import threading
import time

import pytest

from imat_kit.errors import KitError
from imat_kit.pipeline.schedule import Job, run_jobs


class Recorder:
    """Jobs that note their device and how many ran at once."""

    def __init__(self, fail: set[str] = frozenset(), sleep: float = 0.0) -> None:
        self.fail, self.sleep = fail, sleep
        self.ran: list[tuple[str, str | None]] = []
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def job(self, key: str, after: tuple[str, ...] = (), log=None) -> Job:
        def run(device):
            with self.lock:
                self.ran.append((key, device))
                self.active += 1
                self.peak = max(self.peak, self.active)
            time.sleep(self.sleep)
            with self.lock:
                self.active -= 1
            if key in self.fail:
                raise RuntimeError(f"{key} broke")
            return f"{key} on {device}"
        return Job(key, run, after, log)


def _folds(rec: Recorder, models=("a", "b"), folds=(0, 1), log_dir=None) -> list[Job]:
    jobs = []
    for m in models:
        for k in folds:
            train = f"train {m} {k}"
            jobs.append(rec.job(train, log=log_dir / f"{m}{k}.log" if log_dir else None))
            jobs += [rec.job(f"predict {m} {k} {s}", (train,)) for s in ("val", "test")]
    return jobs


def test_one_slot_runs_every_job_in_the_given_order():
    rec = Recorder()
    jobs = _folds(rec)
    out = run_jobs(jobs)
    assert [k for k, _ in rec.ran] == [j.key for j in jobs]
    assert all(d is None for _, d in rec.ran) and rec.peak == 1
    assert out["predict b 1 test"].result == "predict b 1 test on None"


def test_jobs_spread_over_the_devices_and_respect_their_dependencies():
    rec = Recorder(sleep=0.2)
    jobs = _folds(rec, folds=(0, 1, 2))
    out = run_jobs(jobs, ("0", "1", "2"))
    assert {o.status for o in out.values()} == {"done"}
    assert rec.peak == 3  # as many at once as there are devices, never more
    assert {d for _, d in rec.ran} == {"0", "1", "2"}
    started = {o.key: o.order for o in out.values()}
    for j in jobs:
        for a in j.after:
            assert started[a] < started[j.key]
    # the first jobs to start are the first trainings, in the order given
    first = sorted(out.values(), key=lambda o: o.order)[:3]
    assert [o.key for o in first] == ["train a 0", "train a 1", "train a 2"]
    assert [o.device for o in first] == ["0", "1", "2"]


@pytest.mark.parametrize("devices", [(), ("0", "1")])
def test_a_failed_job_stops_its_dependents_and_nothing_else(tmp_path, devices):
    rec = Recorder(fail={"train a 1"}, sleep=0.01)
    jobs = _folds(rec, log_dir=tmp_path)
    events = []
    with pytest.raises(KitError) as e:
        run_jobs(jobs, devices, on_event=lambda kind, o: events.append((kind, o.key)))
    ran = {k for k, _ in rec.ran}
    assert "predict a 1 val" not in ran and "predict a 1 test" not in ran
    assert {j.key for j in jobs} - ran == {"predict a 1 val", "predict a 1 test"}
    msg = str(e.value)
    assert "1 job(s) failed" in msg and "train a 1: failed (RuntimeError: train a 1 broke)" in msg
    assert "predict a 1 val: blocked (needs train a 1" in msg and "resume" in msg
    assert str(tmp_path / "a1.log") in msg  # the failed job's log is named ...
    assert "RuntimeError: train a 1 broke" in (tmp_path / "a1.log").read_text()  # ... and holds
    assert ("failed", "train a 1") in events and ("blocked", "predict a 1 test") in events
    assert sum(kind == "done" for kind, _ in events) == len(jobs) - 3


def test_bad_job_lists_are_refused():
    rec = Recorder()
    with pytest.raises(KitError, match="same name"):
        run_jobs([rec.job("x"), rec.job("x")])
    with pytest.raises(KitError, match="unknown job"):
        run_jobs([rec.job("x", ("y",))])
    with pytest.raises(KitError, match="listed before"):
        run_jobs([rec.job("x", ("y",)), rec.job("y")])
