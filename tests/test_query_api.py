"""Downsampled buckets, data gaps and CSV export of one series over the HTTP API."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.timeseries import find_gaps
from tests.support.api import BASE, Seeded, seeded_api, write_points

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.fixture(scope="module")
def s(admin_db_url: str, template_db: str) -> Iterator[Seeded]:
    """The seeded fleet plus one series sampled every 10 s from T0 for 10 min, with a hole 10:03:00-10:05:00."""
    with seeded_api(admin_db_url, template_db) as seeded:
        sid = seeded.fleet.series["pump-1/vibration"]
        points = [(T0 + i * 10 * S, float(i), 0) for i in range(60) if not (18 < i < 30)]
        with psycopg.connect(seeded.url, autocommit=True) as conn:
            write_points(conn, sid, points)
        yield seeded


def _q(s: Seeded, what: str, **params: str) -> dict:
    sid = s.fleet.series["pump-1/vibration"]
    r = s.api.get(f"{BASE}/series/{sid}/{what}", params=params, headers=s.headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_buckets_give_min_max_avg_last_aligned_on_utc(s: Seeded) -> None:
    """5-minute buckets start at :00/:05 UTC and carry count, min, max, avg and the newest value."""
    body = _q(s, "buckets", **{"from": "2026-03-02T10:01:00Z", "to": "2026-03-02T10:10:00Z", "bucket": "5m"})
    assert body["bucket_s"] == 300
    first, second = body["buckets"]
    assert first["time"].startswith("2026-03-02T10:00:00")
    # 10:01:00..10:03:00 (i = 6..18) are in the first bucket; 19..29 are the hole.
    assert (first["count"], first["min"], first["max"], first["last"]) == (13, 6.0, 18.0, 18.0)
    assert first["avg"] == pytest.approx(12.0)
    assert second["time"].startswith("2026-03-02T10:05:00")
    assert (second["count"], second["min"], second["max"], second["last"]) == (30, 30.0, 59.0, 59.0)


@pytest.mark.parametrize(("bucket", "status"), [("5x", 422), ("0m", 422), ("1s", 422), ("1h", 200)])
def test_bucket_width_is_validated(s: Seeded, bucket: str, status: int) -> None:
    """A malformed width, or one giving more than 10,000 buckets, is 422 on `bucket`."""
    sid = s.fleet.series["pump-1/vibration"]
    params = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T12:00:00Z", "bucket": bucket}
    r = s.api.get(f"{BASE}/series/{sid}/buckets", params=params, headers=s.headers)
    assert r.status_code == status, r.text
    if status == 422:
        assert r.json()["detail"][0]["loc"] == ["query", "bucket"]


def test_gaps_use_the_median_cadence_and_report_the_hole(s: Seeded) -> None:
    """With a 10 s cadence the 2-minute hole is the one gap; the tail after the last point is an open gap."""
    body = _q(s, "gaps", **{"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:20:00Z"})
    assert body["cadence_s"] == 10.0 and body["threshold_s"] == 30.0
    closed, tail = body["gaps"]
    assert closed["start"].startswith("2026-03-02T10:03:00") and closed["end"].startswith("2026-03-02T10:05:00")
    assert (closed["seconds"], closed["open"]) == (120.0, False)
    assert tail["start"].startswith("2026-03-02T10:09:50") and tail["open"] is True


def test_a_gap_straddling_the_range_start_is_reported_whole(s: Seeded) -> None:
    """The point before `from` is used, so a range starting inside the hole still shows the whole gap."""
    body = _q(s, "gaps", **{"from": "2026-03-02T10:04:00Z", "to": "2026-03-02T10:09:00Z", "cadence": "10s"})
    assert [(g["seconds"], g["open"]) for g in body["gaps"]] == [(120.0, False)]


def test_find_gaps_without_enough_points_has_no_cadence() -> None:
    """Fewer than two points give no cadence and no gaps rather than a guess."""
    got = find_gaps([T0], T0 - S, T0 + S, T0 + S, 3.0, None)
    assert got == {"cadence_s": None, "threshold_s": None, "gaps": []}


def test_csv_export_has_a_header_and_every_point(s: Seeded) -> None:
    """The CSV export lists time,value,quality for every point in the range, oldest first."""
    sid = s.fleet.series["pump-1/vibration"]
    r = s.api.get(
        f"{BASE}/series/{sid}/export.csv",
        params={"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:01:00Z"},
        headers=s.headers,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["time", "value", "quality"]
    assert [float(v) for _, v, _ in rows[1:]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert s.api.get(f"{BASE}/series/999999/export.csv", headers=s.headers).status_code == 404
