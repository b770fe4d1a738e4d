"""Who may do what, on which objects: the one permission table and the one pure decision.

Every route of the HTTP API declares one action of :data:`POLICY` (``fieldwatch.api.deps.allow``),
and nothing else decides. For each action the table gives, per role, how far the grant reaches:

* ``all`` — every object of the kind;
* ``own`` — only the objects that belong to the principal's technician: the tickets they hold (or
  held, once the ticket ended), their own technician record and position. A token that is not
  bound to a technician owns nothing;
* ``client`` — only the objects of the principal's client (that client's sites). No role grants it
  yet: it is here for the client users a later change adds, and the list queries of the actions
  that list it in :attr:`Action.scopes` already filter by it.

``admin`` may do everything and is not listed. A role absent from an action's grants may not do it.

:func:`decide` is pure. For one object the caller loads the object's :class:`Facts` through the
domain that owns it (who holds the ticket, which client it belongs to) and asks; for a list it asks
without facts and filters the query by :func:`visible` (in the database query, never afterwards).
The table is data, so the documentation (:func:`markdown_table`) and the tests read it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class Scope(StrEnum):
    """How far a grant reaches (see the module docstring)."""

    ALL = "all"
    OWN = "own"
    CLIENT = "client"


#: Accepted roles, most powerful first. ``admin`` may do everything; ``technician`` tokens are bound
#: to one technician; ``viewer`` reads and never writes.
ROLES: Final[tuple[str, ...]] = (
    "admin",
    "dispatcher",
    "reliability_engineer",
    "field_engineer",
    "technician",
    "viewer",
)
#: Roles whose tokens must name the technician they belong to.
BOUND_ROLES: Final[frozenset[str]] = frozenset({"technician"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking (or acting): a token's name and role, and what it is bound to.

    Also the *actor* of the audit log; :func:`principal_of` turns a plain name (a CLI user, a job)
    into one.
    """

    name: str
    role: str = ""
    token_id: int | None = None
    technician_id: int | None = None
    client_id: int | None = None


SYSTEM: Final = Principal("system", "system")


def principal_of(who: Principal | str) -> Principal:
    """``who`` as a :class:`Principal` (a bare name has no role: a CLI user or a job)."""
    return who if isinstance(who, Principal) else Principal(who)


@dataclass(frozen=True, slots=True)
class Facts:
    """What a scope needs to know about one object, loaded by the domain that owns the object."""

    kind: str  # "ticket": for messages
    ident: object  # its id
    technician_ids: frozenset[int] = frozenset()  # the technicians it belongs to
    client_ids: frozenset[int] = frozenset()  # the clients it belongs to


@dataclass(frozen=True, slots=True)
class Action:
    """One thing a principal may do: what it is, who may, and which scopes its routes can enforce."""

    summary: str
    grants: Mapping[str, Scope] = field(default_factory=dict)
    #: Scopes the action's routes enforce: they load the object's facts, and their lists filter by them.
    scopes: frozenset[Scope] = frozenset({Scope.ALL})
    public: bool = False  # no token needed (probes)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: allowed or not, why (said to the caller when refused), and how far it reaches."""

    allowed: bool
    reason: str
    scope: Scope | None = None


@dataclass(frozen=True, slots=True)
class Visible:
    """Which rows a list may show: every row, or only those of one technician and/or one client."""

    technician_id: int | None = None
    client_id: int | None = None

    @property
    def everything(self) -> bool:
        return self.technician_id is None and self.client_id is None


EVERYTHING: Final = Visible()


class UnknownAction(KeyError):
    """A route or a check names an action the table does not have (a typo fails at import)."""


_D, _R, _F, _T, _V = "dispatcher", "reliability_engineer", "field_engineer", "technician", "viewer"
_ALL, _OWN, _CLIENT = Scope.ALL, Scope.OWN, Scope.CLIENT


def _all(*roles: str) -> dict[str, Scope]:
    return dict.fromkeys(roles, _ALL)


#: Everyone who reads operational data (assets, telemetry, alarms, rules, KPIs).
_READERS = (_D, _R, _F, _V)

