"""The alarm lifecycle around the state machine: comments, silences, maintenance windows, suppression.

Suppression hides an alarm from people and ticketing; it never stops evaluation and never loses
the alarm. A suppressed alarm is a normal ``alarms`` row with ``suppressed_by`` saying why:

* ``maintenance:ID`` / ``silence:ID`` — a window in ``silences`` covers the reading's source time
  and matches the alarm (every non-null of device, site, rule must match; maintenance wins);
* ``parent:ALARM_ID`` — an ancestor asset (``devices.parent_id``, any depth) already has an open
  alarm with the same problem code: the child's alarm is a duplicate of it;
* ``flapping:ALARM_ID`` — the pair keeps flapping and that alarm already stands for the burst.

Suppressed openings emit ``alarm_suppressed`` instead of ``alarm_opened`` (ticketing only acts on
``alarm_opened``). :func:`release_suppressed` (a scheduled job, also run when a silence is ended)
makes a still-open alarm visible — with a late ``alarm_opened`` — once its silence has ended or its
parent alarm has cleared: maintenance over and the pump still broken must not stay quiet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import psycopg
from psycopg.rows import dict_row

from fwcore import audit, errors
from fwcore.events import AlarmCommentedEvent, AlarmOpenedEvent, SilenceCreatedEvent, publish, publish_all
from fwcore.policy import Principal, principal_of
from rules.devices import UnknownDevice, resolve_device
from rules.model import DeviceInfo, Rule

SilenceKind = Literal["silence", "maintenance"]


class LifecycleError(errors.Invalid):
    """A comment or silence cannot be stored as given; the message says what to change (a ValueError)."""


class UnknownAlarm(LifecycleError, errors.NotFound):
    """No alarm has this id (reported as not found, not as invalid)."""


class UnknownSilence(LifecycleError, errors.NotFound):
    """No silence has this id (reported as not found, not as invalid)."""


# --- comments -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    alarm_id: int
    author: str
    body: str
    created_at: datetime


def add_comment(conn: psycopg.Connection, alarm_id: int, *, author: Principal | str, body: str) -> Comment:
    """Append a comment to an alarm: who and when are stored with it, and it is audited (``alarm.comment``)
    in the same transaction, so the log holds the words exactly as they were added."""
    if not body.strip():
        raise LifecycleError("a comment needs some text")
    actor = principal_of(author)
    with conn.transaction():
        found = conn.execute("SELECT device_id FROM alarms WHERE id = %s", (alarm_id,)).fetchone()
        if found is None:
            raise UnknownAlarm(f"alarm {alarm_id} does not exist")
        row = conn.execute(
            "INSERT INTO alarm_comments (alarm_id, author, body) VALUES (%s, %s, %s)"
            " RETURNING id, alarm_id, author, body, created_at",
            (alarm_id, actor.name, body),
        ).fetchone()
        assert row is not None
        comment = Comment(*row)
        audit.record(
            conn,
            actor,
            "alarm.comment",
            "alarm",
            alarm_id,
            before=None,
            after={"comment_id": comment.id, "author": comment.author, "body": comment.body},
        )
        publish(conn, AlarmCommentedEvent(alarm_id=alarm_id, device_id=found[0], comment_id=comment.id))
    return comment


def list_comments(conn: psycopg.Connection, alarm_id: int) -> list[Comment]:
    """An alarm's comments, oldest first."""
    if conn.execute("SELECT 1 FROM alarms WHERE id = %s", (alarm_id,)).fetchone() is None:
        raise UnknownAlarm(f"alarm {alarm_id} does not exist")
    rows = conn.execute(
        "SELECT id, alarm_id, author, body, created_at FROM alarm_comments WHERE alarm_id = %s ORDER BY id",
        (alarm_id,),
    ).fetchall()
    return [Comment(*r) for r in rows]


def comments_of(conn: psycopg.Connection, alarm_ids: list[int]) -> dict[int, list[Comment]]:
    """The comments of several alarms at once (a page of them), oldest first; alarms without any are absent."""
    rows = conn.execute(
        "SELECT id, alarm_id, author, body, created_at FROM alarm_comments WHERE alarm_id = ANY(%s) ORDER BY id",
        (alarm_ids,),
    ).fetchall()
    found: dict[int, list[Comment]] = {}
    for r in rows:
        found.setdefault(r[1], []).append(Comment(*r))
    return found


# --- silences and maintenance windows -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    kind: SilenceKind
    device_id: int | None
    site_id: int | None
    rule_id: int | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime

    def active_at(self, when: datetime) -> bool:
        return self.starts_at <= when < self.ends_at


_SILENCE_COLS = "id, kind, device_id, site_id, rule_id, starts_at, ends_at, reason, created_by, created_at"


