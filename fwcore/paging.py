"""One page of a list query and the total behind it: what every domain's ``list_*`` returns.

:func:`fetch_page` runs the page and the count with the same conditions, so ``total`` always
describes the rows the page was cut from. Only fixed SQL fragments (``LiteralString``) are joined;
every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, LiteralString, TypeVar

import psycopg
from psycopg.rows import dict_row

T = TypeVar("T")
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """``items`` of one page; ``total`` counts every row matching the filters. ``limit`` None: no limit."""

    items: list[T]
    total: int
    limit: int | None
    offset: int


def where(conditions: Sequence[LiteralString]) -> LiteralString:
    """`` WHERE a AND b`` for the given conditions, or nothing."""
    return (" WHERE " + " AND ".join(conditions)) if conditions else ""


def fetch_page(
    conn: psycopg.Connection,
    select: LiteralString,
    count_from: LiteralString,
    conditions: Sequence[LiteralString],
    order: LiteralString,
    params: dict[str, Any],
    record: Callable[[Row], T],
    *,
    limit: int | None,
    offset: int,
) -> Page[T]:
    """One page of ``select`` (each row, as a dict, made a record by ``record``) and the count of
    ``count_from`` rows matching the same ``conditions``."""
    cond = where(conditions)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            select + cond + " ORDER BY " + order + " LIMIT %(limit)s OFFSET %(offset)s",
            {**params, "limit": limit, "offset": offset},
        ).fetchall()
        counted = cur.execute("SELECT count(*) AS n FROM " + count_from + cond, params).fetchone()
    assert counted is not None
    return Page(items=[record(r) for r in rows], total=counted["n"], limit=limit, offset=offset)
