"""Sequence-gap accounting as the API shows it: GET /api/v1/gateways/{id}."""

from __future__ import annotations

from ingest.writer import BatchWrite, TelemetryWriter
from tests.support.api import BASE, api_client, auth, token
from tests.support.registry import register


def test_gateway_shows_missing_sequences_and_their_ranges(db_url: str, uid: str) -> None:
    """After seq 1, 2, 5, 9 and a late 4, the gateway shows 4 missing in ranges [3,3] and [6,8]."""
    reg = register(db_url, uid)
    w = TelemetryWriter(db_url)
    try:
        for seqs in ([1, 2], [5], [9], [4]):
            w.write([BatchWrite(reg.site, reg.gateway, reg.gateway_id, s, False, []) for s in seqs])
    finally:
        w.close()
    with api_client(db_url) as client:
        r = client.get(f"{BASE}/gateways/{reg.gateway_id}", headers=auth(token(db_url, "dispatcher")))
    assert r.status_code == 200, r.text
    gw = r.json()
    assert (gw["last_seq"], gw["seq_gaps"], gw["seq_skipped_total"], gw["seq_filled_total"]) == (9, 4, 5, 1)
    assert gw["seq_missing"] == [[3, 3], [6, 8]]
