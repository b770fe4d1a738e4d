"""``fieldwatch fleet …``: register clients, sites, gateways and devices from the command line, directly
against the database (no running server needed), one at a time or from a fleet file (YAML or CSV)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fwcore.clidb import cli_connection

app = typer.Typer(
    help="The fleet: clients, sites, gateways and devices — add, list, change, retire, import a file.",
    no_args_is_help=True,
)
clients_app = typer.Typer(help="Clients: add, list, change, retire.", no_args_is_help=True)
sites_app = typer.Typer(help="Sites: add, list, change, retire.", no_args_is_help=True)
gateways_app = typer.Typer(help="Gateways: add, list, change, retire.", no_args_is_help=True)
devices_app = typer.Typer(help="Devices: add, list, change, retire.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
app.add_typer(sites_app, name="sites")
app.add_typer(gateways_app, name="gateways")
app.add_typer(devices_app, name="devices")
out = Console()
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """The fleet: clients, sites, gateways and devices — add, list, change, retire, import a file."""


@contextmanager
def _conn() -> Iterator[Any]:
    """A connection; a refusal from the registry inside the block is one red line and exit 1."""
    with cli_connection(err) as conn:
        yield conn


def _show(rows: list[Any], columns: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{c: getattr(r, c) for c in ("id", *columns)} for r in rows], default=str))
        return
    table = Table("id", *columns)
    for r in rows:
        table.add_row(str(r.id), *(str(getattr(r, c)) for c in columns))
    out.print(table)


def _all(conn: Any, res: Any, **filters: Any) -> list[Any]:
    from ingest import assets

    return list(assets.list_(conn, res, filters=filters).items)


def _given(**fields: Any) -> dict[str, Any]:
    found = {k: v for k, v in fields.items() if v is not None}
    if not found:
        err.print("[red]nothing to change: give at least one option (see --help)[/]")
        raise typer.Exit(2)
    return found


JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


# --- clients -------------------------------------------------------------------------------------------


@clients_app.command("add")
def client_add(
    name: Annotated[str, typer.Argument(help="the client's name")],
    segment: Annotated[str, typer.Option(help="SLA segment: platinum, gold, standard, …")],
) -> None:
    """Add a client."""
    from ingest import assets

    with _conn() as conn:
        c = assets.create(conn, assets.CLIENTS, {"name": name, "segment": segment})
    out.print(f"added client {c.id} {escape(c.name)} ({c.segment})", highlight=False)


@clients_app.command("list")
def client_list(as_json: JsonOpt = False) -> None:
    """Every client with its SLA segment."""
    from ingest import assets

    with _conn() as conn:
        _show(_all(conn, assets.CLIENTS), ("name", "segment"), as_json)


@clients_app.command("change")
def client_change(
    client: Annotated[str, typer.Argument(help="name or id")],
    name: Annotated[str | None, typer.Option(help="new name")] = None,
    segment: Annotated[str | None, typer.Option(help="new SLA segment")] = None,
) -> None:
    """Rename a client or move it to another SLA segment."""
    from ingest import assets
    from ingest.fleet import find_id

    fields = _given(name=name, segment=segment)
    with _conn() as conn:
        c = assets.update(conn, assets.CLIENTS, find_id(conn, "client", client), fields)
    out.print(f"changed client {c.id}: {', '.join(sorted(fields))}", highlight=False)


@clients_app.command("retire")
def client_retire(client: Annotated[str, typer.Argument(help="name or id")]) -> None:
    """Remove a client; refused while it has sites (retire those first)."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        assets.delete(conn, assets.CLIENTS, find_id(conn, "client", client))
    out.print(f"client {escape(client)} retired", highlight=False)


# --- sites ---------------------------------------------------------------------------------------------


