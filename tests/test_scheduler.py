"""The leader-elected scheduler: one leader among many, jobs run there, leadership moves on stop."""

from __future__ import annotations

import time

from fwcore.jobs import Job, LeaderScheduler


def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_one_leader_runs_jobs_and_leadership_moves_when_it_stops(db_url: str) -> None:
    """Of two schedulers on one database only one runs jobs; when it stops the other takes over."""
    calls: list[str] = []
    jobs = [Job("tick", lambda url: calls.append(url), seconds=0.2, run_at_start=True)]
    a = LeaderScheduler(db_url, jobs=jobs, elect_s=0.2)
    b = LeaderScheduler(db_url, jobs=jobs, elect_s=0.2)
    a.start()
    assert _wait(lambda: a.is_leader)
    b.start()
    try:
        assert _wait(lambda: len(calls) >= 2)
        time.sleep(0.5)
        assert a.is_leader and not b.is_leader
        assert calls[0] == db_url
        a.stop()
        assert _wait(lambda: b.is_leader)
        before = b.runs.get("tick", 0)
        assert _wait(lambda: b.runs.get("tick", 0) > before)
    finally:
        a.stop()
        b.stop()


def test_a_failing_job_is_counted_and_keeps_its_schedule(db_url: str) -> None:
    """A job that raises is logged and counted, and runs again at its next time."""

    def boom(url: str) -> None:
        raise RuntimeError("boom")

    s = LeaderScheduler(db_url, jobs=[Job("boom", boom, seconds=0.1, run_at_start=True)], elect_s=0.1)
    s.start()
    try:
        assert _wait(lambda: s.errors.get("boom", 0) >= 2)
    finally:
        s.stop()
