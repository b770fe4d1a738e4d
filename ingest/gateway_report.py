"""What a gateway says about itself, kept for the people who look after it (the console's Gateways page).

Two messages carry it (docs/contract.md):

* the full **status** (retained, republished whenever a device goes online/offline or a remote config
  is handled): ``devices`` (name → online/offline), ``profiles`` (name → ``profile@version``) and
  ``config`` (``version`` running, ``last``: the outcome of the last remote config). :func:`parse_report`
  keeps those three, bounded, as ``gateways.report``; :func:`config_outcome` picks out the outcome so a
  new one can be announced (``gateway_config`` event);
* the **health** message (QoS 0, every few seconds): ``buffer.depth`` and ``buffer.oldest_unacked_age_s``,
  the disk buffer waiting for ingest's ack. :func:`buffer_of` reads them.

Pure: nothing here does I/O, so a malformed field is simply left out (the rest still counts).
"""

from __future__ import annotations

from typing import Any

import orjson

#: Entries kept per map (a gateway with more devices keeps the first ones; the page says so).
MAX_ENTRIES = 2000
#: Longest text kept (a name, a state, an error message).
MAX_TEXT = 2000
OUTCOMES = ("applied", "rejected", "rolled_back")


def _text(value: object) -> str | None:
    return value[:MAX_TEXT].replace("\x00", "") if isinstance(value, str) else None


def _names(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    kept: dict[str, str] = {}
    for k, v in value.items():
        name, text = _text(k), _text(v)
        if name and text is not None:
            kept[name] = text
        if len(kept) >= MAX_ENTRIES:
            break
    return kept


def _touched(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [n for n in (_text(x) for x in value[:MAX_ENTRIES]) if n]


def _last(value: object) -> dict[str, Any] | None:
    if not isinstance(value, dict) or value.get("outcome") not in OUTCOMES:
        return None
    version, ts = value.get("version"), value.get("ts")
    return {
        "version": None if version is None else _text(str(version)),
        "outcome": value["outcome"],
        "error": _text(value.get("error")) or "",
        "ts": ts if isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < 2**53 else None,
        "added": _touched(value.get("added")),
        "removed": _touched(value.get("removed")),
        "changed": _touched(value.get("changed")),
    }


def parse_report(payload: bytes) -> dict[str, Any] | None:
    """The ``devices``, ``profiles`` and ``config`` of a full status; None for a bare birth or death."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not any(k in obj for k in ("devices", "profiles", "config")):
        return None
    config = obj.get("config")
    running = config.get("version") if isinstance(config, dict) else None
    return {
        "devices": _names(obj.get("devices")),
        "profiles": _names(obj.get("profiles")),
        "config": {
            "version": None if running is None else _text(str(running)),
            "last": _last(config.get("last")) if isinstance(config, dict) else None,
        },
    }


def config_outcome(report: dict[str, Any] | None) -> tuple[str | None, str, int | None] | None:
    """(version, outcome, ts) of the last remote config a report tells of, or None."""
    last = ((report or {}).get("config") or {}).get("last")
    if not isinstance(last, dict):
        return None
    return last.get("version"), str(last.get("outcome")), last.get("ts")


def buffer_of(health: dict[str, Any]) -> tuple[int, float] | None:
    """(depth, oldest unacked age in seconds) of a health message's disk buffer, or None if absent or malformed."""
    buf = health.get("buffer")
    if not isinstance(buf, dict):
        return None
    depth, age = buf.get("depth"), buf.get("oldest_unacked_age_s")
    if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth < 2**62:
        return None
    if not isinstance(age, int | float) or isinstance(age, bool) or not 0 <= age < 1e12:
        age = 0.0
    return depth, float(age)
