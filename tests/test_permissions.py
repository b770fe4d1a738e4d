"""Object-level permissions over HTTP: what a token may do depends on whose ticket or position it is,
and technicians' contact details are shown only to those who need them."""

from __future__ import annotations

import psycopg
import pytest

from fwcore.auth import create_token
from fwcore.policy import Visible
from ingest import assets
from ingest.queries import list_devices
from tests.support.api import BASE, Fleet, api_client, auth, seed, token
from tests.support.db import scalar
from ticketing.tickets import list_ticket_summaries


def _resolved_by(db_url: str, fleet: Fleet, technician: int) -> int:
    """A ticket ``technician`` worked and resolved (its assignment ended at resolution)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        ticket = conn.execute(
            "INSERT INTO tickets (device_id, problem_code, title, status) "
            "VALUES (%s, 'LEAK', 'Leak', 'resolved') RETURNING id",
            (fleet.devices["pump-2"],),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO assignments (ticket_id, technician_id, reason, active, ended_at) "
            "VALUES (%s, %s, 'nearest', false, now())",
            (ticket, technician),
        )
    return ticket


def test_a_field_engineer_cannot_cancel_a_ticket_assigned_to_someone_else(db_url: str) -> None:
    """A field engineer's token that is not Ana's gets 403 cancelling Ana's ticket, and the ticket stays assigned."""
    fleet = seed(db_url)
    ticket = fleet.tickets["assigned"]
    with api_client(db_url) as api:
        r = api.post(
            f"{BASE}/tickets/{ticket}/status",
            json={"status": "cancelled"},
            headers=auth(token(db_url, "field_engineer")),
        )
    assert r.status_code == 403, r.text
    assert scalar(db_url, "SELECT status FROM tickets WHERE id = %s", (ticket,)) == "assigned"


def test_a_field_engineer_cannot_close_a_ticket_someone_else_resolved(db_url: str) -> None:
    """Closing a resolved ticket is refused to a field engineer who did not resolve it."""
    fleet = seed(db_url)
    ticket = _resolved_by(db_url, fleet, fleet.technicians["ana"])
    with api_client(db_url) as api:
        r = api.post(
            f"{BASE}/tickets/{ticket}/status", json={"status": "closed"}, headers=auth(token(db_url, "field_engineer"))
        )
    assert r.status_code == 403, r.text
    assert scalar(db_url, "SELECT status FROM tickets WHERE id = %s", (ticket,)) == "resolved"


def test_a_field_engineer_cannot_move_another_technicians_position(db_url: str) -> None:
    """Reporting Ben's position with a token that is not Ben's is 403 and Ben stays where he was."""
    fleet = seed(db_url)
    ben = fleet.technicians["ben"]
    with api_client(db_url) as api:
        r = api.put(
            f"{BASE}/technicians/{ben}/location",
            json={"lat": 48.5, "lon": 11.1},
            headers=auth(token(db_url, "field_engineer")),
        )
    assert r.status_code == 403, r.text
    assert scalar(db_url, "SELECT current_lat FROM technicians WHERE id = %s", (ben,)) is None


def test_a_field_engineer_cannot_read_every_client(db_url: str) -> None:
    """The client list and client records are refused to field engineers; dispatchers read them."""
    fleet = seed(db_url)
    with api_client(db_url) as api:
        field = auth(token(db_url, "field_engineer"))
        assert api.get(f"{BASE}/clients", headers=field).status_code == 403
        assert api.get(f"{BASE}/clients/{fleet.client}", headers=field).status_code == 403
        dispatcher = auth(token(db_url, "dispatcher"))
        assert api.get(f"{BASE}/clients", headers=dispatcher).json()["total"] == 1


def test_coordinates_sent_by_someone_else_do_not_move_the_assigned_technician(db_url: str) -> None:
    """A dispatcher's status change with coordinates is recorded with them, but Ana (the assignee) does not move."""
    fleet = seed(db_url)
    ticket, ana = fleet.tickets["assigned"], fleet.technicians["ana"]
    with api_client(db_url) as api:
        r = api.post(
            f"{BASE}/tickets/{ticket}/status",
            json={"status": "en_route", "lat": 47.0, "lon": 9.0},
            headers=auth(token(db_url, "dispatcher", "dora")),
        )
    assert r.status_code == 200, r.text
    assert r.json()["history"][-1] | {"at": None} == {
        "status": "en_route",
        "at": None,
        "actor": "dora",
        "lat": 47.0,
        "lon": 9.0,
    }
    assert scalar(db_url, "SELECT current_lat FROM technicians WHERE id = %s", (ana,)) is None