@sites_app.command("add")
def site_add(
    slug: Annotated[str, typer.Argument(help="short lower-case name, e.g. nw-evanston")],
    client: Annotated[str, typer.Option(help="client name or id")],
    name: Annotated[str, typer.Option(help="readable name")],
    lat: Annotated[float, typer.Option(help="latitude (-90..90)")],
    lon: Annotated[float, typer.Option(help="longitude (-180..180)")],
    address: Annotated[str, typer.Option(help="street address, for technicians")] = "",
) -> None:
    """Add a site (dispatch routes technicians to its coordinates)."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        fields = {
            "client_id": find_id(conn, "client", client),
            "slug": slug,
            "name": name,
            "address": address,
            "latitude": lat,
            "longitude": lon,
        }
        s = _checked(lambda: assets.create(conn, assets.SITES, fields))
    out.print(f"added site {s.id} {escape(s.slug)}", highlight=False)


def _checked(write: Any) -> Any:
    """Run a registry write; a database check (coordinates) becomes a sentence."""
    import psycopg

    try:
        return write()
    except psycopg.errors.CheckViolation as exc:
        err.print(f"[red]{exc.diag.constraint_name}: latitude is -90..90 and longitude -180..180[/]")
        raise typer.Exit(1) from None


@sites_app.command("list")
def site_list(
    client: Annotated[str | None, typer.Option(help="only this client's sites (name or id)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every site with its client, address and coordinates."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        client_id = find_id(conn, "client", client) if client else None
        rows = _all(conn, assets.SITES, client_id=client_id)
        clients = {c.id: c.name for c in _all(conn, assets.CLIENTS)}
    shown = [SimpleNamespace(**asdict(s), client=clients.get(s.client_id)) for s in rows]
    _show(shown, ("slug", "name", "client", "address", "latitude", "longitude"), as_json)


@sites_app.command("change")
def site_change(
    site: Annotated[str, typer.Argument(help="slug or id")],
    name: Annotated[str | None, typer.Option(help="new readable name")] = None,
    client: Annotated[str | None, typer.Option(help="move to this client (name or id)")] = None,
    address: Annotated[str | None, typer.Option(help="new address")] = None,
    lat: Annotated[float | None, typer.Option(help="new latitude")] = None,
    lon: Annotated[float | None, typer.Option(help="new longitude")] = None,
    slug: Annotated[str | None, typer.Option(help="new slug (gateways' topics do not change)")] = None,
) -> None:
    """Change a site; options left out keep their value."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        client_id = find_id(conn, "client", client) if client else None
        fields = _given(name=name, client_id=client_id, address=address, latitude=lat, longitude=lon, slug=slug)
        s = _checked(lambda: assets.update(conn, assets.SITES, find_id(conn, "site", site), fields))
    out.print(f"changed site {s.id}: {', '.join(sorted(fields))}", highlight=False)


@sites_app.command("retire")
def site_retire(site: Annotated[str, typer.Argument(help="slug or id")]) -> None:
    """Remove a site; refused while it has gateways or devices (retire those first)."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        assets.delete(conn, assets.SITES, find_id(conn, "site", site))
    out.print(f"site {escape(site)} retired", highlight=False)


# --- gateways ------------------------------------------------------------------------------------------


@gateways_app.command("add")
def gateway_add(
    slug: Annotated[str, typer.Argument(help="short lower-case name, e.g. gw-nw-evanston (its MQTT topics)")],
    site: Annotated[str, typer.Option(help="site slug or id")],
    name: Annotated[str, typer.Option(help="readable name")] = "",
) -> None:
    """Add a gateway; `fieldwatch gateway provision` then gives it broker credentials and a config."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        g = assets.create(conn, assets.GATEWAYS, {"site_id": find_id(conn, "site", site), "slug": slug, "name": name})
    out.print(f"added gateway {g.id} {escape(g.slug)} at {escape(g.site)}", highlight=False)


