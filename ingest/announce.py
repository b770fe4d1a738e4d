"""What a gateway's status says about its devices: names, profiles, tags and units (pure, no I/O).

The full status a gateway republishes after its birth (docs/contract.md, "Status payload") lists
its devices (``devices``: name → online/offline), the equipment profile of each (``profiles``) and,
since contract 1 gained it, every tag with its unit (``tags``: name → {tag: unit}). Ingest uses it
to discover devices nobody registered (before their first point arrives) and to give series the
units of the profile.

The fields are optional and additive, so a gateway that does not send them announces nothing; a
malformed entry is skipped and named in ``problems`` (ingest logs them), the status itself still
counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

#: The longest unit kept (the registry API allows 32 characters).
MAX_UNIT = 32


@dataclass(frozen=True, slots=True)
class DeviceAnnouncement:
    """One device as its gateway describes it; ``tags`` maps tag name to unit ('' when it has none)."""

    key: str
    profile: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Announcements:
    devices: tuple[DeviceAnnouncement, ...] = ()
    problems: tuple[str, ...] = ()


def _name_ok(value: object) -> bool:
    return isinstance(value, str) and bool(value) and "\x00" not in value and len(value) <= 200


def parse_announcements(payload: bytes) -> Announcements:
    """The devices named by a status payload (the caller has validated it as a status already)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Announcements()
    if not isinstance(obj, dict):
        return Announcements()
    problems: list[str] = []

    def mapping(key: str) -> dict[str, Any]:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            problems.append(f"status field {key!r} is not an object; ignored")
            return {}
        return value

    states, profiles, tags = mapping("devices"), mapping("profiles"), mapping("tags")
    out = []
    for key in sorted(set(states) | set(profiles) | set(tags)):
        if not _name_ok(key):
            problems.append(f"device name {key!r} is not usable; ignored")
            continue
        profile = profiles.get(key, "")
        if not isinstance(profile, str) or "\x00" in profile:
            problems.append(f"profile of device {key!r} is not text; ignored")
            profile = ""
        units: dict[str, str] = {}
        raw = tags.get(key, {})
        if not isinstance(raw, dict):
            problems.append(f"tags of device {key!r} are not an object; ignored")
            raw = {}
        for tag, unit in raw.items():
            if not _name_ok(tag) or not isinstance(unit, str) or "\x00" in unit or len(unit) > MAX_UNIT:
                problems.append(f"tag {tag!r} of device {key!r} (unit {unit!r}) is not usable; ignored")
                continue
            units[tag] = unit
        out.append(DeviceAnnouncement(key, profile, units))
    return Announcements(tuple(out), tuple(problems))
