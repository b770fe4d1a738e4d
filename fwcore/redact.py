"""Keep secrets out of logs, error messages and error bodies.

:func:`redact_text` masks what looks like a secret in free text: the password of a URL
(``mqtt://gw:PASSWORD@host`` → ``mqtt://gw:***@host``) and API tokens (``fw_…``).
:func:`redact_value` masks a whole value when its *name* says it is a secret (``password``,
``secret``, ``token``) and otherwise redacts it as text. :class:`RedactingFilter` applies
:func:`redact_text` to every log record passing through a handler.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

MASK: Final = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_TOKEN = re.compile(r"\bfw_[A-Za-z0-9_-]{16,}")
_SECRET_NAME = re.compile(r"pass(word)?|secret|token|api[_-]?key|authorization|credential", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with URL passwords and API tokens masked."""
    return _TOKEN.sub("fw_" + MASK, _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text))


def is_secret_name(name: str) -> bool:
    """Whether a field or key named ``name`` holds a secret (``password``, ``hmac_secret``, ``token`` …).

    Names of files and settings that merely *point at* secrets (``..._file``) are not secrets.
    """
    return bool(_SECRET_NAME.search(name)) and not name.lower().endswith(("_file", "_id", "_prefix"))


def redact_value(name: str, value: Any) -> Any:
    """``value`` masked if ``name`` says it is a secret; strings, mappings and lists redacted inside."""
    if is_secret_name(name) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(name, v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in each record's message (formatted once, here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        clean = redact_text(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def redact_logging() -> None:
    """Add a :class:`RedactingFilter` to every handler of the root logger (after ``basicConfig``)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