#: The table. Adding a route: give it one of these actions (``allow("ticket.read", on=TICKET)``), or
#: add a line here when it does something new. The order is the order of the documentation.
POLICY: Final[Mapping[str, Action]] = {
    # assets and telemetry
    "client.read": Action("read clients", _all(_D, _R, _V), frozenset({_ALL, _CLIENT})),
    "site.read": Action("read sites", _all(*_READERS), frozenset({_ALL, _CLIENT})),
    "gateway.read": Action("read gateways and their connection health", _all(*_READERS)),
    "gateway.configure": Action("push a configuration to a gateway (validated; it reports the outcome)", _all(_F)),
    "device.read": Action("read devices and their latest values", _all(*_READERS), frozenset({_ALL, _CLIENT})),
    "telemetry.read": Action("read series and telemetry (points, buckets, gaps, CSV export)", _all(*_READERS)),
    "registry.write": Action("create, change and delete clients, sites, gateways, devices and series"),
    "telemetry.import": Action("import a device's history from CSV"),
    # alarms and rules
    "alarm.read": Action("read alarms and their comments", _all(*_READERS)),
    "alarm.acknowledge": Action("acknowledge alarms", _all(_R, _D)),
    "alarm.comment": Action("comment on alarms", _all(_D, _R, _F)),
    "silence.read": Action("read silences and maintenance windows", _all(*_READERS)),
    "silence.write": Action("create and end silences and maintenance windows", _all(_R, _D)),
    "rule.read": Action("read rules, their versions and models", _all(*_READERS)),
    "rule.write": Action("apply, roll back and train rules", _all(_R)),
    "rule.backtest": Action("backtest rules on stored history", _all(_D, _R, _F)),
    # tickets and technicians
    "ticket.read": Action(
        "read tickets, their timeline, photos and dispatch explanation",
        {_D: _ALL, _R: _ALL, _F: _ALL, _T: _OWN, _V: _ALL},
        frozenset({_ALL, _OWN, _CLIENT}),
    ),
    "ticket.create": Action("create tickets from work orders", _all(_D)),
    "ticket.assign": Action("assign, reassign, pin and unpin tickets", _all(_D)),
    "ticket.update_status": Action(
        "change a ticket's status (with position, note, failure code, parts used)",
        {_D: _ALL, _F: _OWN, _T: _OWN},
        frozenset({_ALL, _OWN}),
    ),
    "ticket.add_evidence": Action(
        "upload photo evidence to a ticket", {_D: _ALL, _F: _OWN, _T: _OWN}, frozenset({_ALL, _OWN})
    ),
    "technician.read": Action(
        "read technicians and their skills",
        {_D: _ALL, _R: _ALL, _F: _ALL, _T: _OWN, _V: _ALL},
        frozenset({_ALL, _OWN}),
    ),
    "technician.read_contact": Action(
        "see technicians' e-mail and phone", {_D: _ALL, _F: _OWN, _T: _OWN}, frozenset({_ALL, _OWN})
    ),
    "technician.create": Action("add technicians", _all(_D)),
    "technician.manage_skills": Action("replace a technician's skills matrix", _all(_D)),
    "technician.change": Action("change a technician's details, or retire them", _all(_D)),
    "skill.read": Action("read skills (codes, names, retired or not)", _all(*_READERS, _T)),
    "skill.manage": Action("create, rename, retire and restore skills", _all(_D)),
    "technician.set_location": Action(
        "report a technician's position", {_D: _ALL, _F: _OWN, _T: _OWN}, frozenset({_ALL, _OWN})
    ),
    "kpi.read": Action("read service KPIs", _all(*_READERS)),
    # ingest's intake: devices nobody registered, and what ingest refused
    "discovered.read": Action("read devices a gateway announced that nobody registered", _all(*_READERS)),
    "discovered.decide": Action("accept a discovered device (register it, store its held data) or reject it", _all(_F)),
    "discovered.forget": Action("forget a discovered device (its held points become dead letters)"),
    "deadletter.read": Action("read what ingest refused, with the reason", _all(*_READERS)),
    "deadletter.manage": Action("replay dead letters after a fix, or purge them"),
    # integrations and administration
    "webhook.read": Action("read webhook endpoints, deliveries and dead letters", _all(_D)),
    "webhook.write": Action("create, change and delete webhook endpoints"),
    "webhook.redeliver": Action("send a dead letter again", _all(_D)),
    "audit.read": Action("read the audit log", _all(_D)),
    "token.manage": Action("create, list and revoke API tokens"),
    # no token needed
    "health.probe": Action("liveness and readiness probes", public=True),
    "metrics.read": Action("Prometheus metrics (public with FIELDWATCH_API_METRICS_PUBLIC)", _all(*_READERS)),
}


