"""Dead-letter rows: what is kept of refused input, and the statements that keep, replace and resolve them.

Every refusal — a message that breaks the contract, points of an unknown device, a hold that is
full — is a row in ``dead_letters`` with its reason, written in the transaction that decided it.
A point-level dead letter keeps a valid telemetry batch of just the refused points, so it can be
replayed once the cause is fixed (:mod:`ingest.deadletters`). Each row also says whose it is
(``site``/``gateway`` from the topic, the ``devices`` of its points, how many ``points``), for the
filters and the gateway's status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

from fwcore.contract import Batch, ContractError, Point, encode_batch, parse_topic


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message (or some of its points) kept with the reason it was refused.

    ``replaces``: the id of the dead letter this one is the replay outcome of (that row is updated
    in place instead of a new one being written).
    """

    topic: str
    payload: bytes
    reason: str
    detail: str = ""
    devices: tuple[str, ...] = ()
    points: int = 0
    replaces: int | None = None


def points_letter(
    topic: str,
    *,
    site: str,
    gateway: str,
    seq: int | None,
    sent_at: int,
    historical: bool,
    points: Sequence[Point],
    reason: str,
    detail: str,
    replaces: int | None = None,
) -> DeadLetter:
    """A dead letter keeping ``points`` as a batch of their own (same gateway, site, seq), replayable."""
    batch = Batch(gateway=gateway, site=site, seq=seq or 0, points=list(points), sent_at=sent_at, historical=historical)
    devices = tuple(sorted({p.device for p in points}))
    return DeadLetter(topic, encode_batch(batch), reason, detail, devices, len(points), replaces)


def clean_text(text: str) -> str:
    """``text`` safe for a PostgreSQL text column, which cannot hold NUL (shown as ``\\0`` instead)."""
    return text.replace("\x00", "\\0")


def _owner(topic: str) -> tuple[str | None, str | None]:
    try:
        site, gateway, _ = parse_topic(topic)
    except ContractError:
        return None, None
    return site, gateway


def write_letters(conn: psycopg.Connection, letters: Iterable[DeadLetter]) -> Counter[str]:
    """Insert (or, for a replay outcome, update) the dead letters; returns how many of each reason."""
    new: list[dict[str, object]] = []
    replaced: list[dict[str, object]] = []
    counts: Counter[str] = Counter()
    for d in letters:
        site, gateway = _owner(d.topic)
        row: dict[str, object] = {
            "topic": clean_text(d.topic),
            "payload": d.payload,
            "reason": clean_text(d.reason),
            "detail": clean_text(d.detail),
            "site": site,
            "gateway": gateway,
            "devices": [clean_text(x) for x in d.devices],
            "points": d.points,
            "id": d.replaces,
        }
        (new if d.replaces is None else replaced).append(row)
        counts[d.reason] += 1
    with conn.cursor() as cur:
        if new:
            cur.executemany(
                """INSERT INTO dead_letters (topic, payload, reason, detail, site, gateway, devices, points)
                   VALUES (%(topic)s, %(payload)s, %(reason)s, %(detail)s, %(site)s, %(gateway)s, %(devices)s,
                           %(points)s)""",
                new,
            )
        if replaced:
            cur.executemany(
                """UPDATE dead_letters SET payload = %(payload)s, reason = %(reason)s, detail = %(detail)s,
                          devices = %(devices)s, points = %(points)s, replays = replays + 1, replayed_at = now()
                   WHERE id = %(id)s""",
                replaced,
            )
    return counts


def resolve_letters(conn: psycopg.Connection, ids: Sequence[int]) -> int:
    """Delete dead letters whose content was stored (or held) by a replay; returns how many."""
    if not ids:
        return 0
    cur = conn.execute("DELETE FROM dead_letters WHERE id = ANY(%s)", (list(ids),))
    return cur.rowcount
