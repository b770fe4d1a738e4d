"""Rules: threshold rules, the one evaluation state machine, and live evaluation into alarms.

Typical use (an ingest after-commit hook)::

    evaluator = RuleEvaluator(db_url)
    worker.add_hook(evaluator)        # or evaluator.process(points)
    ...
    evaluator.close()
"""

from rules.engine import (
    NORMAL,
    AlarmCleared,
    AlarmOpened,
    RuleEvent,
    RuleState,
    StateFormatError,
    evaluate,
    evaluate_all,
)
from rules.model import Reading, RuleBase, ThresholdRule
from rules.service import EVENTS_CHANNEL, AlarmEvent, RuleEvaluationError, RuleEvaluator, alarm_message
from rules.store import DuplicateRuleName, RuleError, UnknownSkill, create_rule, get_rule, list_rules, set_rule_enabled

__all__ = [
    "EVENTS_CHANNEL",
    "NORMAL",
    "AlarmCleared",
    "AlarmEvent",
    "AlarmOpened",
    "DuplicateRuleName",
    "Reading",
    "RuleBase",
    "RuleError",
    "RuleEvaluationError",
    "RuleEvaluator",
    "RuleEvent",
    "RuleState",
    "StateFormatError",
    "ThresholdRule",
    "UnknownSkill",
    "alarm_message",
    "create_rule",
    "evaluate",
    "evaluate_all",
    "get_rule",
    "list_rules",
    "set_rule_enabled",
]
