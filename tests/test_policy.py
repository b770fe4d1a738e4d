"""The permission policy as a table: principal × action × object → decision and the reason given."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwcore.policy import (
    EVERYTHING,
    POLICY,
    ROLES,
    Action,
    Facts,
    Principal,
    Scope,
    UnknownAction,
    Visible,
    decide,
    markdown_table,
    visible,
)

ROOT = Path(__file__).resolve().parent.parent
ANA, BEN, ACME, OTHER = 1, 2, 10, 11
anas_ticket = Facts("ticket", 7, frozenset({ANA}), frozenset({ACME}))
nobodys_ticket = Facts("ticket", 8, frozenset(), frozenset({ACME}))
ana = Facts("technician", ANA, frozenset({ANA}))
ben = Facts("technician", BEN, frozenset({BEN}))


def who(role: str, technician: int | None = None, client: int | None = None) -> Principal:
    return Principal(f"{role}-token", role, 1, technician, client)


@pytest.mark.parametrize(
    ("principal", "action", "facts", "allowed", "reason"),
    [
        # admin may do everything, without being listed
        (who("admin"), "token.manage", None, True, "admin may do everything"),
        (who("admin"), "ticket.update_status", anas_ticket, True, "admin may do everything"),
        # a role that is not granted the action: the roles that are
        (
            who("field_engineer"),
            "alarm.acknowledge",
            None,
            False,
            "role 'field_engineer' may not do this; allowed roles: admin, reliability_engineer, dispatcher",
        ),
        (who("viewer"), "alarm.comment", None, False, "allowed roles: admin, dispatcher, reliability_engineer"),
        (who("field_engineer"), "client.read", None, False, "may not do this"),
        (who("technician", ANA), "device.read", None, False, "may not do this"),
        # all: every object
        (who("dispatcher"), "ticket.update_status", anas_ticket, True, "dispatcher may change a ticket's status"),
        (who("viewer"), "ticket.read", None, True, "viewer may read tickets"),
        # own: only the objects of the principal's technician
        (who("field_engineer", ANA), "ticket.update_status", anas_ticket, True, "ticket 7 is yours"),
        (who("field_engineer", BEN), "ticket.update_status", anas_ticket, False, "ticket 7 is not yours"),
        (who("technician", ANA), "ticket.update_status", nobodys_ticket, False, "ticket 8 is not yours"),
        (who("technician", ANA), "technician.set_location", ana, True, "technician 1 is yours"),
        (who("technician", ANA), "technician.set_location", ben, False, "technician 2 is not yours"),
        (who("field_engineer", BEN), "technician.read_contact", ana, False, "not yours"),
        (who("field_engineer", ANA), "technician.read_contact", ana, True, "yours"),
        (who("field_engineer"), "ticket.update_status", anas_ticket, False, "not bound to a technician"),
        # own, asked for a list: allowed, and the list must be narrowed
        (who("technician", ANA), "ticket.read", None, True, "only for your own work"),
        # public: no token needed
        (Principal("anonymous"), "health.probe", None, True, "public"),
    ],
)
def test_decide(principal: Principal, action: str, facts: Facts | None, allowed: bool, reason: str) -> None:
    """Each row: the decision and (part of) the reason the caller is told."""
    d = decide(principal, action, facts)
    assert (d.allowed, reason in d.reason) == (allowed, True), d.reason


CLIENT_POLICY = {"site.read": Action("read sites", {"client_user": Scope.CLIENT}, frozenset({Scope.CLIENT}))}


@pytest.mark.parametrize(
    ("principal", "facts", "allowed", "reason"),
    [
        (who("client_user", client=ACME), Facts("site", 3, client_ids=frozenset({ACME})), True, "your client's"),
        (who("client_user", client=ACME), Facts("site", 4, client_ids=frozenset({OTHER})), False, "not your client's"),
        (who("client_user"), None, False, "not bound to one"),
        (who("client_user", client=ACME), None, True, "only for your client's sites"),
    ],
)
def test_decide_with_a_client_scope(principal: Principal, facts: Facts | None, allowed: bool, reason: str) -> None:
    """The client scope (for the client users a later change adds) decides on the object's client."""
    d = decide(principal, "site.read", facts, policy=CLIENT_POLICY)
    assert (d.allowed, reason in d.reason) == (allowed, True), d.reason


@pytest.mark.parametrize(
    ("principal", "action", "expected"),
    [
        (who("technician", ANA), "ticket.read", Visible(technician_id=ANA)),
        (who("dispatcher"), "ticket.read", EVERYTHING),
        (who("admin"), "technician.read", EVERYTHING),
    ],
)
def test_visible_narrows_lists_to_the_scope(principal: Principal, action: str, expected: Visible) -> None:
    """What a list may show follows the decision's scope."""
    assert visible(principal, decide(principal, action)) == expected


def test_a_refused_decision_shows_nothing() -> None:
    """Asking what a refused principal may see is a bug, not an empty list."""
    with pytest.raises(ValueError, match="may not do this"):
        visible(who("viewer"), decide(who("viewer"), "audit.read"))


def test_unknown_actions_are_refused_naming_the_close_ones() -> None:
    """A typo in an action name names the actions of the same family."""
    with pytest.raises(UnknownAction, match=r"known: rule\.read, rule\.write, rule\.backtest"):
        decide(who("admin"), "rule.apply")


def test_the_table_is_well_formed() -> None:
    """Grants name real roles (never admin), only scopes the action's routes enforce, and public rows grant nothing."""
    for name, act in POLICY.items():
        assert set(act.grants) <= set(ROLES) - {"admin"}, name
        assert set(act.grants.values()) <= act.scopes, f"{name} grants a scope its routes do not enforce"
        assert not (act.public and act.grants), name
        assert name.count(".") == 1 and name == name.lower(), name


def test_no_role_but_dispatcher_and_admin_sees_everyones_contact_details() -> None:
    """E-mail and phone of any technician: dispatchers and admins; the rest at most their own."""
    grants = POLICY["technician.read_contact"].grants
    assert {r for r, s in grants.items() if s is Scope.ALL} == {"dispatcher"}
    assert all(s is Scope.OWN for r, s in grants.items() if r != "dispatcher")


def test_viewers_never_write() -> None:
    """Every action granted to viewer is a read."""
    assert all(name.endswith(".read") for name, act in POLICY.items() if "viewer" in act.grants)


def test_the_documented_table_is_the_policy() -> None:
    """docs/security.md holds exactly the table generated from POLICY (`python -m fwcore.policy`)."""
    doc = (ROOT / "docs" / "security.md").read_text()
    assert markdown_table() in doc, "regenerate the table: python -m fwcore.policy > the block in docs/security.md"
