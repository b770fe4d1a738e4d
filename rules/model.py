"""What a rule *is*, as users write it (YAML, API) and as it is stored (``rules.definition``).

A rule watches one tag on the devices in its scope::

    name: hot bearing
    tag: bearing_temp
    condition:                      # a discriminated union on ``kind``
      kind: above                   # above | below | outside | inside | rate
      levels:                       # a severity ladder; one level may be written inline
        - {severity: critical, threshold: 95}
        - {severity: major, threshold: {attribute: max_bearing_temp, default: 80}, clear: 75}
    for_s: 30                       # the condition must hold this long (source time) …
    count: 3                        # … and for this many readings in a row
    keep_firing_for_s: 60           # stay active this long after the condition stops
    scope: {equipment_models: [P100], sites: [], clients: [], devices: []}
    problem_code: BEARING_OVERHEAT

Thresholds are numbers or ``{attribute: NAME, default: X}``, read per device from
``devices.attributes``: one per-model rule, per-instance limits. Binding them to a
device happens in :mod:`rules.compile`; the state machine only ever sees numbers.

The pydantic models validate; error messages carry the field path (``condition.levels.0.clear``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["critical", "major", "minor", "warning"]
#: Lower is more severe.
SEVERITY_RANK: dict[str, int] = {"critical": 0, "major": 1, "minor": 2, "warning": 3}
Operator = Literal[">", ">=", "<", "<="]


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


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttrRef(_Strict):
    """A threshold read from ``devices.attributes[attribute]``; ``default`` when the device lacks it."""

    attribute: str = Field(min_length=1)
    default: float | None = None


Value = float | AttrRef


class LimitLevel(_Strict):
    """One rung of a one-sided ladder: trigger beyond ``threshold``; clear only back past ``clear``."""

    severity: Severity = "major"
    threshold: Value
    clear: Value | None = None  # hysteresis: None means "clears when it no longer triggers"


class BandLevel(_Strict):
    """One rung of a two-sided ladder: a band ``[low, high]`` and optional clear band."""

    severity: Severity = "major"
    low: Value
    high: Value
    clear_low: Value | None = None
    clear_high: Value | None = None

    @model_validator(mode="after")
    def _ordered(self) -> BandLevel:
        if isinstance(self.low, float) and isinstance(self.high, float) and self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not be above high ({self.high:g})")
        return self


def _inline_level(data: Any, fields: tuple[str, ...]) -> Any:
    """Accept a single level written inline (``threshold: 80``) instead of ``levels: [...]``."""
    if isinstance(data, dict) and "levels" not in data and any(f in data for f in fields):
        data = dict(data)
        level = {k: data.pop(k) for k in (*fields, "severity") if k in data}
        data["levels"] = [level]
    return data


def _unique_severities(levels: list[Any]) -> list[Any]:
    seen = [lv.severity for lv in levels]
    dupes = sorted({s for s in seen if seen.count(s) > 1})
    if dupes:
        raise ValueError(f"each severity may appear once in a ladder; repeated: {', '.join(dupes)}")
    return sorted(levels, key=lambda lv: SEVERITY_RANK[lv.severity])


class _LimitCondition(_Strict):
    levels: list[LimitLevel] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _inline(cls, data: Any) -> Any:
        return _inline_level(data, ("threshold", "clear"))

    @field_validator("levels")
    @classmethod
    def _ladder(cls, levels: list[LimitLevel]) -> list[LimitLevel]:
        return _unique_severities(levels)


class Above(_LimitCondition):
    """Alarm while the value is above (``inclusive``: at or above) a threshold; ``clear`` below it."""

    kind: Literal["above"] = "above"
    inclusive: bool = False

    @model_validator(mode="after")
    def _hysteresis(self) -> Above:
        for i, lv in enumerate(self.levels):
            if isinstance(lv.clear, float) and isinstance(lv.threshold, float) and lv.clear > lv.threshold:
                raise ValueError(f"levels.{i}.clear ({lv.clear:g}) must not be above threshold ({lv.threshold:g})")
        return self


class Below(_LimitCondition):
    """Alarm while the value is below (``inclusive``: at or below) a threshold; ``clear`` above it."""

    kind: Literal["below"] = "below"
    inclusive: bool = False

    @model_validator(mode="after")
    def _hysteresis(self) -> Below:
        for i, lv in enumerate(self.levels):
            if isinstance(lv.clear, float) and isinstance(lv.threshold, float) and lv.clear < lv.threshold:
                raise ValueError(f"levels.{i}.clear ({lv.clear:g}) must not be below threshold ({lv.threshold:g})")
        return self


class RateOfChange(_LimitCondition):
    """Alarm while the value changes faster than ``threshold`` units per ``per`` (between good readings)."""

    kind: Literal["rate"] = "rate"
    direction: Literal["rise", "fall", "either"] = "either"
    per: Literal["s", "min", "h"] = "min"
    inclusive: bool = False


class _BandCondition(_Strict):
    levels: list[BandLevel] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _inline(cls, data: Any) -> Any:
        return _inline_level(data, ("low", "high", "clear_low", "clear_high"))

    @field_validator("levels")
    @classmethod
    def _ladder(cls, levels: list[BandLevel]) -> list[BandLevel]:
        return _unique_severities(levels)


class Outside(_BandCondition):
    """Alarm while the value is outside ``[low, high]``; clears once back inside ``[clear_low, clear_high]``."""

    kind: Literal["outside"] = "outside"


class Inside(_BandCondition):
    """Alarm while the value is inside ``[low, high]`` (a forbidden band, e.g. a resonance speed)."""

    kind: Literal["inside"] = "inside"


class NoData(_LimitCondition):
    """Silence, not values: evaluated by a scheduled job (:mod:`rules.nodata`), not by arriving readings.

    The score compared with the levels' thresholds is how long the target has been silent, in
    multiples of its normal cadence (``threshold: 3`` = three readings missed):

    * ``series`` — the rule's tag on each device in scope; cadence = median gap of its last 50 readings;
    * ``device`` — any tag of the device (``tag: "*"``); the device's fastest series sets the cadence;
    * ``gateway`` — the device's gateway reports ``offline`` (retained birth/death status); the score
      is minutes offline.

    Learned cadences are floored at ``min_cadence_s`` so a burst of back-filled readings does not
    make a normal pause look like an outage.
    """

    kind: Literal["no_data"] = "no_data"
    target: Literal["series", "device", "gateway"] = "series"
    min_cadence_s: float = Field(1.0, gt=0)


class Window(_Strict):
    """One device's known-good window (``training.devices``)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


