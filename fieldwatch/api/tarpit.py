"""Slow refusals for an address that keeps being refused: what a flood of bad requests may cost.

Every refusal the guard and the routes send (400, 401, 403, 413, 429) is cheap — no body read, no
parsing, often no database — but cheap times a flood is still a share of the server's core: 20
attackers that are answered at once come back at once, ~350 times a second on this project's
2-core machine, and those 0.3–0.5 ms each came straight out of the legitimate history imports
(docs/security/L.md, ``bench/abuse.py``). Answering them *faster* does not help (the attackers
only come back sooner), closing before any HTTP work neither (they reconnect sooner).

So each client address has a budget of refusals (a token bucket: ``api_refusals_burst``, refilled
at ``api_refusals_per_min``); past it, a refusal is *held* before it is sent — up to
``api_refusal_delay_max_s``, longer the deeper the address is in debt — like nginx's ``limit_req``
without ``nodelay``. A held request costs a sleeping coroutine and its socket, not CPU: a client
that waits for its answer before the next request (every HTTP/1.1 client on one connection) is
slowed to one request per hold per connection, however fast it could send. What is bounded:

- only refusals are held, never an answer the client is entitled to (a 200, a 404, a 422), and
  other addresses are never slowed by one address's debt;
- at most ``api_refusal_delay_slots`` refusals are held at once (each holds a connection whose
  unread body uvicorn buffers up to 64 kB before it stops reading); past that, refusals are sent
  at once, as without a tarpit — memory stays bounded against any number of connections;
- a hold never outlives ``api_refusal_delay_max_s`` (a few seconds: under uvicorn's graceful
  shutdown), and ``0`` turns the tarpit off.

Behind a reverse proxy, list it in ``FIELDWATCH_API_TRUSTED_PROXIES``: otherwise every client has
the proxy's address and one client's refusals slow everybody's *refusals* (never their answers).
Many addresses (a botnet) each get their own burst: this bounds what one address costs, the
proxy's per-address connection limits and the network the rest (docs/security/L.md checklist).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Final

import anyio
from starlette.types import Message, Send

from fwcore.ratelimit import RateLimiter
from fwcore.settings import Settings

from .metrics import REFUSALS_HELD

#: The statuses that count against an address's budget: the refusals a flood of bad requests gets.
REFUSALS: Final = frozenset({400, 401, 403, 413, 429})


class Tarpit:
    """Per-address refusal budgets and the bounded hold past them (module docstring).

    :meth:`delay` is the pure decision (an injectable clock); :meth:`hold` sleeps it, counting the
    slots. Used from the event loop only, like :class:`~fwcore.ratelimit.RateLimiter`.
    """

    def __init__(
        self,
        per_min: float,
        burst: int,
        max_delay_s: float,
        slots: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = RateLimiter(per_min / 60, burst, clock=clock)
        self.max_delay_s = max_delay_s
        self.slots = slots
        self.held = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Tarpit:
        return cls(
            settings.api_refusals_per_min,
            settings.api_refusals_burst,
            settings.api_refusal_delay_max_s,
            settings.api_refusal_delay_slots,
        )

    @property
    def enabled(self) -> bool:
        return self.max_delay_s > 0 and self.slots > 0

    def delay(self, address: Hashable) -> float:
        """Charge ``address`` one refusal; the seconds to hold it (0: send it now).

        Within the budget: 0. Past it: the time until the address is back within it (the debt
        deepens with every refusal, up to ``burst`` more), capped at ``max_delay_s`` — and 0 when
        every slot is taken.
        """
        if not self.enabled:
            return 0.0
        wait = self.budget.retry_after(address)
        self.budget.charge(address)
        if wait <= 0 or self.held >= self.slots:
            return 0.0
        return min(self.max_delay_s, wait)

    async def hold(self, address: Hashable) -> float:
        """Sleep for :meth:`delay` in a slot; the seconds held."""
        seconds = self.delay(address)
        if seconds <= 0:
            return 0.0
        self.held += 1
        REFUSALS_HELD.inc()
        try:
            await anyio.sleep(seconds)
        finally:
            self.held -= 1
        return seconds

    def wrap(self, send: Send, address: Hashable) -> Send:
        """``send`` that holds a refusal's ``http.response.start`` before passing it on."""
        if not self.enabled:
            return send

        async def holding_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in REFUSALS:
                await self.hold(address)
            await send(message)

        return holding_send
