"""Fleet files: clients, sites (with address and coordinates), their gateways and devices, imported
idempotently from YAML or from a spreadsheet exported as CSV.

An import matches what is there by name (a client's name, a site's or gateway's slug, a device's key on
its gateway, or on its site when it has none) and reports, for each entry, whether it was ``created``,
``changed`` (with the fields) or left ``unchanged``; importing the same file twice changes nothing the
second time. Nothing is ever deleted by an import. A dry run does every write and check inside a
transaction that is rolled back, so it fails exactly where the import would.

Every validation error names the file, the line (YAML) or row (CSV) and the field, and says what to fix
(:mod:`fwcore.filecheck`). The writes go through :mod:`ingest.assets`, so the registry's rules apply.

YAML::

    clients:
      - {name: Northwind Water, segment: platinum}
    sites:
      - slug: nw-evanston
        client: Northwind Water
        name: Evanston pumping station
        address: 555 Lincoln St, Evanston, IL
        latitude: 42.0630
        longitude: -87.6740
        gateways:
          - slug: gw-nw-evanston
            devices:
              - {key: P-101, equipment_model: pump-p100, profile: pump-p100}

CSV (one row per device; a site's and client's columns repeat on each of its rows and must agree):
``client, segment, site, site_name, address, latitude, longitude, gateway, device, equipment_model,
profile, device_name, serial`` (``segment`` may be empty for a client that exists).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from fwcore import filecheck
from fwcore.errors import DomainError, Invalid, NotFound
from ingest import assets

Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
Key = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=500)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DeviceIn(_Strict):
    key: Key
    equipment_model: Name
    name: Text = ""
    serial: Text = ""
    profile: Text = ""
    attributes: dict[str, Any] = {}


class GatewayIn(_Strict):
    slug: Slug
    name: Text = ""
    devices: list[DeviceIn] = []


class SiteIn(_Strict):
    slug: Slug
    client: Name
    name: Name
    address: Text = ""
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    gateways: list[GatewayIn] = []


class ClientIn(_Strict):
    name: Name
    segment: str | None = None  # None: keep the segment of a client that exists


class FleetFile(_Strict):
    clients: list[ClientIn] = []
    sites: list[SiteIn] = []
    #: where each entry is in its file (``("sites", 0)`` → ``"line 4"`` or ``"row 2"``), for messages
    _positions: dict[filecheck.Path, str] = PrivateAttr(default_factory=dict)

    def at(self, *path: str | int) -> str:
        """``"line 4, sites[0]"``: where the entry at ``path`` is, as a message says it."""
        pos = next((self._positions[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self._positions), None)
        return f"{pos}, {filecheck.render(path)}" if pos else filecheck.render(path)


class FleetFileError(ValueError):
    """The file cannot be imported; ``problems`` lists each one with file, line or row, and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


