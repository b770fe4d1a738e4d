"""GC tuning of the gateway and server processes (fwcore/gctune.py), in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import gc, json
import gateway.cli  # what `fieldwatch gateway run` has loaded when it tunes
from fwcore.gctune import YOUNG_THRESHOLD, tune_gc
before = gc.get_threshold()
tune_gc(); tune_gc()  # idempotent
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "young": YOUNG_THRESHOLD}))
"""


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"][0] == 700  # CPython's default, so the change below is ours
    assert got["after"][0] == got["young"] == 50_000
    assert got["after"][1] >= 10 and got["after"][2] >= 10
    assert got["frozen"] > 10_000  # modules and the rest of start-up are out of the collector's sight
