"""Importing historians' wide CSV files: parsing, bad rows kept with line numbers, dedup, CLI and API."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from fieldwatch.api import create_app
from fieldwatch.cli import app
from ingest.history import BadRow, CsvOptions, GoodRow, HistoryError, import_history, parse_wide_csv
from tests.support.api import BASE, TestClient, auth, seed, settings_for, token

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
GOOD = """time,flow,bearing_temp
2026-03-01T00:00:00Z,5.0,61.0
2026-03-01T00:01:00Z,,61.5
2026-03-01T00:02:00Z,oops,62.0
not-a-time,5.2,62.5
2026-03-01T00:04:00Z,5.3
2026-03-01T00:05:00Z,nan,63.0

2026-03-01T00:06:00Z,5.4,63.5
"""


def _parse(text: str, **opts: object) -> tuple[list[str], list[GoodRow | BadRow]]:
    tags, rows = parse_wide_csv(text.splitlines(keepends=True), CsvOptions(**opts))  # type: ignore[arg-type]
    return tags, list(rows)


def test_parse_keeps_good_rows_and_names_bad_lines() -> None:
    """Good rows carry their values (an empty cell is no reading); each bad row has its line number and reason."""
    tags, rows = _parse(GOOD)
    assert tags == ["flow", "bearing_temp"]
    good = [r for r in rows if isinstance(r, GoodRow)]
    bad = {r.line: r.reason for r in rows if isinstance(r, BadRow)}
    assert [g.values for g in good] == [
        {"flow": 5.0, "bearing_temp": 61.0},
        {"bearing_temp": 61.5},
        {"flow": 5.4, "bearing_temp": 63.5},
    ]
    assert good[0].ts_ms == int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000) and good[2].line == 9
    assert sorted(bad) == [4, 5, 6, 7]
    assert "'flow'" in bad[4] and "not a number" in bad[4]
    assert "bad time 'not-a-time'" in bad[5]
    assert "2 cells, the header has 3" in bad[6]
    assert "not finite" in bad[7]


def test_separator_time_column_format_timezone_and_decimal_comma() -> None:
    """A European export (`;`, decimal comma, local time, custom format, time column not first) parses."""
    text = "p;Zeit\n12,5;01.03.2026 01:00\n"
    tags, rows = _parse(
        text, separator=";", time_column="Zeit", time_format="%d.%m.%Y %H:%M", timezone="Europe/Berlin", decimal=","
    )
    assert tags == ["p"]
    (row,) = rows
    assert isinstance(row, GoodRow) and row.values == {"p": 12.5}
    assert row.ts_ms == int(datetime(2026, 3, 1, 0, 0, tzinfo=UTC).timestamp() * 1000)  # 01:00 CET is 00:00 UTC
    assert [r.ts_ms for r in _parse("t,x\n1700000000,1\n", time_format="epoch_s")[1]] == [1_700_000_000_000]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "opts", "msg"),
    [
        ("", {}, "the file is empty"),
        ("time,x\n", {"time_column": "ts"}, "no time column 'ts'; the header has: time, x"),
        ("time,x,x\n", {}, "appear twice"),
        ("time\n", {}, "needs a tag name"),
        ("time,x\n", {"timezone": "Mars/Base"}, "unknown time zone"),
    ],
)
def test_unusable_files_raise_history_error(text: str, opts: dict, msg: str) -> None:
    """A file whose header or options cannot work is refused as a whole with a message saying why."""
    with pytest.raises(HistoryError, match=msg):
        _parse(text, **opts)


def test_import_writes_once_and_dead_letters_bad_rows(db_url: str) -> None:
    """Good points are stored (a second import stores nothing new); bad rows land in dead_letters with
    their line numbers; rows older than retention are refused too."""
    fleet = seed(db_url)
    lines = GOOD + "2020-01-01T00:00:00Z,1,1\n"
    first = import_history(db_url, lines.splitlines(keepends=True), "pump-1", retention_days=30, now=NOW)
    assert (first.rows, first.points, first.inserted, first.duplicates) == (3, 5, 5, 0)
    assert [b.line for b in first.bad] == [4, 5, 6, 7, 10] and "older than the 30-day retention" in first.bad[-1].reason
    again = import_history(db_url, lines.splitlines(keepends=True), "gw-a/pump-1", retention_days=30, now=NOW)
    assert (again.inserted, again.duplicates) == (0, 5)
    with psycopg.connect(db_url) as conn:
        n = conn.execute(
            "SELECT count(*) FROM telemetry WHERE series_id = %s AND time < '2026-03-02'",
            (fleet.series["pump-1/flow"],),
        ).fetchone()
        letters = conn.execute("SELECT topic, reason, detail, payload FROM dead_letters ORDER BY id LIMIT 1").fetchone()
        gw = conn.execute("SELECT last_seq, seq_gaps FROM gateways WHERE slug = 'gw-a'").fetchone()
    assert n == (2,)
    assert letters is not None and letters[0] == f"history/{fleet.devices['pump-1']}"
    assert (letters[1], letters[2]) == ("history_bad_row", "line 4: column 'flow': 'oops' is not a number")
    assert bytes(letters[3]) == b"2026-03-01T00:02:00Z,oops,62.0"
    assert gw == (42, 1)  # history has no sequence: the gateway's bookkeeping is untouched
    with pytest.raises(HistoryError, match="no device 'pump-9'"):
        import_history(db_url, ["time,x\n"], "pump-9")


def test_reimport_with_other_values_keeps_the_stored_ones_and_the_others_aside(db_url: str) -> None:
    """Importing a corrected file over stored points keeps the stored values and files each differing point as a
    ``conflicting_value`` dead letter under the device's history topic (equal points stay silent duplicates)."""
    fleet = seed(db_url)
    import_history(
        db_url, ["time,flow\n", "2026-03-01T00:00:00Z,5.0\n", "2026-03-01T00:01:00Z,6.0\n"], "pump-1", now=NOW
    )
    fixed = ["time,flow\n", "2026-03-01T00:00:00Z,5.0\n", "2026-03-01T00:01:00Z,6.5\n"]
    again = import_history(db_url, fixed, "pump-1", now=NOW)
    assert (again.inserted, again.duplicates, again.conflicts) == (0, 1, 1)
    with psycopg.connect(db_url) as conn:
        values = conn.execute(
            "SELECT value FROM telemetry WHERE series_id = %s AND time < '2026-03-02' ORDER BY time",
            (fleet.series["pump-1/flow"],),
        ).fetchall()
        letters = conn.execute("SELECT topic, reason FROM dead_letters").fetchall()
    assert values == [(5.0,), (6.0,)]
    assert letters == [(f"history/{fleet.devices['pump-1']}", "conflicting_value")]


