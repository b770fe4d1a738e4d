"""Report-by-exception: a table of readings -> which ones are sent, for absolute and percent deadbands."""

from __future__ import annotations

import math

import pytest

from fwcore.contract import Quality
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.report import ExceptionFilter, ReportPolicy, moved

G, B = Quality.GOOD, Quality.BAD_TIMEOUT

# (policy, [(t seconds, value, quality)], expected sent flags)
CASES = [
    pytest.param(
        ReportPolicy(), [(0, 1.0, G), (1, 1.0, G), (2, 1.0, G)], [True, True, True], id="no-deadband-sends-all"
    ),
    pytest.param(
        ReportPolicy(0.5),
        [(0, 10.0, G), (1, 10.4, G), (2, 10.5, G), (3, 10.51, G), (4, 10.2, G), (5, 9.9, G)],
        [True, False, False, True, False, True],
        id="absolute-measured-from-last-sent",
    ),
    pytest.param(
        ReportPolicy(0.5),
        [(0, 10.0, G), (1, 10.3, G), (2, 10.45, G), (3, 10.6, G)],
        [True, False, False, True],
        id="slow-drift-is-reported-once-far-enough",
    ),
    pytest.param(
        ReportPolicy(1.0, "percent"),
        [(0, 200.0, G), (1, 201.9, G), (2, 202.1, G), (3, 200.0, G)],
        [True, False, True, True],
        id="percent-of-last-sent",
    ),
    pytest.param(
        ReportPolicy(5.0, "percent"),
        [(0, 0.0, G), (1, 0.0, G), (2, 0.001, G)],
        [True, False, True],
        id="percent-from-zero-any-change",
    ),
    pytest.param(
        ReportPolicy(100.0, max_interval=10),
        [(0, 1.0, G), (5, 1.0, G), (9.99, 1.0, G), (10, 1.0, G), (15, 1.0, G), (20, 1.0, G)],
        [True, False, False, True, False, True],
        id="max-interval-heartbeat",
    ),
    pytest.param(
        ReportPolicy(100.0, max_interval=10),
        [(0, 1.0, G), (4, 500.0, G), (10, 500.0, G), (14, 500.0, G)],
        [True, True, False, True],
        id="heartbeat-counts-from-last-send",
    ),
    pytest.param(
        ReportPolicy(100.0),
        [(0, 1.0, G), (1, 0.0, B), (2, 0.0, B), (3, 1.0, G), (4, 1.0, G)],
        [True, True, False, True, False],
        id="quality-change-always-sent",
    ),
    pytest.param(
        ReportPolicy(1.0),
        [(0, 1.0, G), (1, math.nan, G), (2, math.nan, G)],
        [True, True, True],
        id="nan-is-always-a-change",
    ),
]


@pytest.mark.parametrize(("policy", "readings", "expected"), CASES)
def test_exception_filter_table(
    policy: ReportPolicy, readings: list[tuple[float, float, int]], expected: list[bool]
) -> None:
    """Each reading is sent or suppressed exactly as the table says."""
    f = ExceptionFilter()
    sent = [f.should_send("k", v, q, t, policy) for t, v, q in readings]
    assert sent == expected


def test_keys_are_independent_and_forget_resends() -> None:
    """Two tags keep separate memories, and forgetting one makes its next reading go out."""
    f, p = ExceptionFilter(), ReportPolicy(10.0)
    assert f.should_send(("d", "a"), 1.0, G, 0, p) and f.should_send(("d", "b"), 1.0, G, 0, p)
    assert not f.should_send(("d", "a"), 2.0, G, 1, p)
    f.forget(("d", "a"))
    assert f.should_send(("d", "a"), 2.0, G, 2, p)
    assert not f.should_send(("d", "b"), 2.0, G, 2, p)
    assert len(f) == 2


def test_moved_is_strictly_beyond_the_deadband() -> None:
    """A move exactly equal to the deadband stays inside it."""
    assert not moved(1.0, 1.5, ReportPolicy(0.5))
    assert moved(1.0, 1.5001, ReportPolicy(0.5))


def test_tags_take_report_settings_from_profile_overrides() -> None:
    """A per-instance override sets a tag's deadband and heartbeat; a negative deadband is refused by name."""
    base = {"site": "s", "gateway": "g", "devices": [{"name": "p1", "host": "h", "profile": "pump-p100"}]}
    base["devices"][0]["overrides"] = {"flow": {"deadband": 2, "deadband_mode": "percent", "max_interval": 60}}
    cfg = parse_config(base)
    flow = next(t for t in cfg.devices[0].tags if t.name == "flow")
    assert flow.report == ReportPolicy(2.0, "percent", 60.0)
    bad = {
        "site": "s",
        "gateway": "g",
        "devices": [{"name": "m", "host": "h", "tags": [{"name": "t", "address": 0, "deadband": -1}]}],
    }
    with pytest.raises(ConfigError, match=r"devices\[m\]\.tags\[t\]\.deadband"):
        parse_config(bad)
