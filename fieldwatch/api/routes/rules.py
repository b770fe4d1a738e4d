"""Rules as code over HTTP: list, show (with versions), apply a rules file, roll back to a version,
backtest on history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from fwcore.inputs import Input, Instant

from ..deps import Access, ConnDep, allow
from ..errors import Invalid, NotFound
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/rules", tags=["rules"])

RuleEditor = Annotated[Access, allow("rule.write")]
Reader = Annotated[Access, allow("rule.read")]


class RulePublic(BaseModel):
    id: int
    version: int
    describe: str
    auto_dispatch: bool = Field(description="whether its alarms dispatch on their own (see `validated`)")
    updated_by: str
    updated_at: datetime | None
    definition: dict[str, Any]


class RuleVersionPublic(BaseModel):
    version: int
    author: str
    created_at: datetime
    definition: dict[str, Any]


class RuleDetail(RulePublic):
    versions: list[RuleVersionPublic]


class ApplyRequest(Input):
    rules: list[dict[str, Any]] = Field(description="rule definitions, as in a rules file")
    dry_run: bool = False


class ChangePublic(BaseModel):
    name: str
    action: str
    live_version: int | None
    fields: dict[str, tuple[Any, Any]]


class ApplyResponse(BaseModel):
    changes: list[ChangePublic]
    applied: dict[str, int] = Field(description="rule name → new version")
    trained: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="anomaly rules created, or changed in what their models depend on (tags, training window, "
        "target_far, grouping, models, scope): old models are stale, {trained: [...], failed: {...}}",
    )


class RollbackRequest(Input):
    version: int = Field(ge=1, description="the stored version to make live again (as a new version)")


class IncidentIn(Input):
    start: Instant
    end: Instant
    label: str = Field("", description="the fault's kind; scores are also given per label")


class LabelIn(Input):
    time: Instant
    anomaly: bool = Field(description="whether this row is inside a fault")
    label: str = ""


class BacktestRequest(Input):
    device: str = Field(description="device id, SITE/KEY, GATEWAY/KEY or a unique KEY")
    start: Instant = Field(alias="from")
    end: Instant = Field(alias="to")
    version: int | None = None
    compare: int | None = Field(None, description="also run this stored version")
    draft: dict[str, Any] | None = Field(None, description="backtest this unapplied definition instead")
    incidents: list[IncidentIn] | None = None
    labels: list[LabelIn] | None = Field(
        None, description="per-row labels: each run of anomalous rows with one label is an incident"
    )
    tickets_as_labels: bool = False


def _public(rule: Any) -> dict[str, Any]:
    from rules.store import spec_json

    return {
        "id": rule.id,
        "version": rule.version,
        "describe": rule.spec.describe(),
        "auto_dispatch": rule.spec.auto_dispatch,
        "updated_by": rule.updated_by,
        "updated_at": rule.updated_at,
        "definition": spec_json(rule.spec),
    }


def _find(conn: Any, ref: str) -> Any:
    from rules.store import UnknownRule, find_rule

    try:
        return find_rule(conn, ref)
    except UnknownRule:
        raise NotFound("rule", ref) from None


@router.get("", response_model=list[RulePublic], summary="Every rule with its live version")
def list_rules(conn: ConnDep, _: Reader) -> list[dict[str, Any]]:
    from rules.store import list_rules as _list

    return [_public(r) for r in _list(conn)]


@router.get("/{rule}", response_model=RuleDetail, summary="One rule (by id or name) and its version history")
def get_rule(rule: str, conn: ConnDep, _: Reader) -> dict[str, Any]:
    from rules.store import rule_versions, spec_json

    r = _find(conn, rule)
    versions = [
        {"version": v.version, "author": v.author, "created_at": v.created_at, "definition": spec_json(v.spec)}
        for v in rule_versions(conn, r.id)
    ]
    return {**_public(r), "versions": versions}


@router.post(
    "/apply",
    response_model=ApplyResponse,
    summary="Validate rules, diff them against the live ones, and apply them as new versions",
    responses={422: {"description": "a rule is invalid; each problem names the rule and field"}},
)
def apply_rules(body: ApplyRequest, conn: ConnDep, access: RuleEditor) -> ApplyResponse:
    from rules.rulesfile import RulesFileError, apply_plan, parse_rules, plan, retrain_changed
    from rules.store import RuleError

    try:
        specs = parse_rules(body.rules)
    except RulesFileError as exc:
        raise Invalid("; ".join(exc.problems), ("body", "rules")) from None
    try:
        changes = plan(conn, specs)  # unknown or retired skills: refused by a dry run too
    except RuleError as exc:
        raise Invalid(str(exc), ("body", "rules")) from None
    applied: dict[str, int] = {}
    trained: dict[str, dict[str, Any]] = {}
    if not body.dry_run:
        try:
            applied = dict(apply_plan(conn, changes, author=access.principal))
        except RuleError as exc:
            raise Invalid(str(exc), ("body", "rules")) from None
        trained = {
            name: {"trained": [m.public() for m in r.trained], "failed": r.failed}
            for name, r in retrain_changed(conn, changes, author=access.principal).items()
        }
    return ApplyResponse(
        changes=[
            ChangePublic(name=c.name, action=c.action, live_version=c.live_version, fields=c.fields) for c in changes
        ],
        applied=applied,
        trained=trained,
    )


@router.post(
    "/{rule}/rollback",
    response_model=RulePublic,
    summary="Make a stored version live again, as a new version (audited as a rollback)",
    responses={404: {"description": "no such rule or version"}},
)
def rollback_rule(rule: str, body: RollbackRequest, conn: ConnDep, access: RuleEditor) -> dict[str, Any]:
    from rules.rulesfile import rollback
    from rules.store import UnknownRule, find_rule

    try:
        rollback(conn, rule, body.version, author=access.principal)
        return _public(find_rule(conn, rule))
    except UnknownRule as exc:
        raise NotFound("rule version", f"{rule}@{body.version}") from exc


@router.post("/{rule}/backtest", summary="Replay stored history through the rule; live alarms are untouched")
def backtest(
    rule: str, body: BacktestRequest, conn: ConnDep, _: Annotated[Access, allow("rule.backtest")]
) -> dict[str, Any]:
    from pydantic import ValidationError

    from rules.backtest import BacktestError, Incident
    from rules.model import RuleSpec
    from rules.scoring import incidents_from_labels
    from rules.workbench import run_backtest

    def ms(t: datetime) -> int:
        return int(t.timestamp() * 1000)

    draft = None
    if body.draft is not None:
        try:
            draft = RuleSpec.model_validate(body.draft)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Invalid(first["msg"], ("body", "draft", *map(str, first["loc"]))) from None
    else:
        _find(conn, rule)
    incidents = None
    if body.incidents is not None or body.labels is not None:
        incidents = [Incident(ms(i.start), ms(i.end), i.label) for i in body.incidents or []]
        rows = body.labels or []
        incidents += incidents_from_labels([ms(r.time) for r in rows], [r.label if r.anomaly else None for r in rows])
    runs = [body.version] + ([body.compare] if body.compare is not None else [])
    try:
        results = [
            run_backtest(
                conn,
                rule,
                body.device,
                ms(body.start),
                ms(body.end),
                version=v,
                draft=draft if i == 0 else None,
                incidents=incidents,
                tickets_as_labels=body.tickets_as_labels,
            ).as_dict()
            for i, v in enumerate(runs)
        ]
    except BacktestError as exc:
        raise Invalid(str(exc)) from None
    return {"runs": results}


@router.post("/{rule}/train", summary="Train an anomaly rule now on its known-good data (a new model version)")
def train(
    rule: str,
    conn: ConnDep,
    access: RuleEditor,
    device: Annotated[
        list[str] | None,
        Query(description="only the subject of these devices (id, SITE/KEY, GATEWAY/KEY or a unique KEY)"),
    ] = None,
) -> dict[str, Any]:
    from rules.anomaly import AnomalyTrainingError
    from rules.anomaly_rules import subject_of, train_rule
    from rules.devices import UnknownDevice, resolve_device
    from rules.model import Anomaly

    r = _find(conn, rule)
    subjects = None
    try:
        if device:
            if not isinstance(r.spec.condition, Anomaly):
                raise AnomalyTrainingError(f"rule {r.name!r} is not an anomaly rule")
            subjects = [subject_of(r.spec.condition, resolve_device(conn, d)) for d in device]
        report = train_rule(conn, r, author=access.principal.name, subjects=subjects)
    except (AnomalyTrainingError, UnknownDevice) as exc:
        raise Invalid(str(exc)) from None
    return {"trained": [m.public() for m in report.trained], "failed": report.failed}


@router.get(
    "/{rule}/models",
    summary="Every trained model version of an anomaly rule, newest first; `metrics` is the model card",
    description="The card: kind, features, window, components, training and calibration rows, threshold, target, "
    "calibration and held-out false-alarm rates, selection scores of every candidate, the windows per device and "
    "what was left out of them (alarms, maintenance, tickets, likely contamination), warnings.",
)
def models(rule: str, conn: ConnDep, _: Reader) -> list[dict[str, Any]]:
    from rules.anomaly_rules import model_history

    return model_history(conn, _find(conn, rule).id)


class ValidateRequest(Input):
    validated: bool = Field(True, description="false: hold its alarms for review again")


@router.post(
    "/{rule}/validate",
    response_model=RulePublic,
    summary="Mark a rule validated: its alarms dispatch technicians on their own (a new rule version)",
)
def validate(rule: str, conn: ConnDep, access: RuleEditor, body: ValidateRequest | None = None) -> dict[str, Any]:
    from rules.store import set_rule_validated

    r = _find(conn, rule)
    new, _ = set_rule_validated(conn, r.id, True if body is None else body.validated, author=access.principal.name)
    return _public(new)


@router.get(
    "/{rule}/health",
    summary="Is the rule evaluating each device in its scope? evaluating, warming_up, waiting or error, since when",
    description="`error` names the reason (e.g. a device attribute a threshold needs is missing or not a number) and "
    "the open rule error: an alarm of its own kind for the rule's owner (`owner`, who last changed the rule), cleared "
    "when the device is evaluated again; it never opens a ticket.",
)
def health(rule: str, conn: ConnDep, _: Reader) -> dict[str, Any]:
    from rules.health import rule_health

    return rule_health(conn, _find(conn, rule).id).model_dump()
