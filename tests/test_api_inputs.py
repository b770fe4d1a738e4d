"""Bad input is the client's error: values the database or the standard library cannot take (NUL
characters, unpaired surrogates, year-1 and offset-less times, odd UTC offsets, huge durations,
negative or huge quantities) are answered 422 naming the input, and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.api import BASE, Seeded, auth, seeded_api, token


@pytest.fixture(scope="module")
def s(admin_db_url: str, template_db: str) -> Iterator[Seeded]:
    with seeded_api(admin_db_url, template_db, role="admin") as seeded:
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            conn.execute("INSERT INTO parts (code, name) VALUES ('BRG-6205', 'bearing')")
        yield seeded


def _rows(url: str) -> dict[str, int]:
    """Row count of every table: the whole database's contents, coarsely."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT quote_ident(table_name) FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        ]
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # type: ignore[index]


def _refused(s: Seeded, method: str, path: str, *, loc: list[str], says: str, **kw: Any) -> httpx.Response:
    """The request is answered 422 locating ``loc`` with a message containing ``says``; no row changed."""
    before = _rows(s.url)
    r = s.api.request(method, f"{BASE}{path}", headers={**s.headers, **kw.pop("headers", {})}, **kw)
    assert r.status_code == 422, r.text
    problems = r.json()["detail"]
    assert any(p["loc"] == loc and says in p["msg"] for p in problems), problems
    assert _rows(s.url) == before
    return r


def _raw_json(text: str) -> dict[str, Any]:
    """Request arguments sending ``text`` as the JSON body byte for byte (a client library would refuse to
    encode an unpaired surrogate; JSON's ``\\ud800`` escape carries one)."""
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


NUL = "must not contain NUL"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/alarms/{alarm}/comments", {"body": "hot\u0000"}, "body"),
        ("/technicians", {"name": "Eve\u0000", "email": "eve@example.com", "home_lat": 48, "home_lon": 11}, "name"),
        ("/tickets/{ticket}/status", {"status": "en_route", "note": "on my way\u0000"}, "note"),
        ("/silences", {"rule": "bearing hot", "duration_s": 60, "reason": "\u0000"}, "reason"),
        (
            "/devices",
            {"site_id": 1, "key": "pump-9", "equipment_model": "P100", "attributes": {"a": "\u0000"}},
            "attributes",
        ),
        ("/workorders", {"source": "crm", "external_id": "WO-1\u0000", "device_id": 1, "title": "t"}, "external_id"),
    ],
)
def test_nul_characters_in_a_body_are_refused_naming_the_field(
    s: Seeded, path: str, body: dict[str, Any], field: str
) -> None:
    """A NUL character in any text of a body (nested ones too) is a 422 naming the field, not a database error."""
    path = path.format(alarm=s.fleet.alarms["active"], ticket=s.fleet.tickets["assigned"])
    _refused(s, "POST", path, json=body, loc=["body", field], says=NUL)


def test_nul_characters_in_query_and_path_parameters_are_refused(s: Seeded) -> None:
    """A NUL character in a query or path parameter is a 422 naming the parameter."""
    _refused(s, "GET", "/devices", params={"site": "plant-a\u0000"}, loc=["query", "site"], says=NUL)
    _refused(s, "GET", "/rules/bearing%00hot", loc=["path", "rule"], says=NUL)


@pytest.mark.parametrize(
    ("path", "text", "field"),
    [
        ("/technicians", '{"name": "Eve\\ud800", "email": "e@example.com", "home_lat": 1, "home_lon": 1}', "name"),
        (
            "/devices",
            '{"site_id": 1, "key": "pump-9", "equipment_model": "P100", "attributes": {"a": "\\udfff"}}',
            "attributes",
        ),
        ("/alarms/{alarm}/comments", '{"body": "x\\ud83d"}', "body"),
    ],
)
def test_unpaired_surrogates_are_refused_and_the_answer_is_valid_json(
    s: Seeded, path: str, text: str, field: str
) -> None:
    """An unpaired surrogate (valid JSON, not encodable as UTF-8) is a 422 whose body is valid UTF-8 JSON."""
    path = path.format(alarm=s.fleet.alarms["active"])
    r = _refused(s, "POST", path, **_raw_json(text), loc=["body", field], says="")
    json.loads(r.content.decode("utf-8"))


def test_a_paired_surrogate_is_an_ordinary_character(s: Seeded) -> None:
    """An emoji written as a surrogate pair is stored like any other text."""
    r = s.api.post(
        f"{BASE}/alarms/{s.fleet.alarms['active']}/comments",
        headers={**s.headers, "content-type": "application/json"},
        content=b'{"body": "hot \\ud83d\\udd25"}',
    )
    assert r.status_code == 201, r.text
    assert r.json()["body"] == "hot \N{FIRE}"


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"since": "2026-01-01T00:00:00"}, "since", "needs a UTC offset"),
        ({"until": "2026-02-01T08:00:00"}, "until", "needs a UTC offset"),
        ({"since": "0001-01-01T00:00:00+00:00"}, "since", "must be between 1970-01-01 and 3000-01-01"),
        ({"until": "0001-01-01T00:00:00-12:00"}, "until", "must be between"),
        ({"since": "0001-01-01T00:00:00+14:00"}, "since", "must be between"),
        ({"since": "2026-01-01T00:00:00+23:59"}, "since", "UTC offset must be between -12:00 and +14:00"),
        ({"until": "2026-01-01T00:00:00-23:59"}, "until", "UTC offset must be between"),
        ({"until": "9999-12-31T23:59:59+00:00"}, "until", "must be between"),
    ],
)
def test_kpi_period_needs_offsets_in_use_and_sane_years(
    s: Seeded, params: dict[str, str], field: str, says: str
) -> None:
    """/kpis refuses times without a UTC offset, with offsets no place uses, and outside 1970-3000."""
    _refused(s, "GET", "/kpis", params=params, loc=["query", field], says=says)


