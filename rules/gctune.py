"""Garbage-collector settings for the process that ingests and evaluates rules.

Measured with ``bench/rules.py``: under 10,000 readings/s CPython's default collector (thresholds
700/10/10) ran a full collection about once a second, each pausing every thread for 65–500 ms on the
shared 2-core machine — the main cause of the alarm-latency tail. Each ingest batch keeps thousands
of short-lived objects (points, rows, groups) alive across hundreds of young collections, so they are
promoted to the oldest generation and keep re-triggering full collections over a heap that is mostly
imported modules and caches that never die.

:func:`tune_gc_for_latency` (called once by the server when it starts ingest, and by the bench):

* ``gc.freeze()`` moves everything alive at start-up (modules, settings, caches) out of the collector's
  sight — it is still freed by reference counting, only never scanned again;
* a young-generation threshold of 50,000 allocations (default 700) lets a batch's temporaries die
  young instead of being promoted.

Cyclic garbage is still collected; the cost is a larger young generation (tens of MB at most).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
_done = False


def tune_gc_for_latency() -> None:
    """Freeze what start-up allocated and raise the young-generation threshold; idempotent."""
    global _done
    if _done:
        return
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, max(g1, 20), max(g2, 20))
    _done = True