#: What training leaves out of its windows: alarm periods (other rules), maintenance windows, tickets.
Exclusion = Literal["alarms", "maintenance", "tickets"]


class Training(_Strict):
    """The known-good data an anomaly model learns from, resolved per device.

    One of: ``start``/``end`` (the same window for every device), ``last_days`` (the last N days of each
    device's data, up to now) or ``first_days`` (the first N days of each device's data); ``devices`` gives
    some (or all) devices a window of their own (by key, ``site/key`` or id). Known alarm, maintenance
    and ticket periods are left out (``exclude``), and the window is widened once by what they took, so
    "N days" means N days of clean data where history allows. ``screen`` looks for faults nobody recorded.
    ``insufficient_data: warn`` trains even when the data cannot support the target rate (flagged on
    the model card) instead of refusing.
    """

    start: datetime | None = None
    end: datetime | None = None
    last_days: float | None = Field(None, gt=0)
    first_days: float | None = Field(None, gt=0)
    devices: dict[str, Window] = {}
    exclude: list[Exclusion] = ["alarms", "maintenance", "tickets"]
    screen: bool = True
    insufficient_data: Literal["refuse", "warn"] = "refuse"

    @model_validator(mode="after")
    def _one_window(self) -> Training:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end (or last_days, or first_days)")
        given = [
            w
            for w, on in (
                ("start/end", self.start is not None),
                ("last_days", self.last_days is not None),
                ("first_days", self.first_days is not None),
            )
            if on
        ]
        if len(given) > 1:
            raise ValueError(f"give one default window, not {' and '.join(given)}")
        if not given and not self.devices:
            raise ValueError("give start and end, last_days or first_days — or a window per device under devices")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


#: Where an anomaly alarm clears when the rule leaves ``levels`` out (in multiples of the threshold): a fault's
#: score wavers around the threshold, and clearing at the threshold cut one fault into many short alarms.
ANOMALY_CLEAR = 0.7
#: Features when a rule leaves ``features`` out: for several tags the readings themselves, their departure from
#: the usual value at that hour (day and night) and their windowed mean (their relations carry the information;
#: the mean makes a small step, drift or broken correlation stand out of the noise), and each one's spread (a stuck
#: sensor, added noise), scored as separate groups (:func:`rules.anomaly.feature_groups`); how one signal moves
#: for a single tag.
DEFAULT_FEATURES: tuple[str, ...] = ("level", "time_of_day", "mean", "spread")
SINGLE_TAG_FEATURES: tuple[str, ...] = ("level", "spread", "slope", "rate")
#: The anomaly model kinds (:data:`rules.anomaly.KINDS`).
ModelKind = Literal["residual", "pca", "iforest", "knn"]
#: Candidate models when a rule leaves ``models`` out: each feature regressed on the other tags' features, scored
#: by its residual (:class:`rules.anomaly._Residual`) — a load or set-point change the training window never saw
#: moves the tags together and does not alarm, a fault on one tag does.
DEFAULT_MODELS: tuple[ModelKind, ...] = ("residual",)