def resolve_targets(
    conn: psycopg.Connection, *, device: str | None = None, site: str | None = None, rule: str | None = None
) -> tuple[int | None, int | None, int | None]:
    """(device_id, site_id, rule_id) from a device id, ``SITE/KEY``, ``GATEWAY/KEY`` or unique key, a site slug
    and a rule id/name."""
    from rules.store import UnknownRule, find_rule

    device_id = site_id = rule_id = None
    try:
        if device is not None:
            device_id = resolve_device(conn, device).id
        if rule is not None:
            rule_id = find_rule(conn, rule).id
    except (UnknownDevice, UnknownRule) as exc:
        raise LifecycleError(str(exc)) from None
    if site is not None:
        row = conn.execute("SELECT id FROM sites WHERE slug = %s", (site,)).fetchone()
        if row is None:
            raise LifecycleError(f"no site {site!r}; GET /api/v1/devices shows the sites in use")
        site_id = row[0]
    return device_id, site_id, rule_id


def create_silence(
    conn: psycopg.Connection,
    *,
    created_by: Principal | str,
    ends_at: datetime,
    starts_at: datetime | None = None,
    kind: SilenceKind = "silence",
    device_id: int | None = None,
    site_id: int | None = None,
    rule_id: int | None = None,
    reason: str = "",
) -> Silence:
    """Create a silence or maintenance window; every given target must match for it to apply (audited)."""
    actor = principal_of(created_by)
    if device_id is None and site_id is None and rule_id is None:
        raise LifecycleError("a silence needs a device, a site or a rule (or several: all must match)")
    starts = starts_at or datetime.now(UTC)
    if ends_at <= starts:
        raise LifecycleError(f"the window must end after it starts ({starts.isoformat()} → {ends_at.isoformat()})")
    try:
        with conn.transaction():
            row = conn.execute(
                f"""INSERT INTO silences (kind, device_id, site_id, rule_id, starts_at, ends_at, reason, created_by)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_SILENCE_COLS}""",
                (kind, device_id, site_id, rule_id, starts, ends_at, reason, actor.name),
            ).fetchone()
            assert row is not None
            audit.record(conn, actor, "silence.create", "silence", row[0], before=None, after=_audited(Silence(*row)))
            publish(conn, SilenceCreatedEvent(silence_id=row[0], kind=kind, device_id=device_id))
    except psycopg.errors.ForeignKeyViolation as exc:
        raise LifecycleError(f"unknown device, site or rule: {exc.diag.message_detail}") from None
    assert row is not None
    return Silence(*row)


def list_silences(conn: psycopg.Connection, *, active_only: bool = False) -> list[Silence]:
    """Silences, newest first; ``active_only``: those whose window has not ended yet."""
    where = "WHERE ends_at > now()" if active_only else ""
    rows = conn.execute(f"SELECT {_SILENCE_COLS} FROM silences {where} ORDER BY id DESC").fetchall()
    return [Silence(*r) for r in rows]


def _audited(s: Silence) -> dict[str, object]:
    return {
        "kind": s.kind,
        "device_id": s.device_id,
        "site_id": s.site_id,
        "rule_id": s.rule_id,
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "reason": s.reason,
    }


def end_silence(conn: psycopg.Connection, silence_id: int, *, by: Principal | str) -> tuple[Silence, list[int]]:
    """End a window now (kept for the record) and release the alarms it held; returns (silence, released ids).

    Ending a window that is still running is audited (``silence.end``); one already over is left as it is.
    """
    actor = principal_of(by)
    with conn.transaction():
        old = conn.execute(f"SELECT {_SILENCE_COLS} FROM silences WHERE id = %s FOR UPDATE", (silence_id,)).fetchone()
        if old is None:
            raise UnknownSilence(f"silence {silence_id} does not exist; `fieldwatch rules silence list` shows them")
        row = conn.execute(
            f"""UPDATE silences SET ends_at = greatest(starts_at + interval '1 microsecond', least(ends_at, now())),
                       reason = CASE WHEN ends_at > now() THEN reason || %s ELSE reason END
                WHERE id = %s RETURNING {_SILENCE_COLS}""",
            (f" [ended by {actor.name}]", silence_id),
        ).fetchone()
        assert row is not None
        before, after = Silence(*old), Silence(*row)
        if after.ends_at != before.ends_at:
            audit.record(
                conn, actor, "silence.end", "silence", silence_id, before=_audited(before), after=_audited(after)
            )
    return after, release_suppressed(conn)


# --- the decision made when an alarm opens --------------------------------------------------------


