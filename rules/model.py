"""Rule definitions, mirroring the ``rules`` table, and the shape of a reading the rules need.

Only threshold rules exist so far (``kind = 'threshold'``). Later kinds (hysteresis,
N-in-a-row, no-data, anomaly models) become sibling models sharing :class:`RuleBase`.
"""

from __future__ import annotations

import operator as _op
from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Operator = Literal[">", ">=", "<", "<="]
Severity = Literal["critical", "major", "minor", "warning"]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": _op.gt,
    ">=": _op.ge,
    "<": _op.lt,
    "<=": _op.le,
}


@runtime_checkable
class Reading(Protocol):
    """What rule evaluation needs from one committed telemetry point.

    The ingest worker's ``CommittedPoint`` satisfies it; rules never import ingest.
    ``quality`` 0 is good; anything else is bad and is ignored by the state machine.
    """

    @property
    def device_id(self) -> int: ...
    @property
    def tag(self) -> str: ...
    @property
    def ts_ms(self) -> int: ...
    @property
    def value(self) -> float: ...
    @property
    def quality(self) -> int: ...


class RuleBase(BaseModel):
    """Fields every rule kind shares: identity, scope and what an alarm leads to."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    equipment_model: str | None = None  # None: every model
    tag: str
    severity: Severity = "major"
    problem_code: str
    required_skill: str | None = None
    enabled: bool = True
    version: int = 1

    def applies_to(self, equipment_model: str) -> bool:
        """Whether a device of ``equipment_model`` is in this rule's scope."""
        return self.equipment_model is None or self.equipment_model == equipment_model


class ThresholdRule(RuleBase):
    """``tag <operator> threshold`` held for ``duration_s`` seconds of source time opens an alarm."""

    kind: Literal["threshold"] = "threshold"
    operator: Operator
    threshold: float
    duration_s: float = Field(0.0, ge=0)

    def condition(self, value: float) -> bool:
        """Whether ``value`` is in the alarm region."""
        return _COMPARE[self.operator](value, self.threshold)

    @property
    def duration_ms(self) -> int:
        return round(self.duration_s * 1000)

    def worse(self, a: float, b: float) -> float:
        """The value further into the alarm region (max for ``>``/``>=``, min for ``<``/``<=``)."""
        return max(a, b) if self.operator in (">", ">=") else min(a, b)

    def describe(self) -> str:
        """``bearing_temp > 80 for 30 s`` — the condition in words, for alarm messages."""
        text = f"{self.tag} {self.operator} {self.threshold:g}"
        if self.duration_s:
            text += f" for {self.duration_s:g} s"
        return text
