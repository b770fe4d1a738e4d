"""The fleet from the command line, against the real database: clients, sites, gateways and devices added,
listed, changed and retired; fleet files (YAML, CSV) imported idempotently, with errors naming file, line or
row, and field."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from fieldwatch.cli import app

FLEET = """clients:
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
          - {key: P-102, equipment_model: pump-p100, profile: pump-p100}
"""

CSV = """client,segment,site,site_name,address,latitude,longitude,gateway,device,equipment_model,profile
Contoso Foods,standard,cf-aurora,Aurora plant,"1 Main St, Aurora, IL",41.76,-88.32,gw-cf-aurora,C-1,chiller-c200,
Contoso Foods,standard,cf-aurora,Aurora plant,"1 Main St, Aurora, IL",41.76,-88.32,gw-cf-aurora,C-2,chiller-c200,
Contoso Foods,,cf-elgin,Elgin plant,,42.03,-88.28,gw-cf-elgin,K-1,compressor-k1,
"""


@pytest.fixture
def fw(db_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "250")
    return lambda *args: CliRunner().invoke(app, list(args))


def _counts(db_url: str) -> tuple[int, ...]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM clients), (SELECT count(*) FROM sites), (SELECT count(*) FROM gateways), "
            "(SELECT count(*) FROM devices)"
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_yaml_import_is_idempotent_and_reports_each_entry(fw, db_url: str, tmp_path: Path) -> None:
    """A dry run writes nothing; the import creates each entry; a second run leaves all unchanged; an edit is
    reported as changed with the field."""
    f = tmp_path / "fleet.yaml"
    f.write_text(FLEET)
    dry = fw("fleet", "import", str(f), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "5 created, 0 changed, 0 unchanged (dry run: nothing would be written)" in dry.output
    assert _counts(db_url) == (0, 0, 0, 0)
    first = fw("fleet", "import", str(f), "--json")
    assert first.exit_code == 0, first.output
    outcomes = json.loads(first.output.splitlines()[0])
    assert [(o["kind"], o["name"], o["action"]) for o in outcomes] == [
        ("client", "Northwind Water", "created"),
        ("site", "nw-evanston", "created"),
        ("gateway", "gw-nw-evanston", "created"),
        ("device", "gw-nw-evanston/P-101", "created"),
        ("device", "gw-nw-evanston/P-102", "created"),
    ]
    again = fw("fleet", "import", str(f))
    assert again.exit_code == 0 and "0 created, 0 changed, 5 unchanged" in again.output
    f.write_text(FLEET.replace("42.0630", "42.0631"))
    edited = fw("fleet", "import", str(f))
    assert "~ changed site nw-evanston" in edited.output and "latitude: 42.063 → 42.0631" in edited.output
    assert "0 created, 1 changed, 4 unchanged" in edited.output
    assert _counts(db_url) == (1, 1, 1, 2)


def test_yaml_errors_name_file_line_and_field(fw, db_url: str, tmp_path: Path) -> None:
    """Every problem of a fleet file is listed with its file, line and field, in our words; nothing is written."""
    f = tmp_path / "fleet.yaml"
    f.write_text(
        FLEET.replace("segment: platinum", "segmnt: platinum")
        .replace("slug: nw-evanston", "slug: NW Evanston")
        .replace("latitude: 42.0630", "latitude: 142")
        .replace("{key: P-102, equipment_model: pump-p100, profile: pump-p100}", "{key: P-102}")
    )
    bad = fw("fleet", "import", str(f))
    assert bad.exit_code == 2
    text = " ".join(bad.output.split())
    assert "4 problem(s); nothing imported" in text
    assert "fleet.yaml line 2, clients[0].segmnt: 'segmnt' is not a known field; check its spelling" in text
    assert "fleet.yaml line 4, sites[0].slug: 'NW Evanston' is not a valid slug: use lower-case letters" in text
    assert "fleet.yaml line 8, sites[0].latitude: latitude must be at most 90.0 (it is 142)" in text
    assert "fleet.yaml line 14, sites[0].gateways[0].devices[1].equipment_model: equipment_model is missing" in text
    assert _counts(db_url) == (0, 0, 0, 0)


def test_registry_refusals_name_the_entry(fw, db_url: str, tmp_path: Path) -> None:
    """A site whose client is nowhere, or a client in an unknown segment, is refused naming the entry; the
    import is all or nothing."""
    f = tmp_path / "fleet.yaml"
    f.write_text(FLEET.replace("client: Northwind Water", "client: Southwind"))
    nowhere = fw("fleet", "import", str(f))
    assert nowhere.exit_code == 2
    said = " ".join(nowhere.output.split())
    assert "fleet.yaml line 4, sites[0] (nw-evanston), client: client 'Southwind' is neither in the file nor" in said
    f.write_text(FLEET.replace("platinum", "diamond"))
    segment = fw("fleet", "import", str(f))
    assert segment.exit_code == 2
    said = " ".join(segment.output.split())
    assert "fleet.yaml line 2, clients[0].segment (Northwind Water): unknown segment 'diamond'; known" in said
    c = tmp_path / "fleet.csv"
    c.write_text(CSV.replace("Contoso Foods,standard", "Contoso Foods,diamond"))
    in_csv = " ".join(fw("fleet", "import", str(c)).output.split())
    assert "fleet.csv row 2, clients[0].segment (Contoso Foods): unknown segment 'diamond'" in in_csv
    assert _counts(db_url) == (0, 0, 0, 0)


def test_csv_import_one_row_per_device(fw, db_url: str, tmp_path: Path) -> None:
    """A spreadsheet export (one row per device, site columns repeated) imports, and a second run is unchanged."""
    f = tmp_path / "fleet.csv"
    f.write_text(CSV)
    first = fw("fleet", "import", str(f))
    assert first.exit_code == 0, first.output
    assert "8 created, 0 changed, 0 unchanged" in first.output
    assert "0 created, 0 changed, 8 unchanged" in fw("fleet", "import", str(f)).output
    sites = json.loads(fw("fleet", "sites", "list", "--json").output)
    assert [(s["slug"], s["address"], s["latitude"]) for s in sites] == [
        ("cf-aurora", "1 Main St, Aurora, IL", 41.76),
        ("cf-elgin", "", 42.03),
    ]


def test_csv_errors_name_row_and_column(fw, db_url: str, tmp_path: Path) -> None:
    """A CSV problem names the file, the row (the header is row 1) and the column; rows of one site must agree."""
    f = tmp_path / "fleet.csv"
    lines = CSV.splitlines()
    lines[2] = lines[2].replace("41.76", "41.77")
    lines[3] = lines[3].replace("42.03", "north").replace("compressor-k1", "")
    f.write_text("\n".join(lines) + "\n")
    bad = fw("fleet", "import", str(f))
    assert bad.exit_code == 2
    text = " ".join(bad.output.split())
    assert "fleet.csv row 3, latitude: 41.77 differs from row 2 (41.76) for site cf-aurora; make them agree" in text
    assert "fleet.csv row 4, latitude: latitude must be a number (it is 'north')" in text
    assert "fleet.csv row 4, equipment_model: equipment_model must not be empty" in text
    f.write_text("client,site,lat\nA,b,1\n")
    header = fw("fleet", "import", str(f))
    assert "fleet.csv row 1: add the column(s) site_name, latitude, longitude" in " ".join(header.output.split())
    assert _counts(db_url) == (0, 0, 0, 0)


def test_fleet_commands_add_list_change_retire(fw, db_url: str) -> None:
    """Each kind is added, listed, changed and retired from the CLI; retiring what is still in use is refused
    saying what to do first."""
    assert fw("fleet", "clients", "add", "Acme", "--segment", "gold").exit_code == 0
    site = fw(
        "fleet", "sites", "add", "plant-a", "--client", "Acme", "--name", "Plant A", "--lat", "48.1", "--lon", "11.5"
    )
    assert site.exit_code == 0, site.output
    assert fw("fleet", "gateways", "add", "gw-a", "--site", "plant-a").exit_code == 0
    added = fw("fleet", "devices", "add", "P-1", "--gateway", "gw-a", "--model", "pump-p100", "--profile", "pump-p100")
    assert added.exit_code == 0 and "gw-a/P-1" in added.output, added.output
    assert fw("fleet", "clients", "change", "Acme", "--segment", "platinum").exit_code == 0
    assert fw("fleet", "sites", "change", "plant-a", "--address", "1 Road").exit_code == 0
    assert fw("fleet", "gateways", "change", "gw-a", "--name", "Gateway A").exit_code == 0
    assert fw("fleet", "devices", "change", "plant-a/P-1", "--serial", "SN-9").exit_code == 0
    (client,) = json.loads(fw("fleet", "clients", "list", "--json").output)
    (gateway,) = json.loads(fw("fleet", "gateways", "list", "--json").output)
    (device,) = json.loads(fw("fleet", "devices", "list", "--site", "plant-a", "--json").output)
    assert client["segment"] == "platinum" and gateway["name"] == "Gateway A"
    assert (device["key"], device["profile"]) == ("P-1", "pump-p100")
    busy = fw("fleet", "gateways", "retire", "gw-a")
    assert busy.exit_code == 1 and "still polls 1 device(s); move or delete them first" in busy.output
    bad = fw("fleet", "sites", "add", "plant-b", "--client", "Nobody", "--name", "B", "--lat", "1", "--lon", "1")
    assert bad.exit_code == 1 and "client 'Nobody' (see `fieldwatch fleet clients list`) does not exist" in bad.output
    far = fw("fleet", "sites", "add", "plant-c", "--client", "Acme", "--name", "C", "--lat", "91", "--lon", "1")
    assert far.exit_code == 1 and "latitude is -90..90" in far.output
    for kind, name in (("devices", "gw-a/P-1"), ("gateways", "gw-a"), ("sites", "plant-a"), ("clients", "Acme")):
        gone = fw("fleet", kind, "retire", name)
        assert gone.exit_code == 0, gone.output
    assert _counts(db_url) == (0, 0, 0, 0)


def test_gateway_provision_names_a_command_that_exists(fw, db_url: str, tmp_path: Path) -> None:
    """Provisioning for a missing site says to create it with `fieldwatch fleet sites add`, a real command."""
    bad = fw("gateway", "provision", "--site", "nosuch", "--name", "gw-x", "--out", str(tmp_path / "g.yaml"))
    assert bad.exit_code == 2
    assert "create it first: `fieldwatch fleet sites add nosuch --client" in " ".join(bad.output.split())
    assert fw("fleet", "sites", "add", "--help").exit_code == 0
