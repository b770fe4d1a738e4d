"""The job protocol, and the one scheduler that runs jobs: an APScheduler on the elected leader only.

Several ``fieldwatch serve`` processes may run for availability; each starts a
:class:`LeaderScheduler`, but only the one holding a PostgreSQL session advisory
lock runs jobs. If the leader dies its connection closes, the lock is released,
and another process takes over at its next election attempt.

Jobs are declared as :class:`Job` entries; each domain package contributes its own
(partition upkeep, rule retraining, SLA escalation, …) as plain callables that take the
database URL, so the job logic stays in the package and is testable without a scheduler.
The application gathers them (:func:`fieldwatch.jobs.default_jobs`) and hands the list to
:class:`LeaderScheduler`: the foundation never imports a domain package.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

log = logging.getLogger(__name__)

#: Advisory lock key of the scheduler leader ("fieldwatch scheduler").
LEADER_LOCK_KEY = 0x6677_7363


@dataclass(frozen=True)
class Job:
    """One periodic job: ``func(db_url)`` every ``seconds`` (or on a cron ``trigger`` dict)."""

    id: str
    func: Callable[[str], Any]
    seconds: float | None = None
    cron: dict[str, Any] | None = None
    run_at_start: bool = False

    def trigger(self) -> Any:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        if self.cron is not None:
            return CronTrigger(**self.cron, timezone="UTC")
        if self.seconds is None:
            raise ValueError(f"job {self.id}: give seconds or cron")
        return IntervalTrigger(seconds=self.seconds)


@dataclass
class LeaderScheduler:
    """Runs ``jobs`` while this process holds the leader lock; tries to become leader every ``elect_s``."""

    db_url: str
    jobs: list[Job]
    elect_s: float = 5.0
    is_leader: bool = False
    runs: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    _conn: psycopg.Connection | None = None
    _scheduler: Any = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Start the election loop in a thread (jobs start once elected)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._elect_loop, name="scheduler-elect", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop jobs and release leadership; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._step_down()

    def _wrap(self, job: Job) -> Callable[[], None]:
        def run() -> None:
            try:
                job.func(self.db_url)
                self.runs[job.id] = self.runs.get(job.id, 0) + 1
            except Exception:
                self.errors[job.id] = self.errors.get(job.id, 0) + 1
                log.exception("scheduled job %s failed; it runs again at its next time", job.id)

        return run

    def _elect_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.is_leader:
                    self._try_lead()
                elif self._conn is None or self._conn.closed or self._conn.broken:
                    log.warning("scheduler lost its database connection; stepping down")
                    self._step_down()
                else:
                    self._conn.execute("SELECT 1")  # notice a dead connection promptly
            except psycopg.Error as exc:
                log.warning("scheduler election: %s", exc)
                self._step_down()
            self._stop.wait(self.elect_s)

    def _try_lead(self) -> None:
        conn = psycopg.connect(self.db_url, autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
        if row is None or not row[0]:
            conn.close()
            return
        from apscheduler.schedulers.background import BackgroundScheduler

        self._conn = conn
        self._scheduler = BackgroundScheduler(timezone="UTC")
        for job in self.jobs:
            kwargs: dict[str, Any] = {"id": job.id, "max_instances": 1, "coalesce": True}
            if job.run_at_start:
                from datetime import UTC, datetime

                kwargs["next_run_time"] = datetime.now(UTC)
            self._scheduler.add_job(self._wrap(job), job.trigger(), **kwargs)
        self._scheduler.start()
        self.is_leader = True
        log.info("scheduler: this process is the leader (%d jobs)", len(self.jobs))

    def _step_down(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._conn is not None:
            try:
                self._conn.close()  # closing the session releases the advisory lock
            except psycopg.Error:
                pass
            self._conn = None
        self.is_leader = False