def test_contact_details_are_shown_only_to_dispatchers_and_admins(db_url: str) -> None:
    """Field engineers, reliability engineers and viewers get technicians without the email and phone keys."""
    fleet = seed(db_url)
    ana = fleet.technicians["ana"]
    with api_client(db_url) as api:
        for role in ("dispatcher", "admin"):
            h = auth(token(db_url, role))
            assert api.get(f"{BASE}/technicians/{ana}", headers=h).json()["email"] == "ana@example.com"
            assert {"email", "phone"} <= api.get(f"{BASE}/technicians", headers=h).json()["items"][0].keys()
        for role in ("field_engineer", "reliability_engineer"):
            h = auth(token(db_url, role))
            one = api.get(f"{BASE}/technicians/{ana}", headers=h).json()
            roster = api.get(f"{BASE}/technicians", headers=h).json()["items"]
            assert one["name"] == "Ana Ortiz" and "email" not in one and "phone" not in one, role
            assert all("email" not in t and "phone" not in t for t in roster), role


# --- tokens bound to a technician: a phone carries only its owner's rights ---------------------------


def test_a_bound_field_engineer_cancels_and_closes_only_their_own_tickets(db_url: str) -> None:
    """Ana's token cancels Ana's ticket and closes what Ana resolved; Ben's token is refused both."""
    fleet = seed(db_url)
    ana, ben = fleet.technicians["ana"], fleet.technicians["ben"]
    resolved = _resolved_by(db_url, fleet, ana)
    with api_client(db_url) as api:
        bens = auth(token(db_url, "field_engineer", "ben-phone", technician=ben))
        anas = auth(token(db_url, "field_engineer", "ana-phone", technician=ana))
        cancel = {"status": "cancelled"}
        refused = api.post(f"{BASE}/tickets/{fleet.tickets['assigned']}/status", json=cancel, headers=bens)
        assert refused.status_code == 403
        assert refused.json()["detail"].startswith(f"ticket {fleet.tickets['assigned']} is not yours")
        assert api.post(f"{BASE}/tickets/{resolved}/status", json={"status": "closed"}, headers=bens).status_code == 403
        assert api.post(f"{BASE}/tickets/{resolved}/status", json={"status": "closed"}, headers=anas).status_code == 200
        r = api.post(f"{BASE}/tickets/{fleet.tickets['assigned']}/status", json=cancel, headers=anas)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"


def test_an_unbound_token_is_told_how_to_get_a_bound_one(db_url: str) -> None:
    """A field engineer token without a technician is refused own-only work with the command that fixes it."""
    fleet = seed(db_url)
    with api_client(db_url) as api:
        r = api.put(
            f"{BASE}/technicians/{fleet.technicians['ana']}/location",
            json={"lat": 1, "lon": 1},
            headers=auth(token(db_url, "field_engineer")),
        )
    assert r.status_code == 403
    assert "not bound to a technician" in r.json()["detail"] and "--technician ID" in r.json()["detail"]


def test_a_status_with_coordinates_moves_the_sender_who_holds_the_ticket(db_url: str) -> None:
    """Ana reporting en_route from her phone moves Ana; Ben stays where he was."""
    fleet = seed(db_url)
    ana, ben = fleet.technicians["ana"], fleet.technicians["ben"]
    with api_client(db_url) as api:
        r = api.post(
            f"{BASE}/tickets/{fleet.tickets['assigned']}/status",
            json={"status": "en_route", "lat": 47.5, "lon": 9.5},
            headers=auth(token(db_url, "technician", "ana-phone", technician=ana)),
        )
    assert r.status_code == 200, r.text
    where = "SELECT current_lat, current_lon FROM technicians WHERE id = %s"
    with psycopg.connect(db_url) as conn:
        assert conn.execute(where, (ana,)).fetchone() == (47.5, 9.5)
        assert conn.execute(where, (ben,)).fetchone() == (None, None)


def test_a_technician_token_sees_only_its_own_work(db_url: str) -> None:
    """Ana's technician token lists her tickets only, reads herself with contact details, and nothing else."""
    fleet = seed(db_url)
    ana, ben = fleet.technicians["ana"], fleet.technicians["ben"]
    h = auth(token(db_url, "technician", "ana-phone", technician=ana))
    with api_client(db_url) as api:
        tickets = api.get(f"{BASE}/tickets", headers=h).json()
        assert [t["id"] for t in tickets["items"]] == [fleet.tickets["assigned"]] and tickets["total"] == 1
        assert api.get(f"{BASE}/tickets/{fleet.tickets['unassigned']}", headers=h).status_code == 403
        assert api.get(f"{BASE}/tickets/{fleet.tickets['assigned']}/timeline", headers=h).status_code == 200
        roster = api.get(f"{BASE}/technicians", headers=h).json()
        assert [t["id"] for t in roster["items"]] == [ana]
        assert roster["items"][0]["email"] == "ana@example.com"
        assert api.get(f"{BASE}/technicians/{ben}", headers=h).status_code == 403
        for path in ("/devices", "/alarms", "/clients", "/kpis", "/rules"):
            assert api.get(BASE + path, headers=h).status_code == 403, path
        moved = api.put(f"{BASE}/technicians/{ana}/location", json={"lat": 48.0, "lon": 11.0}, headers=h)
        assert moved.status_code == 200 and moved.json()["current_lat"] == 48.0