def action(name: str, policy: Mapping[str, Action] = POLICY) -> Action:
    """The action called ``name``; :class:`UnknownAction` naming the close ones otherwise."""
    try:
        return policy[name]
    except KeyError:
        family = name.split(".")[0]
        near = [a for a in policy if a.startswith(family + ".")] or list(policy)
        raise UnknownAction(f"unknown action {name!r}; known: {', '.join(near)}") from None


def allowed_roles(act: Action) -> tuple[str, ...]:
    """The roles that may do ``act`` (on some objects at least), ``admin`` first."""
    return ("admin", *(r for r in act.grants if r != "admin"))


_BIND_HINT = "ask an admin for a token bound to your technician (`fieldwatch tokens create --technician ID`)"


def decide(
    principal: Principal, name: str, facts: Facts | None = None, *, policy: Mapping[str, Action] = POLICY
) -> Decision:
    """May ``principal`` do action ``name`` — on the object described by ``facts``, or at all?

    Without ``facts`` (a list, or before the object is loaded) an allowed decision carries the scope
    the caller must restrict to (:func:`visible`). With ``facts`` the object itself is checked.
    """
    act = action(name, policy)
    if act.public:
        return Decision(True, f"{act.summary}: public", Scope.ALL)
    if principal.role == "admin":
        return Decision(True, "admin may do everything", Scope.ALL)
    scope = act.grants.get(principal.role)
    if scope is None:
        return Decision(
            False,
            f"role {principal.role!r} may not do this; allowed roles: {', '.join(allowed_roles(act))}",
        )
    if scope is Scope.ALL:
        return Decision(True, f"{principal.role} may {act.summary}", scope)
    if scope is Scope.OWN and principal.technician_id is None:
        return Decision(
            False,
            f"role {principal.role!r} may {act.summary} only for your own work, but this token is not "
            f"bound to a technician: {_BIND_HINT}",
        )
    if scope is Scope.CLIENT and principal.client_id is None:
        return Decision(False, f"role {principal.role!r} acts for one client, but this token is not bound to one")
    if facts is None:
        return Decision(True, f"{principal.role} may {act.summary}, {_scope_words(scope)}", scope)
    if scope is Scope.OWN:
        mine = principal.technician_id in facts.technician_ids
        whose = "yours" if mine else "not yours"
    else:
        mine = principal.client_id in facts.client_ids
        whose = "your client's" if mine else "not your client's"
    if mine:
        return Decision(True, f"{facts.kind} {facts.ident} is {whose}", scope)
    return Decision(
        False,
        f"{facts.kind} {facts.ident} is {whose}: role {principal.role!r} may {act.summary} {_scope_words(scope)}",
    )


def _scope_words(scope: Scope) -> str:
    return {
        Scope.ALL: "on everything",
        Scope.OWN: "only for your own work (tickets you hold, your own position)",
        Scope.CLIENT: "only for your client's sites",
    }[scope]


def visible(principal: Principal, decision: Decision) -> Visible:
    """The rows a list may show after ``decision`` allowed it (see :func:`decide`)."""
    if not decision.allowed:
        raise ValueError(f"a refused decision shows nothing: {decision.reason}")
    if decision.scope is Scope.OWN:
        return Visible(technician_id=principal.technician_id)
    if decision.scope is Scope.CLIENT:
        return Visible(client_id=principal.client_id)
    return EVERYTHING


def markdown_table(policy: Mapping[str, Action] = POLICY) -> str:
    """The table as Markdown: one row per action, one column per role (``admin`` may do everything)."""
    lines = [
        "| action | what | " + " | ".join(f"`{r}`" for r in ROLES) + " |",
        "|---|---|" + "---|" * len(ROLES),
    ]
    for name, act in policy.items():
        if act.public:
            cells = ["public"] * len(ROLES)
        else:
            grants = {"admin": Scope.ALL, **act.grants}
            cells = [grants[r].value if r in grants else "—" for r in ROLES]
        lines.append(f"| `{name}` | {act.summary} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m fwcore.policy: the table for docs/security.md
    print(markdown_table(), end="")
