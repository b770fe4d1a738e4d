"""``fieldwatch ingest …``: run an ingest worker from settings until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from fwcore.redact import redact_logging

app = typer.Typer(help="Ingest: MQTT telemetry into the database.", no_args_is_help=True)
log = logging.getLogger(__name__)


@app.callback()
def _group() -> None:
    """Ingest: MQTT telemetry into the database."""


@app.command("run")
def run(
    client_id: Annotated[str | None, typer.Option(help="MQTT client id (default: settings.ingest_client_id).")] = None,
    metrics_port: Annotated[int, typer.Option(help="Serve /metrics, /healthz and /readyz on this port (0: off).")] = 0,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "0.0.0.0",
) -> None:
    """Consume telemetry and status from MQTT and commit it; stops cleanly on Ctrl-C or SIGTERM."""
    from fwcore.settings import SettingsError, load_settings
    from fwcore.tls import TlsConfigError
    from ingest.errors import IngestError
    from ingest.hold import HoldLimits
    from ingest.validate import Limits
    from ingest.worker import IngestWorker

    try:
        s = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        redact_logging()
    try:
        worker = IngestWorker(
            s.database_url,
            s.mqtt_url,
            client_id=client_id or s.ingest_client_id,
            protocol=s.mqtt_protocol,
            share_group=s.ingest_share_group if s.mqtt_protocol == "5" else None,
            batch_max_points=s.ingest_batch_max_points,
            batch_max_wait_ms=s.ingest_batch_max_wait_ms,
            limits=Limits.from_settings(s),
            hold=HoldLimits.from_settings(s),
            silence_timeout_s=s.gateway_silence_timeout_s,
            tls=s.mqtt_tls,
        )
    except TlsConfigError as exc:  # FIELDWATCH_MQTT_CA_FILE & co. name a file that cannot be used
        typer.echo(f"ingest could not start: MQTT TLS: {exc}", err=True)
        raise typer.Exit(2) from None
    done = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    health = None
    if metrics_port:
        from ingest.health import HealthServer, database_check, storage_check

        checks = {
            "broker": lambda: None if worker.broker_connected else "not connected to the MQTT broker",
            "database": database_check(s.database_url),
            "writer": lambda: None if worker.running else "writer thread not running",
        }
        storage = storage_check(s.database_url)
        health = HealthServer(checks, metrics_port, metrics_host, storage=storage).start()
        log.info("serving /healthz /readyz /metrics on port %d", health.port)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
    except IngestError as exc:
        typer.echo(f"ingest could not start: {exc}", err=True)
        raise typer.Exit(1) from None
    log.info("ingest worker %s running; Ctrl-C to stop", worker.client_id)
    try:
        while not done.wait(1.0):
            if not worker.running:
                typer.echo("ingest writer stopped unexpectedly", err=True)
                raise typer.Exit(1)
    finally:
        worker.stop()
        if health is not None:
            health.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("ingest worker stopped: %s", worker.stats.as_dict())
