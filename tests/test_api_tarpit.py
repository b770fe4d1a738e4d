"""The refusal tarpit (fieldwatch/api/tarpit.py): an address that keeps being refused has its
refusals held, so a flood of bad requests is slowed to a few a second — and nobody else is slowed.

The suite runs with the tarpit off (tests/conftest.py); every server here turns it on. The real
server is uvicorn in its own process, the clients real HTTP from two loopback addresses
(127.0.0.2 is the abuser, 127.0.0.1 everyone else).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from fieldwatch.api.tarpit import REFUSALS, Tarpit
from fwcore.settings import load_settings
from tests.support.api import BASE, auth, token
from tests.support.api_server import ApiProcess, api_process

ABUSER = "127.0.0.2"
BURST = 5
HOLD_S = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_then_holds_that_grow_to_the_cap_per_address() -> None:
    clock = Clock()
    tarpit = Tarpit(60.0, 3, 2.0, 4, clock=clock)
    assert [tarpit.delay("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    first = tarpit.delay("a")
    assert first == pytest.approx(1.0)  # one token back at 1/s
    assert tarpit.delay("a") == pytest.approx(2.0)  # deeper in debt: capped at the longest hold
    assert all(tarpit.delay("a") == pytest.approx(2.0) for _ in range(20))
    assert tarpit.delay("b") == 0.0  # another address has its own budget
    clock.now += 60  # a quiet minute pays the debt back and refills the burst
    assert tarpit.delay("a") == 0.0


def test_no_hold_when_every_slot_is_taken_or_the_tarpit_is_off() -> None:
    clock = Clock()
    tarpit = Tarpit(60.0, 1, 2.0, 2, clock=clock)
    tarpit.delay("a")
    tarpit.held = 2
    assert tarpit.delay("a") == 0.0
    tarpit.held = 1
    assert tarpit.delay("a") > 0
    off = Tarpit(60.0, 1, 0.0, 2, clock=clock)
    assert [off.delay("a") for _ in range(5)] == [0.0] * 5
    assert not Tarpit(60.0, 1, 2.0, 0).enabled


def test_defaults_hold_refusals_past_a_budget() -> None:
    """What a deployment gets without setting anything (the suite's own environment aside)."""
    defaults = load_settings(api_refusal_delay_max_s=2.0)
    tarpit = Tarpit.from_settings(defaults)
    assert tarpit.enabled
    assert defaults.api_refusals_burst >= 10  # a client with a stale token is told a few times at once
    assert [tarpit.delay("a") for _ in range(defaults.api_refusals_burst)] == [0.0] * defaults.api_refusals_burst
    assert tarpit.delay("a") > 0


def test_only_refusals_are_held() -> None:
    """A 200, a 404 or a 422 is never held, whatever the address's debt; a 401 past it is."""

    async def answer(tarpit: Tarpit, status: int) -> float:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        wrapped = tarpit.wrap(send, "a")
        t0 = time.perf_counter()
        await wrapped({"type": "http.response.start", "status": status, "headers": []})
        await wrapped({"type": "http.response.body", "body": b""})
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        return time.perf_counter() - t0

    async def main() -> None:
        tarpit = Tarpit(60.0, 1, 0.3, 4)
        assert await answer(tarpit, 401) < 0.1  # the budget
        for status in (200, 204, 404, 422, 500):
            assert status not in REFUSALS
            assert await answer(tarpit, status) < 0.1
        assert await answer(tarpit, 401) >= 0.25
        assert tarpit.held == 0  # the slot is given back

    anyio.run(main)


@pytest.fixture
def server(db_url: str) -> Iterator[ApiProcess]:
    with api_process(
        db_url,
        api_refusals_burst=BURST,
        api_refusals_per_min=6,
        api_refusal_delay_max_s=HOLD_S,
        api_refusal_delay_slots=64,
        api_metrics_public="true",
    ) as api:
        yield api


def _timed(client: httpx.Client, url: str, **kw: object) -> tuple[int, float]:
    t0 = time.perf_counter()
    status = client.get(url, **kw).status_code  # type: ignore[arg-type]
    return status, time.perf_counter() - t0


def test_an_abuser_is_slowed_and_nobody_else(server: ApiProcess, db_url: str) -> None:
    viewer = token(db_url, "viewer")
    url = f"{server.base}{BASE}/alarms"
    abuser = httpx.Client(transport=httpx.HTTPTransport(local_address=ABUSER), timeout=10)
    other = httpx.Client(timeout=10)
    with abuser, other:
        within = [_timed(abuser, url) for _ in range(BURST)]
        assert all(status == 401 and took < 0.5 for status, took in within)
        held = [_timed(abuser, url) for _ in range(2)]
        assert all(status == 401 and took >= HOLD_S * 0.9 for status, took in held), held
        # Another address is refused at once; the abuser's own valid request is answered at once.
        assert _timed(other, url)[0] == 401 and _timed(other, url)[1] < 0.5
        status, took = _timed(abuser, url, headers=auth(viewer))
        assert status == 200 and took < 0.5
        metrics = other.get(f"{server.base}/metrics").text
    held_total = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("fieldwatch_api_refusals_held_total")
    )
    assert held_total >= 2


def test_a_flood_is_slowed_to_one_answer_per_hold_per_connection(server: ApiProcess) -> None:
    """20 clients without a token for 3 s: without the tarpit the server answers thousands of 401s
    (hundreds a second); with it, the burst and then one per hold per client."""
    clients, seconds = 20, 3.0
    answers: list[int] = []

    async def flood() -> None:
        transport = httpx.AsyncHTTPTransport(local_address=ABUSER)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            until = time.monotonic() + seconds

            async def one() -> None:
                while time.monotonic() < until:
                    answers.append((await client.post(f"{server.base}{BASE}/workorders", content=b"{}")).status_code)

            await asyncio.gather(*(one() for _ in range(clients)))

    started = time.monotonic()
    asyncio.run(flood())
    elapsed = time.monotonic() - started
    assert set(answers) == {401}
    # Each client waits for its answer: at most one request per hold per client, plus the burst
    # and the budget's refill (6 a minute) over the run.
    ceiling = BURST + clients * (elapsed / HOLD_S + 1) + 6 * elapsed / 60 + 1
    assert len(answers) <= ceiling, (len(answers), ceiling)
    with httpx.Client(timeout=10) as probe:  # the probe from elsewhere was never slowed
        assert _timed(probe, f"{server.base}/healthz")[1] < 0.5


def test_holds_are_bounded_in_number(db_url: str) -> None:
    """Past its slots the tarpit sends refusals at once: held connections (and their buffered
    bodies) cannot grow without bound, however many an abuser opens."""
    slots, concurrent = 2, 6
    with api_process(
        db_url,
        api_refusals_burst=1,
        api_refusals_per_min=1,
        api_refusal_delay_max_s=2.0,
        api_refusal_delay_slots=slots,
    ) as api:
        url = f"{api.base}{BASE}/alarms"

        async def batch() -> list[float]:
            transport = httpx.AsyncHTTPTransport(local_address=ABUSER)
            async with httpx.AsyncClient(transport=transport, timeout=10) as client:
                await client.get(url)  # the budget

                async def one() -> float:
                    t0 = time.perf_counter()
                    assert (await client.get(url)).status_code == 401
                    return time.perf_counter() - t0

                return list(await asyncio.gather(*(one() for _ in range(concurrent))))

        took = asyncio.run(batch())
    slow = [t for t in took if t >= 1.0]
    assert 1 <= len(slow) <= slots, took
    assert len(took) - len(slow) >= concurrent - slots, took
