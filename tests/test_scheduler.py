"""The leader-elected scheduler: one leader among many, jobs run there, leadership moves on stop."""

from __future__ import annotations

import time

from fwcore.jobs import Job, LeaderScheduler
from tests.support.waits import wait_until


def test_one_leader_runs_jobs_and_leadership_moves_when_it_stops(db_url: str) -> None:
    """Of two schedulers on one database only one runs jobs; when it stops the other takes over."""
    calls: list[str] = []
    jobs = [Job("tick", lambda url: calls.append(url), seconds=0.2, run_at_start=True)]
    a = LeaderScheduler(db_url, jobs=jobs, elect_s=0.2)
    b = LeaderScheduler(db_url, jobs=jobs, elect_s=0.2)
    a.start()
    wait_until(lambda: a.is_leader)
    b.start()
    try:
        wait_until(lambda: len(calls) >= 2)
        # Time itself must pass: b gets two more election rounds (0.2 s each) in which it must not take over.
        time.sleep(0.5)
        assert a.is_leader and not b.is_leader
        assert calls[0] == db_url
        a.stop()
        wait_until(lambda: b.is_leader)
        before = b.runs.get("tick", 0)
        wait_until(lambda: b.runs.get("tick", 0) > before)
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
        wait_until(lambda: s.errors.get("boom", 0) >= 2)
    finally:
        s.stop()
