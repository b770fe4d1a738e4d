"""Known test secrets, and a log handler that fails a test in whose logs one of them appears.

Every token :func:`tests.support.api.token` mints, and every password a test registers with
:func:`register`, is a *known secret* for the current test. The autouse fixture in
``tests/conftest.py`` installs :class:`LeakCatcher` on the root logger around each test and fails
the test if a record (message, arguments or traceback) contains one. Error bodies are checked
with :func:`leaks_in`.
"""

from __future__ import annotations

import logging
import traceback

#: A password tests put into URLs and settings to prove it is redacted.
TEST_PASSWORD = "s3cret-Pa55-for-tests"

_known: set[str] = {TEST_PASSWORD}


def register(secret: str) -> str:
    """Make ``secret`` known for the current test; returns it."""
    if len(secret) >= 8:  # shorter strings would match by accident
        _known.add(secret)
    return secret


def reset() -> None:
    """Forget the secrets of the previous test (tokens are per test database)."""
    _known.clear()
    _known.add(TEST_PASSWORD)


def leaks_in(text: str) -> list[str]:
    """The known secrets that occur in ``text`` (shortened, so the failure does not print them whole)."""
    return [s[:6] + "…" for s in _known if s in text]


class LeakCatcher(logging.Handler):
    """Collects every record that names a known secret."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is not ours to report here
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += "".join(traceback.format_exception(record.exc_info[1]))
        if record.exc_text:
            text += record.exc_text
        found = leaks_in(text)
        if found:
            self.leaks.append(f"{record.name}: secret(s) {', '.join(found)} in {record.levelname} record")