def suppression_for(
    conn: psycopg.Connection, rule: Rule, device: DeviceInfo | None, device_id: int, when: datetime
) -> tuple[str | None, bool]:
    """Why an alarm opening now would be suppressed (None: it is visible), and whether it is the flapping one."""
    row = conn.execute(
        """SELECT kind || ':' || id FROM silences
           WHERE starts_at <= %(t)s AND ends_at > %(t)s
             AND (device_id IS NULL OR device_id = %(d)s)
             AND (rule_id IS NULL OR rule_id = %(r)s)
             AND (site_id IS NULL OR site_id = (SELECT site_id FROM devices WHERE id = %(d)s))
           ORDER BY kind = 'maintenance' DESC, id LIMIT 1""",
        {"t": when, "d": device_id, "r": rule.id},
    ).fetchone()
    if row is not None:
        return row[0], False
    if device is None or device.parent_id is not None:
        row = conn.execute(
            """WITH RECURSIVE anc (id, depth) AS (
                   SELECT parent_id, 1 FROM devices WHERE id = %(d)s AND parent_id IS NOT NULL
                   UNION ALL
                   SELECT d.parent_id, anc.depth + 1 FROM devices d JOIN anc ON d.id = anc.id
                   WHERE d.parent_id IS NOT NULL AND anc.depth < 32)
               SELECT a.id FROM anc JOIN alarms a ON a.device_id = anc.id AND a.cleared_at IS NULL
               JOIN rules r ON r.id = a.rule_id AND r.problem_code = %(p)s
               ORDER BY anc.depth, a.id LIMIT 1""",
            {"d": device_id, "p": rule.spec.problem_code},
        ).fetchone()
        if row is not None:
            return f"parent:{row[0]}", False
    flap = rule.spec.flapping
    if flap is None:
        return None, False
    window = timedelta(seconds=flap.window_s)
    prev = conn.execute(
        """SELECT id, triggered_at, flapping, suppressed_by FROM alarms
           WHERE rule_id = %s AND device_id = %s AND triggered_at <= %s
           ORDER BY triggered_at DESC, id DESC LIMIT 1""",
        (rule.id, device_id, when),
    ).fetchone()
    if prev is not None and when - prev[1] <= window:
        if prev[2]:
            return f"flapping:{prev[0]}", False
        if prev[3] is not None and prev[3].startswith("flapping:"):
            return prev[3], False
    recent = conn.execute(
        "SELECT count(*) FROM alarms"
        " WHERE rule_id = %s AND device_id = %s AND triggered_at > %s AND triggered_at <= %s",
        (rule.id, device_id, when - window, when),
    ).fetchone()
    assert recent is not None
    return None, recent[0] + 1 >= flap.transitions


# --- releasing alarms whose reason to be suppressed is gone ----------------------------------------


def release_suppressed(conn: psycopg.Connection) -> list[int]:
    """Make open alarms visible whose silence has ended or whose parent alarm cleared; returns their ids.

    Each released alarm gets its (late) ``alarm_opened`` event on commit. Flapping-suppressed alarms
    stay suppressed: the flapping alarm already stood for them.
    """
    with conn.transaction():
        rows = conn.execute(
            """UPDATE alarms a SET suppressed_by = NULL
               WHERE a.id IN (
                   SELECT x.id FROM alarms x
                   WHERE x.suppressed_by IS NOT NULL AND x.cleared_at IS NULL
                     AND (
                       (x.suppressed_by ~ '^(silence|maintenance):[0-9]+$' AND NOT EXISTS (
                           SELECT 1 FROM silences s
                           WHERE s.id = split_part(x.suppressed_by, ':', 2)::int AND s.ends_at > now()))
                       OR (x.suppressed_by ~ '^parent:[0-9]+$' AND NOT EXISTS (
                           SELECT 1 FROM alarms p
                           WHERE p.id = split_part(x.suppressed_by, ':', 2)::bigint AND p.cleared_at IS NULL)))
                   FOR UPDATE SKIP LOCKED)
               RETURNING a.id, a.rule_id, a.device_id""",
        ).fetchall()
        publish_all(
            conn,
            [AlarmOpenedEvent(alarm_id=a, device_id=d, rule_id=r, released=True) for a, r, d in rows],
        )
    return sorted(r[0] for r in rows)


def release_job(db_url: str) -> int:
    """Scheduler entry point: :func:`release_suppressed` on a fresh connection; returns how many were released."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return len(release_suppressed(conn))


def silence_rows(conn: psycopg.Connection, silences: list[Silence]) -> list[dict[str, object]]:
    """Silences with their targets' names (device key, site slug, rule name), for listings."""
    if not silences:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """SELECT s.id, d.key AS device, st.slug AS site, r.name AS rule
               FROM silences s LEFT JOIN devices d ON d.id = s.device_id LEFT JOIN sites st ON st.id = s.site_id
               LEFT JOIN rules r ON r.id = s.rule_id WHERE s.id = ANY(%s)""",
            ([s.id for s in silences],),
        )
        names = {r["id"]: r for r in cur.fetchall()}
    out = []
    for s in silences:
        n = names.get(s.id, {})
        out.append(
            {
                "id": s.id,
                "kind": s.kind,
                "device_id": s.device_id,
                "device": n.get("device"),
                "site_id": s.site_id,
                "site": n.get("site"),
                "rule_id": s.rule_id,
                "rule": n.get("rule"),
                "starts_at": s.starts_at,
                "ends_at": s.ends_at,
                "reason": s.reason,
                "created_by": s.created_by,
                "created_at": s.created_at,
            }
        )
    return out
