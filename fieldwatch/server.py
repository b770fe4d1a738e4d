"""App wiring: the server-side services, started and stopped together.

Ingest commits telemetry and then hands the committed points to the rule
evaluator (an after-commit hook), so an alarm is never raised on data that was
rolled back. The rule evaluator commits alarms and NOTIFYs ``fw_events``; the
ticketing service LISTENs, opens tickets and dispatches. The API serves it all.
Each piece can run alone (``fieldwatch serve --no-…``), so they scale and fail
independently; the demo runs them all in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from fwcore.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServerStack:
    """Ingest (+ live rules), ticketing and the API for one set of settings."""

    settings: Settings
    ingest: bool = True
    ticketing: bool = True
    api: bool = True
    scheduler: bool = True
    ingest_client_id: str | None = None
    worker: Any = None
    evaluator: Any = None
    dispatcher: Any = None
    leader: Any = None
    api_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _api_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _api_task: asyncio.Task | None = None
    _state: str = "new"

    async def start(self) -> None:
        """Start the chosen services; returns once ingest is subscribed and the API listens."""
        if self._state != "new":
            return
        self._state = "running"
        s = self.settings
        try:
            if self.ticketing:
                from ticketing import GreatCircleTravel, TicketingService

                travel = GreatCircleTravel(speed_kmh=s.travel_speed_kmh, detour_factor=s.travel_detour_factor)
                self.dispatcher = TicketingService(s.database_url, travel=travel)
                await asyncio.to_thread(self.dispatcher.start)
            if self.ingest:
                from fwcore.gctune import tune_gc
                from ingest import IngestWorker, Limits
                from ingest.hold import HoldLimits
                from rules import RuleEvaluator

                tune_gc()  # full GC pauses were the alarm-latency tail (docs/rules.md)
                self.evaluator = RuleEvaluator(s.database_url)
                await asyncio.to_thread(self.evaluator.warm)  # bind rules before the first batch (docs/rules.md)
                share = s.ingest_share_group if s.mqtt_protocol == "5" else None
                self.worker = IngestWorker(
                    s.database_url,
                    s.mqtt_url,
                    client_id=self.ingest_client_id or s.ingest_client_id,
                    protocol=s.mqtt_protocol,
                    share_group=share,
                    batch_max_points=s.ingest_batch_max_points,
                    batch_max_wait_ms=s.ingest_batch_max_wait_ms,
                    on_commit=[self.evaluator.process],
                    limits=Limits.from_settings(s),
                    hold=HoldLimits.from_settings(s),
                    silence_timeout_s=s.gateway_silence_timeout_s,
                    tls=s.mqtt_tls,
                )
                await asyncio.to_thread(self.worker.start)
            if self.scheduler:
                from fieldwatch.jobs import default_jobs
                from fwcore.jobs import LeaderScheduler

                self.leader = LeaderScheduler(s.database_url, jobs=default_jobs())
                self.leader.start()
            if self.api:
                from fieldwatch.api import run_api

                self._api_task = asyncio.create_task(run_api(s, ready=self.api_ready, stop=self._api_stop))
                ready = asyncio.create_task(self.api_ready.wait())
                done, _ = await asyncio.wait({ready, self._api_task}, return_when=asyncio.FIRST_COMPLETED)
                if self._api_task in done:
                    ready.cancel()
                    self._api_task.result()  # raises the server's start-up error
                    raise RuntimeError(f"the API stopped during start-up (is port {s.api_port} in use?)")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop everything that was started, newest first; safe to call twice."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        if self._api_task is not None:
            self._api_stop.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._api_task, timeout=10)
        if self.leader is not None:
            await asyncio.to_thread(self.leader.stop)
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)
        if self.evaluator is not None:
            self.evaluator.close()
        if self.dispatcher is not None:
            await asyncio.to_thread(self.dispatcher.stop)

    async def __aenter__(self) -> ServerStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_server(
    settings: Settings,
    *,
    ingest: bool = True,
    ticketing: bool = True,
    api: bool = True,
    scheduler: bool = True,
    migrate_first: bool = True,
) -> None:
    """Run the chosen services until SIGINT/SIGTERM (``fieldwatch serve``)."""
    from fwcore.db import wait_for_db
    from ingest.schema import migrate

    await asyncio.to_thread(wait_for_db, settings.database_url, 60)
    if migrate_first:
        applied = await asyncio.to_thread(migrate, settings.database_url)
        for name in applied:
            log.info("applied migration %s", name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ServerStack(settings, ingest=ingest, ticketing=ticketing, api=api, scheduler=scheduler):
        parts = [
            name
            for name, on in (("ingest+rules", ingest), ("ticketing", ticketing), ("api", api), ("scheduler", scheduler))
            if on
        ]
        log.info("running: %s", ", ".join(parts))
        if api:
            scheme = "https" if settings.api_tls_cert_file is not None else "http"
            log.info("API on %s://%s:%s (OpenAPI at /docs)", scheme, settings.api_host, settings.api_port)
        await stop.wait()
        log.info("stopping")
