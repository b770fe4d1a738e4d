"""Photo evidence from the field, stored in the database (bytea) with its geotag and time."""

from __future__ import annotations

import hashlib
from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from fwcore.events import TicketPhotoEvent, publish
from ticketing.errors import NotFound

#: Largest photo accepted (bytes); bigger uploads are refused with a clear message.
MAX_PHOTO_BYTES = 10 * 1024 * 1024
ALLOWED_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic")


class Photo(BaseModel):
    """A stored photo's metadata (the bytes are fetched separately)."""

    id: int
    ticket_id: int
    content_type: str
    size: int
    sha256: str
    lat: float | None
    lon: float | None
    taken_at: datetime
    uploaded_by: str
    uploaded_at: datetime


_COLS = "id, ticket_id, content_type, length(data) AS size, sha256, lat, lon, taken_at, uploaded_by, uploaded_at"


def add_photo(
    conn: psycopg.Connection,
    ticket_id: int,
    data: bytes,
    content_type: str,
    *,
    taken_at: datetime,
    lat: float | None,
    lon: float | None,
    actor: str,
) -> Photo:
    """Store ``data``; raises ValueError for an empty, oversized or non-image upload."""
    if not data:
        raise ValueError("the photo is empty: send the image bytes as the request body")
    if len(data) > MAX_PHOTO_BYTES:
        raise ValueError(f"the photo is {len(data)} bytes; the limit is {MAX_PHOTO_BYTES}")
    if content_type not in ALLOWED_TYPES:
        raise ValueError(f"content type {content_type!r} is not an accepted image type ({', '.join(ALLOWED_TYPES)})")
    if conn.execute("SELECT 1 FROM tickets WHERE id = %s", (ticket_id,)).fetchone() is None:
        raise NotFound(f"no ticket {ticket_id}")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""INSERT INTO ticket_photos (ticket_id, content_type, data, sha256, lat, lon, taken_at, uploaded_by)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLS}""",
            (ticket_id, content_type, data, hashlib.sha256(data).hexdigest(), lat, lon, taken_at, actor),
        )
        row = cur.fetchone()
        assert row is not None  # INSERT … RETURNING of one row
        photo = Photo(**row)
        publish(conn, TicketPhotoEvent(ticket_id=ticket_id, photo_id=photo.id))  # delivered on commit
    return photo


def list_photos(conn: psycopg.Connection, ticket_id: int) -> list[Photo]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLS} FROM ticket_photos WHERE ticket_id = %s ORDER BY id", (ticket_id,))
        return [Photo(**r) for r in cur.fetchall()]


def photo_bytes(conn: psycopg.Connection, ticket_id: int, photo_id: int) -> tuple[bytes, str]:
    row = conn.execute(
        "SELECT data, content_type FROM ticket_photos WHERE id = %s AND ticket_id = %s", (photo_id, ticket_id)
    ).fetchone()
    if row is None:
        raise NotFound(f"no photo {photo_id}")
    return bytes(row[0]), row[1]