class Anomaly(_LimitCondition):
    """A model over ``tags`` (:mod:`rules.anomaly_rules`) scores each reading's features — the readings
    of the tags at one timestamp, and optionally windowed features of each (``features``, over
    ``window_s``: level, mean, slope, spread, rate, time_of_day); the levels compare the score in multiples
    of the model's calibrated threshold (``1.0`` = the threshold that gives ``target_far`` false alarms on
    known-good data it never saw).

    One tag is enough: it is watched through its windowed features. ``grouping: device`` trains one model
    per device in scope; ``grouping: equipment_model`` one per model, pooled over its devices.
    ``retrain_every_h`` re-fits a ``last_days`` window on a schedule.
    """

    kind: Literal["anomaly"] = "anomaly"
    tags: list[str] = Field(min_length=1)
    features: list[Literal["level", "mean", "slope", "spread", "rate", "time_of_day"]] | None = Field(
        None, min_length=1
    )
    window_s: float | None = Field(None, gt=0)
    training: Training
    target_far: float = Field(0.01, gt=0, lt=0.5)
    grouping: Literal["device", "equipment_model"] = "device"
    models: list[ModelKind] = Field(list(DEFAULT_MODELS), min_length=1)
    retrain_every_h: float | None = Field(24.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _default_level(cls, data: Any) -> Any:
        if isinstance(data, dict) and "levels" not in data and "threshold" not in data:
            level = {"severity": data.get("severity", "major"), "threshold": 1.0, "clear": ANOMALY_CLEAR}
            data = {**data, "levels": [level]}
            data.pop("severity", None)
        return data

    @field_validator("tags")
    @classmethod
    def _distinct(cls, tags: list[str]) -> list[str]:
        dupes = sorted({t for t in tags if tags.count(t) > 1})
        if dupes:
            raise ValueError(f"each tag may appear once; repeated: {', '.join(dupes)}")
        return tags

    @property
    def feature_kinds(self) -> tuple[str, ...]:
        """The features the model uses: as written, or the default for one tag / several tags."""
        if self.features:
            return tuple(dict.fromkeys(self.features))
        return SINGLE_TAG_FEATURES if len(self.tags) == 1 else DEFAULT_FEATURES


Condition = Annotated[Above | Below | Outside | Inside | RateOfChange | NoData | Anomaly, Field(discriminator="kind")]

#: The series an anomaly rule's scores are stored in (one per device), so they can be charted.
ANOMALY_TAG_PREFIX = "anomaly_score:"


class Scope(_Strict):
    """Which devices a rule watches. Empty lists mean "any"; non-empty dimensions must all match."""

    equipment_models: list[str] = []
    sites: list[str] = []  # site slugs
    clients: list[str] = []  # client names
    devices: list[str] = []  # device keys, "site-slug/key", "gateway-slug/key", or numeric ids

    def matches(self, device: DeviceInfo) -> bool:
        if self.equipment_models and device.equipment_model not in self.equipment_models:
            return False
        if self.sites and device.site not in self.sites:
            return False
        if self.clients and device.client not in self.clients:
            return False
        if self.devices:
            names = {device.key, f"{device.site}/{device.key}", str(device.id)}
            if device.gateway:
                names.add(f"{device.gateway}/{device.key}")
            if names.isdisjoint(self.devices):
                return False
        return True


class DeviceInfo(BaseModel):
    """What scoping and threshold binding need to know about a device."""

    model_config = ConfigDict(frozen=True)

    id: int
    key: str
    equipment_model: str
    site: str
    client: str
    attributes: dict[str, Any] = {}
    parent_id: int | None = None
    gateway: str | None = None  # the slug of the gateway that polls it


class Flapping(_Strict):
    """``transitions`` openings of one (rule, device) within ``window_s`` of source time are flapping.

    The opening that reaches the count becomes one visible alarm marked flapping; further openings
    while the pair keeps flapping (each within ``window_s`` of the previous one) are recorded as
    suppressed by it, so a sensor chattering across a threshold opens one ticket, not fifty.
    """

    transitions: int = Field(3, ge=2)
    window_s: float = Field(600.0, gt=0)


class RuleSpec(_Strict):
    """A rule as written by its author: everything except identity and history."""

    name: str = Field(min_length=1)
    tag: str = Field(min_length=1)
    condition: Condition
    for_s: float = Field(0.0, ge=0, description="the condition must hold this many seconds of source time")
    count: int = Field(1, ge=1, description="… and for this many good readings in a row")
    keep_firing_for_s: float = Field(0.0, ge=0, description="stay active this long after the condition stops")
    scope: Scope = Scope()
    problem_code: str = Field(min_length=1)
    required_skill: str | None = None
    latch: bool = Field(False, description="an alarm stays until acknowledged even after its condition clears")
    flapping: Flapping | None = Field(None, description="collapse rapid open/clear cycles into one flapping alarm")
    enabled: bool = True
    description: str = ""
    validated: bool | None = Field(
        None,
        description="whether its alarms may dispatch a technician on their own; unset: yes, except for anomaly "
        "rules, which wait for `fieldwatch rules validate` (a new version, so it is in the history)",
    )

    @model_validator(mode="before")
    @classmethod
    def _anomaly_tag(cls, data: Any) -> Any:
        """An anomaly rule's ``tag`` is its score series; written for the author when left out."""
        cond = data.get("condition") if isinstance(data, dict) else None
        if isinstance(cond, dict) and cond.get("kind") == "anomaly" and "tag" not in data and data.get("name"):
            data = {**data, "tag": f"{ANOMALY_TAG_PREFIX}{data['name']}"}
        return data

    @property
    def auto_dispatch(self) -> bool:
        """Whether an alarm of this rule may be dispatched without a person deciding first."""
        if self.validated is not None:
            return self.validated
        return not isinstance(self.condition, Anomaly)

    @property
    def severity(self) -> Severity:
        """The most severe level of the ladder (levels are sorted most severe first)."""
        return self.condition.levels[0].severity

    def describe(self) -> str:
        """``bearing_temp > 80 for 30 s`` — the condition in words, for alarm messages."""
        c = self.condition
        # Each branch reads the least severe rung, ``levels[-1]``: where the alarm starts.
        if isinstance(c, Anomaly):
            text = f"anomaly score over {', '.join(c.tags)} > {_fmt(c.levels[-1].threshold)}× calibrated threshold"
        elif isinstance(c, NoData):
            what = {"series": self.tag, "device": "device", "gateway": "gateway"}[c.target]
            unit = "min offline" if c.target == "gateway" else "× its cadence"
            text = f"{what} silent > {_fmt(c.levels[-1].threshold)} {unit}"
        elif isinstance(c, Above | Below | RateOfChange):
            op = {"above": ">", "below": "<", "rate": "rises/falls >"}[c.kind]
            if c.kind == "rate":
                op = {"rise": "rises >", "fall": "falls >", "either": "changes >"}[c.direction]
            elif c.inclusive:
                op += "="
            text = f"{self.tag} {op} {_fmt(c.levels[-1].threshold)}"
            if c.kind == "rate":
                text += f"/{c.per}"
        else:
            band = c.levels[-1]
            word = "outside" if c.kind == "outside" else "inside"
            text = f"{self.tag} {word} [{_fmt(band.low)}, {_fmt(band.high)}]"
        if self.for_s:
            text += f" for {self.for_s:g} s"
        if self.count > 1:
            text += f" ({self.count} in a row)"
        return text


def _fmt(v: Value) -> str:
    return f"{v:g}" if isinstance(v, float) else f"@{v.attribute}"


class Rule(BaseModel):
    """A stored rule: its spec plus identity and version."""

    model_config = ConfigDict(frozen=True)

    id: int
    version: int = 1
    spec: RuleSpec
    updated_by: str = ""
    updated_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tag(self) -> str:
        return self.spec.tag

    @property
    def enabled(self) -> bool:
        return self.spec.enabled


def legacy_spec(
    *,
    name: str,
    tag: str,
    operator: Operator,
    threshold: float,
    problem_code: str,
    duration_s: float = 0.0,
    severity: Severity = "major",
    equipment_model: str | None = None,
    required_skill: str | None = None,
    enabled: bool = True,
) -> RuleSpec:
    """The spec equivalent to a row of the original ``rules`` columns (``tag op threshold for duration``)."""
    if operator not in (">", ">=", "<", "<="):
        raise ValueError(f"operator must be one of >, >=, <, <=; got {operator!r}")
    cond: dict[str, Any] = {
        "kind": "above" if operator.startswith(">") else "below",
        "inclusive": operator.endswith("="),
        "levels": [{"severity": severity, "threshold": threshold}],
    }
    return RuleSpec(
        name=name,
        tag=tag,
        condition=cond,
        for_s=duration_s,
        scope=Scope(equipment_models=[equipment_model] if equipment_model else []),
        problem_code=problem_code,
        required_skill=required_skill,
        enabled=enabled,
    )
