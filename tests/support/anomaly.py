"""Pump readings from the physics model for the anomaly-rule tests: generate a run, store it, read scores back.

Runs start at :data:`T0` (2023-11-14T22:13:20Z) and carry every measurement of the P100 each
:data:`STEP_S` seconds; :func:`store` writes them the way ingest commits them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg

from simulators.pump import MEASUREMENTS, PumpModel
from tests.support.points import T0

__all__ = ["STEP_S", "T0", "pump_run", "pump_segment", "scores", "store"]

#: Seconds between readings of a run.
STEP_S = 5


def pump_run(seed: int, start_ms: int, seconds: int, fault_at: int | None = None) -> list[tuple[int, dict]]:
    """A reading of every measurement each 5 s; mild bearing wear from ``fault_at`` s."""
    pump = PumpModel(seed)
    out = []
    for t in range(0, seconds, STEP_S):
        if fault_at is not None and t == fault_at:
            pump.inject_fault("bearing_wear", rate=0.05)
        r = pump.step(float(t))
        if t:
            out.append((start_ms + t * 1000, r))
    return out


def pump_segment(
    seed: int, seconds: int, fault_at: int | None = None, *, start_ms: int = T0, tags: tuple[str, ...] = MEASUREMENTS
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pump_run` as arrays for :func:`rules.anomaly.train`: ``(ts_ms, rows × tags)``."""
    run = pump_run(seed, start_ms, seconds, fault_at)
    return np.array([ts for ts, _ in run], dtype=np.int64), np.array([[r[t] for t in tags] for _, r in run])


def store(url: str, device: int, run: list[tuple[int, dict]]) -> None:
    """Insert readings straight into telemetry (as ingest would have committed them)."""
    with psycopg.connect(url, autocommit=True) as conn:
        ids = {}
        for tag in MEASUREMENTS:
            conn.execute("INSERT INTO series (device_id, tag) VALUES (%s, %s) ON CONFLICT DO NOTHING", (device, tag))
            ids[tag] = conn.execute(
                "SELECT id FROM series WHERE device_id = %s AND tag = %s", (device, tag)
            ).fetchone()[0]
        if conn.execute("SELECT to_regproc('fw_ensure_telemetry_partition') IS NOT NULL").fetchone()[0]:
            days = {datetime.fromtimestamp(ts / 1000, UTC).date() for ts, _ in run}
            for day in days:
                conn.execute("SELECT fw_ensure_telemetry_partition(%s)", (day,))
        with conn.cursor() as cur, cur.copy("COPY telemetry (series_id, time, value, quality) FROM STDIN") as cp:
            for ts, r in run:
                for tag in MEASUREMENTS:
                    cp.write_row((ids[tag], datetime.fromtimestamp(ts / 1000, UTC), r[tag], 0))


def scores(url: str, device: int, start_ms: int, end_ms: int) -> np.ndarray:
    """The "pump health" rule's anomaly scores written for ``device`` in [start_ms, end_ms), in time order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT t.value FROM telemetry t JOIN series s ON s.id = t.series_id
               WHERE s.device_id = %s AND s.tag = 'anomaly_score:pump health' AND s.unit = ''
                 AND t.time >= %s AND t.time < %s ORDER BY t.time""",
            (device, datetime.fromtimestamp(start_ms / 1000, UTC), datetime.fromtimestamp(end_ms / 1000, UTC)),
        ).fetchall()
    return np.array([r[0] for r in rows])
