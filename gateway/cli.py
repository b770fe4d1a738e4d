"""``fieldwatch gateway …``: run a gateway from a YAML config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from fwcore.gctune import tune_gc
from fwcore.redact import redact_logging
from fwcore.tls import TlsConfigError
from gateway.agent import Gateway
from gateway.config import load_config
from gateway.errors import ConfigError, GatewayError
from gateway.remote_config import load_effective_config

app = typer.Typer(help="Poll field devices and publish their readings to MQTT.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Poll field devices and publish their readings to MQTT."""


async def _run(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(gateway.stop()))
    await gateway.run_forever()


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Gateway YAML config (see docs/gateway.md).")],
    mqtt_url: Annotated[str | None, typer.Option(help="Broker URL; overrides the config.")] = None,
    mqtt_protocol: Annotated[str | None, typer.Option(help='"5" or "3.1.1"; overrides the config.')] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (/metrics); overrides the config.")
    ] = None,
) -> None:
    """Run the gateway until Ctrl-C / SIGTERM (then it publishes a retained 'offline').

    A config accepted over MQTT (remote config) is saved as <config stem>.remote.yaml beside CONFIG
    and used instead of CONFIG on the next start; delete that file to go back to CONFIG.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logging()  # broker URL passwords never reach the log
    # pymodbus logs every failed request at ERROR; the agent already logs each outage once.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        cfg = load_effective_config(config)  # the last accepted remote config beside it, if any
        gateway = Gateway(
            cfg, mqtt_url=mqtt_url, mqtt_protocol=mqtt_protocol, metrics_port=metrics_port, config_path=config
        )
        tune_gc()  # start-up objects frozen, larger young generation (fwcore/gctune.py: GC was 1/3 of CPU)
        asyncio.run(_run(gateway))
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except TlsConfigError as exc:  # a broker TLS file that cannot be used, found before connecting
        typer.echo(f"{config}: broker TLS: {exc}", err=True)
        raise typer.Exit(2) from None
    except GatewayError as exc:
        typer.echo(f"gateway error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def check(
    config: Annotated[Path, typer.Option("--config", "-c", help="Gateway YAML config to check.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of the table.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds each device gets to connect and answer.")] = 10.0,
) -> None:
    """Validate CONFIG, read every tag of every device once and show the values with their quality.

    Exit code 0: all devices online and all tags good; 1: the config is invalid; 2: some device is
    offline or some tag is not good. Run it on site before leaving.
    """
    from rich.console import Console

    from gateway.check import EXIT_INVALID, render, report_json, run_check

    logging.basicConfig(level="ERROR", format="%(levelname)s %(name)s: %(message)s")
    redact_logging()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        if json_out:
            typer.echo(
                json.dumps(
                    {"source": str(config), "ok": False, "exit_code": EXIT_INVALID, "errors": str(exc).splitlines()}
                )
            )
        else:
            typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    report = asyncio.run(run_check(cfg, timeout=timeout, source=str(config)))
    if json_out:
        typer.echo(json.dumps(report_json(report)))
    else:
        render(report, Console(width=140))
    raise typer.Exit(report.exit_code)


if __name__ == "__main__":  # ``python -m gateway.cli run CONFIG`` (used by tests to SIGKILL a gateway)
    app()
