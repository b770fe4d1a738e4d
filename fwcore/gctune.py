"""Garbage-collector settings for fieldwatch's long-running processes: the edge gateway
(``fieldwatch gateway run``) and the server's ingest + rules process (``fieldwatch serve``), and their benches.

Both processes allocate, per batch or per poll tick, thousands of short-lived objects (points,
decoded values, rows, JSON dicts) that stay alive for a while. With CPython's default thresholds
(700/10/10) hundreds of young collections a second promote them, and full collections keep running
over a heap that is mostly imported modules, the parsed config and caches that never die:

* ``bench/gateway.py --poll-interval 0.1`` (10k tags, 100k points/s offered): the collector took about
  a third of the gateway's CPU, with a full collection about once a second;
* ``bench/rules.py`` (10,000 readings/s): a full collection about once a second, each pausing every
  thread for 65–500 ms on the shared 2-core machine — the main cause of the alarm-latency tail.

:func:`tune_gc`:

* ``gc.freeze()`` moves everything alive after start-up out of the collector's sight (still freed by
  reference counting if it dies, only never scanned again);
* a young-generation threshold of 50,000 allocations (default 700) lets a batch's temporaries die
  young instead of being promoted.

Cyclic garbage is still collected; the price is a larger young generation (a few MB to tens of MB).
This module imports nothing beyond the standard library, so the edge install can use it.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
_done = False


def tune_gc() -> None:
    """Freeze what start-up allocated and raise the young-generation threshold; idempotent."""
    global _done
    if _done:
        return
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, max(g1, 20), max(g2, 20))
    _done = True