def test_cli_imports_with_progress_and_writes_rejects(db_url: str, tmp_path: Path, monkeypatch) -> None:
    """`fieldwatch history import` stores the file, lists bad lines, writes FILE.rejected.csv and exits 3."""
    seed(db_url)
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("FIELDWATCH_RETENTION_DAYS", "100000")
    f = tmp_path / "export.csv"
    f.write_text(GOOD)
    result = CliRunner().invoke(app, ["history", "import", str(f), "--device", "pump-1"])
    assert result.exit_code == 3, result.output
    assert "5 new" in result.output and "row 4:" in result.output
    rejected = (tmp_path / "export.csv.rejected.csv").read_text().splitlines()
    assert rejected[0] == "line,reason,text" and len(rejected) == 5
    clean = tmp_path / "clean.csv"
    clean.write_text("time,flow\n2026-03-01T00:00:00Z,5.0\n")
    result = CliRunner().invoke(app, ["history", "import", str(clean), "--device", "pump-1"])
    assert result.exit_code == 0 and "0 new, 1 already stored" in result.output


def test_rows_older_than_retention_say_how_to_import_them_and_are_dead_letters(
    db_url: str, tmp_path: Path, monkeypatch
) -> None:
    """A row older than retention is refused with its date, the retention and the flag that imports it, kept as a
    `history_too_old` dead letter `dead-letters list` shows; `--ignore-retention` imports it."""
    seed(db_url)
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("FIELDWATCH_RETENTION_DAYS", "90")
    f = tmp_path / "old.csv"
    f.write_text("time,flow\n2024-01-03T00:00:00Z,5.0\n")
    refused = CliRunner().invoke(app, ["history", "import", str(f), "--device", "plant-a/pump-1"])
    assert refused.exit_code == 3, refused.output
    assert (
        "row 2: 2024-01-03T00:00:00+00:00 is older than the 90-day retention of this deployment; "
        "pass --ignore-retention (or raise FIELDWATCH_RETENTION_DAYS) to import it"
    ) in " ".join(refused.output.split())
    letters = CliRunner().invoke(app, ["dead-letters", "list", "--reason", "history_too_old"])
    assert letters.exit_code == 0 and "history_too_old" in letters.output, letters.output
    forced = CliRunner().invoke(app, ["history", "import", str(f), "--device", "gw-a/pump-1", "--ignore-retention"])
    assert forced.exit_code == 0 and "1 new" in forced.output, forced.output


def test_api_upload_imports_for_admin_only(db_url: str) -> None:
    """POST /devices/{id}/history takes the CSV body, answers the counts and the bad lines; others get 403."""
    fleet = seed(db_url)
    dev = fleet.devices["pump-2"]
    app = create_app(settings_for(db_url, retention_days=100_000))  # the sample file is from March 2026
    with TestClient(app) as api:
        admin = {**auth(token(db_url, "admin")), "Content-Type": "text/csv"}
        r = api.post(f"{BASE}/devices/{dev}/history", content=GOOD, headers=admin, params={"timezone": "UTC"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["rows"], body["inserted"], body["bad_rows"]) == (3, 5, 4)
        assert [b["line"] for b in body["bad"]] == [4, 5, 6, 7]
        r = api.post(f"{BASE}/devices/{dev}/history", content="time,x\n", headers=admin, params={"time_column": "t"})
        assert r.status_code == 422 and "no time column 't'" in r.json()["detail"][0]["msg"]
        assert api.post(f"{BASE}/devices/999999/history", content=GOOD, headers=admin).status_code == 404
        reader = {**auth(token(db_url, "dispatcher", "d")), "Content-Type": "text/csv"}
        assert api.post(f"{BASE}/devices/{dev}/history", content=GOOD, headers=reader).status_code == 403
