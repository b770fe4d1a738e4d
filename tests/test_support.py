"""The test support package itself: waits, ports, the fake clock and the private broker."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.brokers import BrokerStartError, PrivateMosquitto
from tests.support.clocks import FakeClock
from tests.support.mqtt import client
from tests.support.ports import closed_port, free_port
from tests.support.waits import WaitTimeout, wait_until, wait_until_async


def test_wait_until_returns_the_first_accepted_value() -> None:
    """The predicate is polled until ``done`` accepts its value, and that value is returned."""
    calls = iter(range(10))
    assert wait_until(lambda: next(calls), 2, done=lambda n: n >= 3, interval=0.001) == 3


def test_a_timed_out_wait_names_what_it_awaited_and_the_last_value() -> None:
    """On timeout the AssertionError says what was awaited (or the lambda's text) and what was last seen."""
    stats = {"messages": 1}
    with pytest.raises(AssertionError, match=r"waiting for two messages; last observed: 1$"):
        wait_until(lambda: stats["messages"], 0.05, done=lambda n: n >= 2, what="two messages", interval=0.01)
    with pytest.raises(WaitTimeout, match=r"waiting for stats\[\"messages\"\] >= 2; last observed: False"):
        wait_until(lambda: stats["messages"] >= 2, 0.05, interval=0.01)


def test_ignored_exceptions_mean_not_yet_and_others_fail_at_once() -> None:
    """An exception listed in ``ignore`` is retried (and reported); any other propagates immediately."""
    attempts: list[int] = []

    def flaky() -> bool:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionRefusedError("not yet")
        return True

    def refused() -> bool:
        raise ConnectionRefusedError("still down")

    assert wait_until(flaky, 2, ignore=(ConnectionRefusedError,), interval=0.001)
    with pytest.raises(WaitTimeout, match=r"for refused; last observed: ConnectionRefusedError\('still down'\)"):
        wait_until(refused, 0.05, ignore=(ConnectionRefusedError,), interval=0.01)
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, 5)


async def test_the_async_wait_awaits_coroutine_predicates() -> None:
    """A coroutine function is awaited on every poll and its accepted result returned."""
    n = 0

    async def count() -> int:
        nonlocal n
        n += 1
        return n

    assert await wait_until_async(count, 2, done=lambda v: v == 3, interval=0.001) == 3
    with pytest.raises(WaitTimeout, match="waiting for never"):
        await wait_until_async(lambda: False, 0.05, what="never", interval=0.01)


def test_closed_port_refuses_connections_and_free_port_can_be_bound() -> None:
    """Connecting to the closed port is refused, the same port every call; a free port can be listened on."""
    assert closed_port() == closed_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=2)
    with socket.create_server(("127.0.0.1", free_port())):
        pass


def test_fake_clock_moves_only_when_advanced() -> None:
    """Monotonic and wall readings move together by ``advance`` and never backwards."""
    clock = FakeClock(10.0, epoch=1_000.0)
    assert (clock(), clock.monotonic(), clock.time(), clock.time_ms()) == (10.0, 10.0, 1_010.0, 1_010_000)
    assert clock.advance(2.5) == 12.5 and clock.time() == 1_012.5
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


def test_private_broker_with_persistence_keeps_a_session_across_a_restart(tmp_path: Path) -> None:
    """A QoS 1 message queued for an offline persistent session is still delivered after the broker restarts."""
    with PrivateMosquitto(persistence=True, workdir=tmp_path) as broker:
        sub = client(broker.url, "sub-persist", protocol="3.1.1", clean=False)  # a session that outlives it
        subscribed = threading.Event()
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.loop_start()
        sub.subscribe("t/x", qos=1)
        wait_until(subscribed.is_set, 5, what="the SUBACK")
        sub.disconnect()
        sub.loop_stop()
        pub = client(broker.url, "pub-persist")
        pub.loop_start()
        pub.publish("t/x", b"kept", qos=1).wait_for_publish(5)
        pub.disconnect()
        pub.loop_stop()
        broker.restart()
        received: list[bytes] = []
        again = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="sub-persist", protocol=mqtt.MQTTv311, clean_session=False
        )
        again.on_message = lambda c, u, m: received.append(bytes(m.payload))
        again.connect("127.0.0.1", broker.port)
        again.loop_start()
        try:
            wait_until(lambda: received, 5, what="the queued message after the restart")
        finally:
            again.disconnect()
            again.loop_stop()
    assert received == [b"kept"]
    assert (tmp_path / "mosquitto.log").exists()  # a caller's workdir is kept


def test_a_broker_that_cannot_start_says_why(tmp_path: Path) -> None:
    """A missing password file makes mosquitto exit; the error quotes its log instead of timing out blindly."""
    broker = PrivateMosquitto(password_file=tmp_path / "missing", workdir=tmp_path)
    with pytest.raises(BrokerStartError, match="mosquitto exited") as exc:
        broker.start(timeout=5)
    assert "missing" in str(exc.value)
    broker.close()


def test_a_template_with_a_session_on_it_is_still_cloned(admin_db_url: str, template_db: str) -> None:
    """A session connected to the template (as TimescaleDB's background workers are) does not stop a test database
    from being cloned: the copy waits a bounded time and ends the template's sessions."""
    import psycopg

    from fwcore.db import with_database
    from tests.support.db import fresh_database

    with psycopg.connect(with_database(admin_db_url, template_db), autocommit=True) as squatter:
        squatter.execute("SELECT 1")
        with fresh_database(admin_db_url, template_db) as url, psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0
        with pytest.raises(psycopg.OperationalError):
            squatter.execute("SELECT 1")