Action = Literal["created", "changed", "unchanged"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # client, site, gateway, device
    name: str  # how the file names it
    action: Action
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # changed: field -> (was, now)


@dataclass(slots=True)
class ImportReport:
    outcomes: list[Outcome] = field(default_factory=list)
    dry_run: bool = False

    def count(self, action: Action) -> int:
        return sum(1 for o in self.outcomes if o.action == action)


# --- reading files ------------------------------------------------------------------------------------


def parse_yaml(text: str, source: str) -> FleetFile:
    """A YAML fleet file; :class:`FleetFileError` naming file, line and field of every problem."""
    try:
        data, lines = filecheck.load_yaml(text, source)
    except filecheck.FileProblems as exc:
        raise FleetFileError(exc.problems) from None
    try:
        fleet = FleetFile.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise FleetFileError(filecheck.problems(exc, source, lines)) from None
    fleet._positions = {path: f"line {n}" for path, n in lines.items()}
    return fleet


COLUMNS = (
    "client",
    "segment",
    "site",
    "site_name",
    "address",
    "latitude",
    "longitude",
    "gateway",
    "device",
    "equipment_model",
    "profile",
    "device_name",
    "serial",
)
_REQUIRED = ("client", "site", "site_name", "latitude", "longitude")


def parse_csv(text: str, source: str) -> FleetFile:
    """A spreadsheet's CSV export, one row per device (see the module docstring); :class:`FleetFileError` naming
    file, row and column of every problem. Rows of one site or client must agree on its columns."""
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    header = [h.strip().lower() for h in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in _REQUIRED if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    problems: list[str] = []
    if missing:
        problems.append(f"{source} row 1: add the column(s) {', '.join(missing)} (columns: {', '.join(COLUMNS)})")
    if unknown:
        problems.append(f"{source} row 1: unknown column(s) {', '.join(unknown)}; the columns are {', '.join(COLUMNS)}")
    if problems:
        raise FleetFileError(problems)
    clients: dict[str, tuple[int, ClientIn]] = {}
    sites: dict[str, tuple[int, SiteIn]] = {}
    gateways: dict[tuple[str, str], GatewayIn] = {}
    gateway_rows: dict[tuple[str, str], int] = {}
    device_rows: dict[tuple[str, str], int] = {}
    for row_no, raw in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in raw.items() if k}
        if not any(row.values()):
            continue

        def bad(column: str, what: str, row_no: int = row_no) -> None:
            problems.append(f"{source} row {row_no}, {column}: {what}")

        def check(model: type[BaseModel], data: dict[str, Any], columns: dict[str, str]) -> Any:
            try:
                return model.model_validate(data)
            except ValidationError as exc:
                for e in exc.errors():
                    column = columns.get(str(e["loc"][0]) if e["loc"] else "", "?")
                    bad(column, filecheck.words(e, column))
                return None

        client = check(ClientIn, {"name": row.get("client", ""), "segment": row.get("segment") or None}, {})
        site = check(
            SiteIn,
            {
                "slug": row.get("site", ""),
                "client": row.get("client", ""),
                "name": row.get("site_name", ""),
                "address": row.get("address", ""),
                "latitude": row.get("latitude", ""),
                "longitude": row.get("longitude", ""),
            },
            {"slug": "site", "name": "site_name", "client": "client", "address": "address"}
            | {"latitude": "latitude", "longitude": "longitude"},
        )
        device = gateway = None
        if row.get("device"):
            device = check(
                DeviceIn,
                {
                    "key": row["device"],
                    "equipment_model": row.get("equipment_model", ""),
                    "name": row.get("device_name", ""),
                    "serial": row.get("serial", ""),
                    "profile": row.get("profile", ""),
                },
                {"key": "device", "equipment_model": "equipment_model", "name": "device_name"}
                | {"serial": "serial", "profile": "profile"},
            )
            if device is None:
                continue
        if row.get("gateway"):
            gateway = check(GatewayIn, {"slug": row["gateway"]}, {"slug": "gateway"})
            if gateway is None:
                continue
        if client is None or site is None:
            continue
        if device is not None and gateway is None:
            bad("gateway", "a device needs the gateway that polls it; fill in the gateway column")
            continue
        seen_client = clients.setdefault(client.name, (row_no, client))
        if seen_client[1].segment and client.segment and seen_client[1].segment != client.segment:
            first_seg = seen_client[1].segment
            bad("segment", f"{client.segment!r} differs from row {seen_client[0]} ({first_seg!r}); make them agree")
        elif client.segment and not seen_client[1].segment:
            clients[client.name] = (seen_client[0], client)
        first, known = sites.setdefault(site.slug, (row_no, site))
        for name in ("client", "name", "address", "latitude", "longitude"):
            if getattr(known, name) != getattr(site, name):
                column = "site_name" if name == "name" else name
                was, now = getattr(known, name), getattr(site, name)
                bad(column, f"{now!r} differs from row {first} ({was!r}) for site {site.slug}; make them agree")
        if gateway is not None:
            gw = gateways.get((site.slug, gateway.slug))
            if gw is None:
                gw = gateways[(site.slug, gateway.slug)] = gateway
                gateway_rows[(site.slug, gateway.slug)] = row_no
                known.gateways.append(gw)
            if device is not None:
                if any(d.key == device.key for d in gw.devices):
                    bad("device", f"{device.key!r} is listed twice for gateway {gateway.slug}")
                else:
                    gw.devices.append(device)
                    device_rows[(gw.slug, device.key)] = row_no
    if problems:
        raise FleetFileError(problems)
    fleet = FleetFile(clients=[c for _, c in clients.values()], sites=[s for _, s in sites.values()])
    positions: dict[filecheck.Path, str] = {("clients", i): f"row {n}" for i, (n, _) in enumerate(clients.values())}
    positions |= {("sites", i): f"row {n}" for i, (n, _) in enumerate(sites.values())}
    fleet._positions = positions
    for i, (_, site) in enumerate(sites.values()):
        for j, gw in enumerate(site.gateways):
            fleet._positions[("sites", i, "gateways", j)] = f"row {gateway_rows[(site.slug, gw.slug)]}"
            for k, d in enumerate(gw.devices):
                fleet._positions[("sites", i, "gateways", j, "devices", k)] = f"row {device_rows[(gw.slug, d.key)]}"
    return fleet


def parse_file(text: str, source: str) -> FleetFile:
    """A fleet file, YAML or CSV by its name's extension (``.csv``, ``.tsv``: CSV)."""
    if source.lower().endswith((".csv", ".tsv", ".txt")):
        return parse_csv(text, source)
    return parse_yaml(text, source)


# --- importing ----------------------------------------------------------------------------------------


def _id_of(conn: psycopg.Connection, query: Any, params: tuple[Any, ...]) -> int | None:
    row = conn.execute(query, params).fetchone()
    return None if row is None else int(row[0])


def _upsert(
    conn: psycopg.Connection,
    report: ImportReport,
    res: assets.Resource,
    name: str,
    ident: int | None,
    wanted: Mapping[str, Any],
) -> int:
    """Create the row, or change the fields that differ; records the outcome; returns its id."""
    if ident is None:
        record = assets.create(conn, res, wanted)
        report.outcomes.append(Outcome(res.what, name, "created"))
        return int(record.id)
    current = assets.get(conn, res, ident)
    changed = {k: (getattr(current, k), v) for k, v in wanted.items() if getattr(current, k) != v}
    if changed:
        assets.update(conn, res, ident, {k: v for k, (_, v) in changed.items()})
    report.outcomes.append(Outcome(res.what, name, "changed" if changed else "unchanged", changed))
    return ident


class _DryRun(Exception):
    pass


def import_fleet(conn: psycopg.Connection, fleet: FleetFile, *, source: str, dry_run: bool = False) -> ImportReport:
    """Create or change what ``fleet`` describes, in one transaction (all or nothing); ``dry_run`` rolls it back.

    A registry refusal (an unknown segment, a gateway on another site, …) is :class:`FleetFileError` naming
    the entry."""
    report = ImportReport(dry_run=dry_run)
    where = ""
    here: filecheck.Path = ()
    try:
        with conn.transaction():
            clients: dict[str, int] = {}
            for i, c in enumerate(fleet.clients):
                here = ("clients", i)
                where = f"{fleet.at(*here)} ({c.name})"
                ident = _id_of(conn, "SELECT id FROM clients WHERE name = %s", (c.name,))
                if ident is None and c.segment is None:
                    raise FleetFileError(
                        [f"{source} {where}, segment: a new client needs a segment (platinum, gold, ...)"]
                    )
                fields = {"name": c.name} | ({"segment": c.segment} if c.segment else {})
                clients[c.name] = _upsert(conn, report, assets.CLIENTS, c.name, ident, fields)
            for i, s in enumerate(fleet.sites):
                here = ("sites", i)
                where = f"{fleet.at(*here)} ({s.slug})"
                client_id = clients.get(s.client) or _id_of(conn, "SELECT id FROM clients WHERE name = %s", (s.client,))
                if client_id is None:
                    raise FleetFileError(
                        [
                            f"{source} {where}, client: client {s.client!r} is neither in the file nor registered; "
                            "add it under clients"
                        ]
                    )
                site_id = _upsert(
                    conn,
                    report,
                    assets.SITES,
                    s.slug,
                    _id_of(conn, "SELECT id FROM sites WHERE slug = %s", (s.slug,)),
                    {
                        "client_id": client_id,
                        "slug": s.slug,
                        "name": s.name,
                        "address": s.address,
                        "latitude": s.latitude,
                        "longitude": s.longitude,
                    },
                )
                for j, g in enumerate(s.gateways):
                    here = ("sites", i, "gateways", j)
                    where = f"{fleet.at(*here)} ({g.slug})"
                    gw_fields: dict[str, Any] = {"site_id": site_id, "slug": g.slug}
                    if g.name:
                        gw_fields["name"] = g.name
                    gw_id = _upsert(
                        conn,
                        report,
                        assets.GATEWAYS,
                        g.slug,
                        _id_of(conn, "SELECT id FROM gateways WHERE slug = %s", (g.slug,)),
                        gw_fields,
                    )
                    for k, d in enumerate(g.devices):
                        here = ("sites", i, "gateways", j, "devices", k)
                        where = f"{fleet.at(*here)} ({d.key})"
                        _upsert(
                            conn,
                            report,
                            assets.DEVICES,
                            f"{g.slug}/{d.key}",
                            _id_of(conn, "SELECT id FROM devices WHERE gateway_id = %s AND key = %s", (gw_id, d.key)),
                            {"site_id": site_id, "gateway_id": gw_id, **d.model_dump()},
                        )
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    except DomainError as exc:
        field_name = str(exc.loc[-1]) if isinstance(exc, Invalid) and exc.loc else ""
        if field_name in ("name", "slug", "key", "segment", "latitude", "longitude", "address", "profile"):
            where = f"{fleet.at(*here, field_name)} ({where.rpartition(' (')[2].rstrip(')')})"
        raise FleetFileError([f"{source} {where}: {exc}"]) from None
    return report


# --- naming rows as people do: by name or slug -------------------------------------------------------------

_BY_NAME: dict[str, tuple[str, str]] = {
    "client": ("SELECT id FROM clients WHERE name = %s OR id::text = %s", "fieldwatch fleet clients list"),
    "site": ("SELECT id FROM sites WHERE slug = %s OR id::text = %s", "fieldwatch fleet sites list"),
    "gateway": ("SELECT id FROM gateways WHERE slug = %s OR id::text = %s", "fieldwatch fleet gateways list"),
}


def find_id(conn: psycopg.Connection, what: Literal["client", "site", "gateway"], name: str) -> int:
    """The id of the client (by name), site or gateway (by slug), or any of them by id; :class:`NotFound` saying
    where to look otherwise."""
    query, hint = _BY_NAME[what]
    ident = _id_of(conn, query, (name, name))
    if ident is None:
        raise NotFound(what, f"{name!r} (see `{hint}`)")
    return ident
