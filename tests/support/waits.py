"""Wait for a condition with a deadline instead of sleeping a guessed time.

A sleep says how long the author hoped something would take; on a loaded machine it is
either too short (a flaky failure that names nothing) or too long (a slow suite). These
poll a predicate until it is truthy (or until ``done`` accepts its value) and, when the
deadline passes, fail with an AssertionError that says what was awaited and what was last
observed::

    wait_until(lambda: worker.stats.messages >= 2, what="two messages consumed")
    wait_until(stored_count, done=lambda n: n == 3000, what="every point stored")  # reports the count
    await wait_until_async(driver.poll, what="a poll with values")  # coroutine functions work too

The accepted value is returned, so a wait can also fetch what it waited for. The short
polling interval is the only sleep the waits need.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Exceptions a predicate may raise meaning "not yet" (e.g. a server still starting). None by default:
#: anything else a predicate raises is a real failure and propagates at once.
Ignored = tuple[type[BaseException], ...]


class WaitTimeout(AssertionError):
    """The condition was not met before the deadline (an AssertionError, so pytest reports it as a failure)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    what: str | None = None,
    done: Callable[[T], object] = bool,
    observe: Callable[[], object] | None = None,
    interval: float = 0.05,
    ignore: Ignored = (),
) -> T:
    """Call ``predicate`` until ``done`` accepts its value (by default: it is truthy), and return that value.

    After ``timeout`` seconds, raise :class:`WaitTimeout` naming ``what`` (default: the predicate's
    source) and the last observed state: ``observe()`` if given, else the predicate's last value.
    Exceptions of the types in ``ignore`` count as "not yet" and are reported as the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            last = predicate()
        except ignore as exc:
            last = exc
        else:
            if done(last):  # type: ignore[arg-type]
                return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise WaitTimeout(_message(predicate, timeout, what, observe() if observe else last))
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    *,
    what: str | None = None,
    done: Callable[[T], object] = bool,
    observe: Callable[[], object] | None = None,
    interval: float = 0.05,
    ignore: Ignored = (),
) -> T:
    """:func:`wait_until` for the event loop: the loop keeps running between calls, and ``predicate``
    may be a coroutine function (its result is awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
        except ignore as exc:
            last = exc
        else:
            if done(last):  # type: ignore[arg-type]
                return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise WaitTimeout(_message(predicate, timeout, what, observe() if observe else last))
        await asyncio.sleep(interval)


def _message(predicate: Callable[..., object], timeout: float, what: str | None, last: object) -> str:
    text = repr(last)
    if len(text) > 2000:
        text = text[:2000] + "…"
    return f"timed out after {timeout:g} s waiting for {what or describe(predicate)}; last observed: {text}"


def describe(predicate: Callable[..., object]) -> str:
    """A lambda's own text (``lambda: w.stats.messages >= 2`` → ``w.stats.messages >= 2``), else its name."""
    name = getattr(predicate, "__name__", repr(predicate))
    if name != "<lambda>":
        return name
    try:
        source = inspect.getsource(predicate)
    except (OSError, TypeError):
        return name
    start = source.find("lambda")
    colon = source.find(":", start)
    if start < 0 or colon < 0:
        return name
    depth, body = 0, []
    for ch in source[colon + 1 :]:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            break
        body.append(ch)
    return " ".join("".join(body).split()) or name