def test_a_technician_token_must_name_its_technician(db_url: str) -> None:
    """Creating a technician token without a technician, or for one that does not exist, says what to do."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(ValueError, match=r"name it \(--technician ID\)"):
            create_token(conn, "phone", "technician")
        with pytest.raises(ValueError, match="no technician 4040"):
            create_token(conn, "phone", "technician", technician_id=4040)
        assert conn.execute("SELECT count(*) FROM api_tokens").fetchone()[0] == 0


def test_a_viewer_reads_everything_and_changes_nothing(db_url: str) -> None:
    """A viewer token reads assets, alarms, tickets and clients, and is refused every write."""
    fleet = seed(db_url)
    h = auth(token(db_url, "viewer"))
    with api_client(db_url) as api:
        for path in ("/devices", "/alarms", "/tickets", "/clients", "/technicians", "/kpis", "/rules", "/silences"):
            assert api.get(BASE + path, headers=h).status_code == 200, path
        alarm = fleet.alarms["active"]
        assert api.post(f"{BASE}/alarms/{alarm}/acknowledge", headers=h).status_code == 403
        assert api.post(f"{BASE}/alarms/{alarm}/comments", json={"body": "hi"}, headers=h).status_code == 403
        status = {"status": "en_route"}
        assert api.post(f"{BASE}/tickets/{fleet.tickets['assigned']}/status", json=status, headers=h).status_code == 403
        assert "email" not in api.get(f"{BASE}/technicians/{fleet.technicians['ana']}", headers=h).json()


def test_admins_create_bound_tokens_over_the_api_and_revoke_them_at_once(db_url: str) -> None:
    """POST /tokens answers the plaintext once with its binding; DELETE revokes it (401 at once); others get 403."""
    fleet = seed(db_url)
    ana = fleet.technicians["ana"]
    admin = auth(token(db_url, "admin"))
    with api_client(db_url) as api:
        body = {"name": "ana-phone", "role": "technician", "technician_id": ana}
        assert api.post(f"{BASE}/tokens", json=body, headers=auth(token(db_url, "dispatcher"))).status_code == 403
        r = api.post(f"{BASE}/tokens", json=body, headers=admin)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["token"].startswith(created["info"]["prefix"])
        assert (created["info"]["role"], created["info"]["technician_id"]) == ("technician", ana)
        phone = auth(created["token"])
        assert api.get(f"{BASE}/tickets", headers=phone).json()["total"] == 1
        listed = api.get(f"{BASE}/tokens", headers=admin).json()
        assert created["token"] not in str(listed) and ana in [t["technician_id"] for t in listed]
        unbound = api.post(f"{BASE}/tokens", json={"name": "x", "role": "technician"}, headers=admin)
        assert unbound.status_code == 422 and "--technician ID" in unbound.json()["detail"][0]["msg"]
        assert api.delete(f"{BASE}/tokens/{created['info']['id']}", headers=admin).status_code == 204
        assert api.get(f"{BASE}/tickets", headers=phone).status_code == 401
        assert api.delete(f"{BASE}/tokens/{created['info']['id']}", headers=admin).status_code == 404


# --- scopes in the domain queries: ready for client users -------------------------------------------


def test_lists_narrow_to_one_client_in_the_query(db_url: str) -> None:
    """A client-scoped view of tickets, clients, sites and devices shows that client's rows only (totals too)."""
    fleet = seed(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        other = conn.execute("INSERT INTO clients (name, segment) VALUES ('Other', 'gold') RETURNING id").fetchone()[0]
        mine, theirs = Visible(client_id=fleet.client), Visible(client_id=other)
        assert list_ticket_summaries(conn, visible=mine).total == 2
        assert list_ticket_summaries(conn, visible=theirs).total == 0
        assert [c.id for c in assets.list_(conn, assets.CLIENTS, visible=theirs).items] == [other]
        assert assets.list_(conn, assets.SITES, visible=mine).total == 2
        assert assets.list_(conn, assets.SITES, visible=theirs).total == 0
        assert list_devices(conn, visible=mine).total == 2 and list_devices(conn, visible=theirs).total == 0
        facts = assets.client_facts(conn, assets.DEVICES, fleet.devices["pump-1"])
        assert facts.client_ids == frozenset({fleet.client})
