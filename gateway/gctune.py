"""Garbage-collector settings for a gateway process (called once by ``fieldwatch gateway run`` and the bench).

Measured with ``bench/gateway.py --poll-interval 0.1`` (10k tags, 100k points/s offered): with
CPython's default thresholds (700/10/10) the cyclic collector took about a third of the gateway's CPU
and ran a full collection about once a second. Every poll allocates short-lived containers per
point (decoded values, Points, JSON dicts) that stay alive until the next publish tick, so hundreds
of young collections a second promote them and keep re-triggering full collections over a heap that
is mostly modules, the parsed config (10k pydantic Tag models) and pymodbus/paho state — objects
that live as long as the process.

:func:`tune_gc` does what ``rules.gctune`` does for ingest (the edge package does not import the
server side):

* ``gc.freeze()`` moves everything alive after start-up out of the collector's sight (still freed by
  reference counting if it dies, only never scanned again);
* a young-generation threshold of 50,000 allocations (default 700) lets a tick's temporaries die
  young instead of being promoted.

Cyclic garbage is still collected; the price is a larger young generation (a few MB).
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
