"""Bind a rule to one device: attribute thresholds become numbers, the ladder becomes a tuple.

The state machine runs millions of times; it takes a :class:`CompiledRule` (plain slotted
dataclasses, no validation) so the hot path never touches pydantic. Compiling is where a
per-model rule meets per-instance limits from ``devices.attributes``; a device whose
attributes cannot supply a threshold (missing, no default, not a number) is reported with
:class:`UnboundThreshold` naming the rule, device and attribute — never silently skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rules.model import SEVERITY_RANK, AttrRef, BandLevel, LimitLevel, RuleSpec, Value

_PER_S = {"s": 1.0, "min": 60.0, "h": 3600.0}


class UnboundThreshold(ValueError):
    """A threshold refers to a device attribute the device does not have (and no default is given)."""


@dataclass(frozen=True, slots=True)
class CLevel:
    """One rung with numbers only. One-sided: ``a`` threshold, ``ca`` clear. Bands: ``[a, b]``, ``[ca, cb]``."""

    severity: str
    rank: int
    a: float
    b: float
    ca: float
    cb: float


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule bound to one device, ready for :func:`rules.engine.evaluate`."""

    rule_id: int
    kind: str  # above | below | outside | inside | rate
    levels: tuple[CLevel, ...]  # most severe first
    for_ms: int = 0
    count: int = 1
    keep_ms: int = 0
    inclusive: bool = False
    direction: str = "either"  # rate only
    per_s: float = 60.0  # rate only: the rate is in units per this many seconds


def _num(v: Value | None, attrs: dict[str, Any], where: str) -> float | None:
    if v is None or isinstance(v, float | int):
        return v
    assert isinstance(v, AttrRef)
    raw = attrs.get(v.attribute, v.default)
    if raw is None:
        raise UnboundThreshold(f"{where}: the device has no attribute {v.attribute!r} and no default is given")
    try:
        num = float(raw)
    except (TypeError, ValueError):
        raise UnboundThreshold(f"{where}: attribute {v.attribute!r} is {raw!r}, not a number") from None
    if not math.isfinite(num):
        raise UnboundThreshold(f"{where}: attribute {v.attribute!r} is {raw!r}, not a finite number")
    return num


def compile_rule(spec: RuleSpec, rule_id: int = 0, attributes: dict[str, Any] | None = None) -> CompiledRule:
    """Bind ``spec`` to a device's ``attributes``; raises :class:`UnboundThreshold`."""
    attrs = attributes or {}
    cond = spec.condition
    levels: list[CLevel] = []
    for i, lv in enumerate(cond.levels):
        where = f"rule {spec.name!r} condition.levels.{i}"
        if isinstance(lv, LimitLevel):
            a = _num(lv.threshold, attrs, f"{where}.threshold")
            ca = _num(lv.clear, attrs, f"{where}.clear")
            assert a is not None
            ca = a if ca is None else ca
            if (cond.kind == "below" and ca < a) or (cond.kind != "below" and ca > a):
                raise UnboundThreshold(f"{where}: clear {ca:g} is on the wrong side of threshold {a:g}")
            levels.append(CLevel(lv.severity, SEVERITY_RANK[lv.severity], a, a, ca, ca))
        else:
            assert isinstance(lv, BandLevel)
            lo = _num(lv.low, attrs, f"{where}.low")
            hi = _num(lv.high, attrs, f"{where}.high")
            assert lo is not None and hi is not None
            if lo > hi:
                raise UnboundThreshold(f"{where}: low {lo:g} is above high {hi:g}")
            clo = _num(lv.clear_low, attrs, f"{where}.clear_low")
            chi = _num(lv.clear_high, attrs, f"{where}.clear_high")
            clo, chi = lo if clo is None else clo, hi if chi is None else chi
            levels.append(CLevel(lv.severity, SEVERITY_RANK[lv.severity], lo, hi, clo, chi))
    return CompiledRule(
        rule_id=rule_id,
        # a no-data or anomaly score is "score above N"
        kind="above" if cond.kind in ("no_data", "anomaly") else cond.kind,
        levels=tuple(levels),
        for_ms=round(spec.for_s * 1000),
        count=spec.count,
        keep_ms=round(spec.keep_firing_for_s * 1000),
        inclusive=getattr(cond, "inclusive", False),
        direction=getattr(cond, "direction", "either"),
        per_s=_PER_S[getattr(cond, "per", "min")],
    )