@gateways_app.command("list")
def gateway_list(
    site: Annotated[str | None, typer.Option(help="only this site's gateways (slug or id)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every gateway with its site and status."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        site_id = find_id(conn, "site", site) if site else None
        rows = _all(conn, assets.GATEWAYS, site_id=site_id)
    _show(rows, ("slug", "name", "site", "status"), as_json)


@gateways_app.command("change")
def gateway_change(
    gateway: Annotated[str, typer.Argument(help="slug or id")],
    name: Annotated[str | None, typer.Option(help="new readable name")] = None,
    site: Annotated[str | None, typer.Option(help="move to this site (slug or id)")] = None,
) -> None:
    """Rename a gateway or move it to another site (with its devices moved first)."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        fields = _given(name=name, site_id=find_id(conn, "site", site) if site else None)
        g = assets.update(conn, assets.GATEWAYS, find_id(conn, "gateway", gateway), fields)
    out.print(f"changed gateway {g.id}: {', '.join(sorted(fields))}", highlight=False)


@gateways_app.command("retire")
def gateway_retire(gateway: Annotated[str, typer.Argument(help="slug or id")]) -> None:
    """Remove a gateway; refused while it polls devices (move or retire them first)."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        assets.delete(conn, assets.GATEWAYS, find_id(conn, "gateway", gateway))
    out.print(f"gateway {escape(gateway)} retired", highlight=False)


# --- devices -------------------------------------------------------------------------------------------

DeviceRef = Annotated[str, typer.Argument(help="device id, SITE/KEY, GATEWAY/KEY, or a KEY unique in the fleet")]


@devices_app.command("add")
def device_add(
    key: Annotated[str, typer.Argument(help="the name its gateway publishes, e.g. P-101")],
    gateway: Annotated[str, typer.Option(help="the gateway that polls it (slug or id); the device is on its site")],
    model: Annotated[str, typer.Option("--model", help="equipment model, e.g. pump-p100")],
    profile: Annotated[str, typer.Option(help="equipment profile (gateway/profiles/<profile>.yaml)")] = "",
    name: Annotated[str, typer.Option(help="readable name")] = "",
    serial: Annotated[str, typer.Option(help="serial number")] = "",
) -> None:
    """Add a device polled by a gateway."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        gw = assets.get(conn, assets.GATEWAYS, find_id(conn, "gateway", gateway))
        fields = {"site_id": gw.site_id, "gateway_id": gw.id, "key": key, "equipment_model": model}
        d = assets.create(conn, assets.DEVICES, fields | {"profile": profile, "name": name, "serial": serial})
    out.print(f"added device {d.id} {escape(gw.slug)}/{escape(d.key)}", highlight=False)


@devices_app.command("list")
def device_list(
    site: Annotated[str | None, typer.Option(help="only this site's devices (slug or id)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every device with its site, gateway, model and profile."""
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        rows = _all(conn, assets.DEVICES)
        if site:
            site_id = find_id(conn, "site", site)
            rows = [d for d in rows if d.site_id == site_id]
        sites = {s.id: s.slug for s in _all(conn, assets.SITES)}
        gateways = {g.id: g.slug for g in _all(conn, assets.GATEWAYS)}
    shown = [
        SimpleNamespace(**asdict(d), site=sites.get(d.site_id), gateway=gateways.get(d.gateway_id or 0)) for d in rows
    ]
    _show(shown, ("key", "site", "gateway", "equipment_model", "profile", "name", "serial"), as_json)


@devices_app.command("change")
def device_change(
    device: DeviceRef,
    name: Annotated[str | None, typer.Option(help="new readable name")] = None,
    model: Annotated[str | None, typer.Option("--model", help="new equipment model")] = None,
    profile: Annotated[str | None, typer.Option(help="new equipment profile")] = None,
    serial: Annotated[str | None, typer.Option(help="new serial number")] = None,
    gateway: Annotated[str | None, typer.Option(help="move to this gateway (slug or id) and its site")] = None,
) -> None:
    """Change a device; options left out keep their value."""
    from fwcore.devices import resolve_device_ref
    from ingest import assets
    from ingest.fleet import find_id

    with _conn() as conn:
        moved: dict[str, Any] = {}
        if gateway:
            gw = assets.get(conn, assets.GATEWAYS, find_id(conn, "gateway", gateway))
            moved = {"gateway_id": gw.id, "site_id": gw.site_id}
        fields = _given(name=name, equipment_model=model, profile=profile, serial=serial, **moved)
        d = assets.update(conn, assets.DEVICES, resolve_device_ref(conn, device), fields)
    out.print(f"changed device {d.id}: {', '.join(sorted(fields))}", highlight=False)


@devices_app.command("retire")
def device_retire(device: DeviceRef) -> None:
    """Remove a device; refused while it has series (its telemetry is kept until retention drops it)."""
    from fwcore.devices import resolve_device_ref
    from ingest import assets

    with _conn() as conn:
        assets.delete(conn, assets.DEVICES, resolve_device_ref(conn, device))
    out.print(f"device {escape(device)} retired", highlight=False)


# --- import --------------------------------------------------------------------------------------------


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="fleet file: YAML, or CSV exported from a spreadsheet")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check everything and report; change nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create or change the clients, sites, gateways and devices FILE describes; what is already as described is
    left alone, so importing twice changes nothing the second time. Nothing is deleted."""
    from ingest.fleet import FleetFileError, import_fleet, parse_file

    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]cannot read {escape(str(file))}: {escape(str(exc))}[/]")
        raise typer.Exit(2) from None
    try:
        fleet = parse_file(text, file.name)
        with _conn() as conn:
            report = import_fleet(conn, fleet, source=file.name, dry_run=dry_run)
    except FleetFileError as exc:
        err.print(f"[red]{len(exc.problems)} problem(s); nothing imported:[/]")
        for p in exc.problems:
            err.print(f"  {escape(p)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps([asdict(o) for o in report.outcomes], default=str))
    else:
        marks = {
            "created": "[green]+ created[/]",
            "changed": "[yellow]~ changed[/]",
            "unchanged": "[dim]= unchanged[/]",
        }
        for o in report.outcomes:
            out.print(f"{marks[o.action]} {o.kind} {escape(o.name)}", highlight=False)
            for name, (was, now) in o.fields.items():
                out.print(f"    {name}: {escape(repr(was))} → {escape(repr(now))}", highlight=False)
    verb = "would be" if dry_run else "were"
    out.print(
        f"{report.count('created')} created, {report.count('changed')} changed, {report.count('unchanged')} unchanged"
        + (f" (dry run: nothing {verb} written)" if dry_run else ""),
        highlight=False,
    )