def test_kpis_accept_the_extreme_real_offsets(s: Seeded) -> None:
    """+14:00 and -12:00 are real offsets: a period written with them is answered."""
    r = s.api.get(
        f"{BASE}/kpis",
        params={"since": "2026-01-01T00:00:00+14:00", "until": "2026-02-01T00:00:00-12:00"},
        headers=s.headers,
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/series/{series}/points", {"from": "0001-01-01T00:00:00+14:00"}, "from"),
        ("/series/{series}/buckets", {"to": "0001-01-01T00:00:00"}, "to"),
        ("/dead-letters", {"from": "0001-01-01T00:00:00+00:00"}, "from"),
        ("/audit", {"since": "0001-01-02T00:00:00+23:00"}, "since"),
    ],
)
def test_year_one_in_a_time_range_is_refused(s: Seeded, path: str, params: dict[str, str], field: str) -> None:
    """A time range reaching year 1 (or using an offset no place uses) is a 422, not an overflow."""
    path = path.format(series=s.fleet.series["pump-1/bearing_temp"])
    _refused(s, "GET", path, params=params, loc=["query", field], says="")


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"duration_s": 1e300}, "duration_s", "less than or equal to 316224000"),
        ({"duration_s": 1e12}, "duration_s", "less than or equal"),
        ({"duration_s": -5}, "duration_s", "greater than 0"),
        ({"ends_at": "0001-01-01T00:00:00+14:00"}, "ends_at", "must be between"),
        ({"starts_at": "0001-01-01T00:00:00+23:59", "duration_s": 60}, "starts_at", "UTC offset"),
    ],
)
def test_silences_refuse_huge_durations_and_year_one(s: Seeded, body: dict[str, Any], field: str, says: str) -> None:
    """A silence lasting more than ten years, or starting or ending in year 1, is a 422."""
    _refused(s, "POST", "/silences", json={"rule": "bearing hot", **body}, loc=["body", field], says=says)


@pytest.mark.parametrize(
    ("quantity", "says"), [(-1, "greater than or equal to 1"), (0, "greater than or equal to 1"), (2**40, "less than")]
)
def test_parts_used_must_be_a_positive_quantity_the_database_holds(s: Seeded, quantity: int, says: str) -> None:
    """A negative, zero or huge quantity of a known part is a 422; the ticket keeps its status and stock."""
    _refused(
        s,
        "POST",
        f"/tickets/{s.fleet.tickets['assigned']}/status",
        json={"status": "en_route", "parts_used": {"BRG-6205": quantity}},
        loc=["body", "parts_used", "BRG-6205"],
        says=says,
    )
    assert s.api.get(f"{BASE}/tickets/{s.fleet.tickets['assigned']}", headers=s.headers).json()["status"] == "assigned"


def test_work_order_parts_must_be_positive_quantities(s: Seeded) -> None:
    """A work order asking for a negative quantity of a part is a 422 naming it."""
    body = {"source": "crm", "external_id": "WO-7", "device_id": 1, "title": "t", "parts": {"BRG-6205": -3}}
    _refused(s, "POST", "/workorders", json=body, loc=["body", "parts", "BRG-6205"], says="greater than or equal to 1")


def test_a_value_the_database_refuses_is_422_without_sql(s: Seeded) -> None:
    """What no validator catches (here a duration that overflows the column) is a 422 that shows no SQL."""
    body = {"source": "crm", "external_id": "WO-8", "device_id": s.fleet.devices["pump-1"], "title": "t"}
    before = _rows(s.url)
    r = s.api.post(f"{BASE}/workorders", headers=s.headers, json={**body, "service_minutes": 2**40})
    assert r.status_code == 422, r.text
    assert "out of the range" in r.text
    assert not any(word in r.text for word in ("INSERT", "SELECT", "integer", "psycopg", "tickets"))
    assert _rows(s.url) == before


def test_validation_errors_do_not_echo_the_input(s: Seeded) -> None:
    """A refused body is described by where and what, never by its value (it may be a secret)."""
    admin = auth(token(s.url, "admin", "echo-check"))
    r = s.api.post(f"{BASE}/tokens", headers=admin, json={"name": "s3cret-hunter2\u0000", "role": "viewer"})
    assert r.status_code == 422
    assert "hunter2" not in r.text
    r = s.api.post(f"{BASE}/tokens", headers=admin, json={"name": "x", "role": "viewer", "technician_id": "hunter2"})
    assert r.status_code == 422
    assert "hunter2" not in r.text
