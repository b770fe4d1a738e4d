"""Rules: rule models, the one evaluation state machine, live evaluation into alarms, backtests.

People read and acknowledge alarms through :mod:`rules.alarms`.

Typical use (an ingest after-commit hook)::

    evaluator = RuleEvaluator(db_url)
    worker = IngestWorker(db_url, mqtt_url, on_commit=[evaluator.process])   # fieldwatch/server.py
    ...
    evaluator.close()
"""

from rules.alarms import Alarm, acknowledge, get_alarm, list_alarms
from rules.compile import CompiledRule, UnboundThreshold, compile_rule
from rules.engine import (
    NORMAL,
    AlarmCleared,
    AlarmOpened,
    RuleEvent,
    RuleState,
    SeverityChanged,
    StateFormatError,
    evaluate,
    evaluate_all,
)
from rules.model import DeviceInfo, Reading, Rule, RuleSpec, Scope, legacy_spec
from rules.service import AlarmEvent, RuleEvaluationError, RuleEvaluator, alarm_message
from rules.store import (
    DuplicateRuleName,
    RuleError,
    UnknownRule,
    UnknownSkill,
    create_rule,
    find_rule,
    get_rule,
    list_rules,
    rule_versions,
    save_rule,
    set_rule_enabled,
)

__all__ = [
    "NORMAL",
    "Alarm",
    "AlarmCleared",
    "AlarmEvent",
    "AlarmOpened",
    "CompiledRule",
    "DeviceInfo",
    "DuplicateRuleName",
    "Reading",
    "Rule",
    "RuleError",
    "RuleEvaluationError",
    "RuleEvaluator",
    "RuleEvent",
    "RuleSpec",
    "RuleState",
    "Scope",
    "SeverityChanged",
    "StateFormatError",
    "UnboundThreshold",
    "UnknownRule",
    "UnknownSkill",
    "acknowledge",
    "alarm_message",
    "compile_rule",
    "create_rule",
    "evaluate",
    "evaluate_all",
    "find_rule",
    "get_alarm",
    "get_rule",
    "legacy_spec",
    "list_alarms",
    "list_rules",
    "rule_versions",
    "save_rule",
    "set_rule_enabled",
]
