"""Outbound webhooks against a real local HTTP receiver: signed, retried with backoff, deduplicated
by idempotency key, dead-lettered after N attempts; only public (or allow-listed) targets, checked
where the connection is made; no URL password in a log and no network detail in a stored error."""

from __future__ import annotations

import logging
import socket
import ssl
from datetime import timedelta

import httpx
import psycopg
import pytest

from fwcore.egress import EgressPolicy
from tests.support import webhooks
from tests.support.ports import closed_port
from tests.support.webhooks import ALLOW_RECEIVER, SECRET, Receiver, TlsReceiver, api_ticket, resolver, t0
from ticketing.webhook_admin import create_endpoint, validate
from ticketing.webhook_transport import PinnedTransport
from ticketing.webhooks import backoff, deliver_due

receiver = webhooks.receiver  # the fixtures, shared with test_api_webhooks
silent_server = webhooks.silent_server
tls_receiver = webhooks.tls_receiver


def _deliveries(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT event, status, attempts, last_error FROM webhook_deliveries ORDER BY id").fetchall()


def test_backoff_grows_exponentially_with_a_cap_and_bounded_jitter() -> None:
    """5, 10, 20 … s, never above the cap, jitter within ±20%."""
    assert [backoff(n, rand=lambda: 0.5) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert backoff(30, rand=lambda: 0.5) == 3600.0
    assert 4.0 <= backoff(1, rand=lambda: 0.0) <= backoff(1, rand=lambda: 1.0) <= 6.0


def test_event_is_signed_retried_and_delivered_once(db_url: str, receiver: Receiver) -> None:
    """Two 503s, then success: three requests with one idempotency key and valid signatures; one event processed."""
    with psycopg.connect(db_url) as conn:
        create_endpoint(conn, url=receiver.url, secret=SECRET, events=["ticket.created"], allow=ALLOW_RECEIVER)
    ticket = api_ticket(db_url)
    receiver.fail_first = 2
    now = t0()
    assert deliver_due(db_url, now=now, allow=ALLOW_RECEIVER).retried == 1
    not_due_yet = now + timedelta(seconds=1)  # backoff
    assert deliver_due(db_url, now=not_due_yet, allow=ALLOW_RECEIVER).retried == 0
    for _ in range(3):
        now += timedelta(minutes=5)
        deliver_due(db_url, now=now, allow=ALLOW_RECEIVER)
    assert _deliveries(db_url) == [("ticket.created", "delivered", 3, "")]
    keys = {r["headers"]["idempotency-key"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(keys) == 1
    assert list(receiver.processed.values()) == [
        {
            "event": "ticket.created",
            "ticket_id": ticket,
            "status": "new",
            "at": receiver.processed[next(iter(keys))]["at"],
            "external_id": "CRM-1",
            "external_source": None,
        }
    ]


def test_a_failing_receiver_is_dead_lettered_after_max_attempts(db_url: str, receiver: Receiver) -> None:
    """An endpoint that always fails gets exactly max_attempts tries, then the delivery is dead with its reason."""
    with psycopg.connect(db_url) as conn:
        create_endpoint(conn, url=receiver.url, secret=SECRET, max_attempts=3, allow=ALLOW_RECEIVER)
    api_ticket(db_url)
    receiver.fail_first = 1000
    now = t0()
    for _ in range(6):
        deliver_due(db_url, now=now, allow=ALLOW_RECEIVER)
        now += timedelta(hours=1)
    [(event, status, attempts, error)] = _deliveries(db_url)
    assert (event, status, attempts) == ("ticket.created", "dead", 3) and "HTTP 503" in error
    assert len(receiver.requests) == 3


def test_unreachable_receiver_is_retried_not_lost(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A closed port counts as a failed attempt: a generic error is stored, the network error is logged."""
    with psycopg.connect(db_url) as conn:
        create_endpoint(conn, url=f"http://127.0.0.1:{closed_port()}/hook", secret=SECRET, allow=ALLOW_RECEIVER)
    api_ticket(db_url)
    with caplog.at_level(logging.INFO, logger="ticketing.webhooks"):
        assert deliver_due(db_url, now=t0(), timeout_s=1, allow=ALLOW_RECEIVER).retried == 1
    [(_, status, attempts, error)] = _deliveries(db_url)
    assert (status, attempts) == ("pending", 1)
    assert error == "delivery failed: no HTTP answer from the endpoint (details in the server log)"
    assert "ConnectError" in caplog.text


#: Targets that are not public, in the spellings a resolver or an HTTP client accepts, and why each is refused.
NON_PUBLIC = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.1/hook", "loopback"),
    ("http://2130706433/hook", "loopback"),
    ("http://0x7f000001/hook", "loopback"),
    ("http://0x7f.1/hook", "loopback"),
    ("http://0177.0.0.1/hook", "loopback"),
    ("http://017700000001/hook", "loopback"),
    ("http://127.0.0.1.:8080/hook", "loopback"),
    ("http://localhost:8000/hook", "loopback"),
    ("https://LocalHost./hook", "loopback"),
    ("https://hooks.localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://[::ffff:7f00:1]/hook", "loopback"),
    ("http://[2002:7f00:1::]/hook", "loopback"),  # 6to4 wrapping 127.0.0.1
    ("http://[64:ff9b::7f00:1]/hook", "loopback"),  # NAT64 wrapping 127.0.0.1
    ("http://0.0.0.0:8000/hook", "unspecified"),
    ("http://0/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://10.0.0.1/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://[fd12:3456::1]/hook", "private"),
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://255.255.255.255/hook", "broadcast"),
    ("http://100.64.0.1/hook", "not globally routable"),  # carrier-grade NAT
    ("http://240.0.0.1/hook", "not globally routable"),
]


@pytest.mark.parametrize(("url", "why"), NON_PUBLIC, ids=[u for u, _ in NON_PUBLIC])
def test_every_spelling_of_a_non_public_target_is_refused(url: str, why: str) -> None:
    """An endpoint URL whose host is a non-public address, in any spelling, is refused with the reason."""
    with pytest.raises(ValueError, match=f"is a {why} address"):
        validate(url=url)


def test_a_name_that_resolves_to_a_non_public_address_is_refused() -> None:
    """A host name is refused when any address it resolves to is not public."""
    dns = resolver({"intranet.example": ["10.1.2.3"], "split.example": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(ValueError, match=r"intranet\.example resolves to a private address"):
        validate(url="https://intranet.example/hook", resolve=dns)
    with pytest.raises(ValueError, match=r"split\.example resolves to a loopback address"):
        validate(url="https://split.example/hook", resolve=dns)


def test_public_and_allow_listed_targets_are_accepted() -> None:
    """Public addresses and names pass; a non-public one passes only when its host or network is allow-listed."""
    dns = resolver({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::248"], "crm.internal": ["10.0.5.7"]})
    validate(url="https://93.184.216.34/hook")
    validate(url="https://hooks.example.com/hook", resolve=dns)
    validate(url="https://unknown.example/hook", resolve=dns)  # not resolvable now: checked at delivery
    allow = EgressPolicy.parse(["10.0.5.0/24", "LOCALHOST"])
    validate(url="https://crm.internal/hook", resolve=dns, allow=allow)
    validate(url="http://localhost:8000/hook", allow=allow)
    validate(url="http://10.0.5.99/hook", allow=allow)
    with pytest.raises(ValueError, match="private address"):
        validate(url="http://10.0.6.1/hook", allow=allow)


def test_dns_rebinding_to_loopback_is_refused_at_delivery(
    db_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A name that resolved to a public address when the endpoint was saved but to loopback at delivery
    time gets no request: the address connected to is the one checked."""
    with psycopg.connect(db_url) as conn:
        create_endpoint(
            conn,
            url=f"http://rebind.example:{receiver.port}/hook",
            secret=SECRET,
            max_attempts=1,
            resolve=resolver({"rebind.example": ["93.184.216.34"]}),
        )
    api_ticket(db_url)
    with caplog.at_level(logging.WARNING, logger="ticketing.webhooks"):
        run = deliver_due(db_url, now=t0(), resolve=resolver({"rebind.example": ["127.0.0.1"]}))
    assert run.dead == 1 and receiver.requests == []
    [(_, _, _, error)] = _deliveries(db_url)
    assert error == (
        "gave up after 1 attempts: delivery refused: the endpoint's address is not public and not "
        "allow-listed (details in the server log)"
    )
    assert "rebind.example resolves to a loopback address" in caplog.text


def test_an_endpoint_saved_before_the_checks_gets_no_request_to_localhost(db_url: str, receiver: Receiver) -> None:
    """An endpoint row written without validation (from before the upgrade) to localhost is refused when
    delivering, with the system resolver."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO webhook_endpoints (url, secret) VALUES (%s, %s)",
            (receiver.url.replace("127.0.0.1", "localhost"), SECRET),
        )
        conn.execute(
            "INSERT INTO webhook_endpoints (url, secret) VALUES (%s, %s)",
            (receiver.url.replace("127.0.0.1", "127.1"), SECRET),
        )
    api_ticket(db_url)
    assert deliver_due(db_url, now=t0(), timeout_s=1).retried == 2
    assert receiver.requests == []


def test_delivery_connects_to_the_checked_address_with_the_original_host(db_url: str, receiver: Receiver) -> None:
    """A name is resolved once, checked, and the request goes to that address with the name as Host."""
    dns = resolver({"hooks.example": ["127.0.0.1"]})
    allow = EgressPolicy.parse(["127.0.0.0/8"])
    with psycopg.connect(db_url) as conn:
        create_endpoint(conn, url=f"http://hooks.example:{receiver.port}/hook", secret=SECRET, allow=allow, resolve=dns)
    api_ticket(db_url)
    assert deliver_due(db_url, now=t0(), allow=allow, resolve=dns).delivered == 1
    [request] = receiver.requests
    assert request["headers"]["host"] == f"hooks.example:{receiver.port}"


def test_closed_and_silent_ports_leave_the_same_stored_error(db_url: str, silent_server: int) -> None:
    """A refused connection and a server that hangs up look alike to callers: no port scan through the errors."""
    with psycopg.connect(db_url) as conn:
        for port in (closed_port(), silent_server):
            create_endpoint(conn, url=f"http://127.0.0.1:{port}/hook", secret=SECRET, allow=ALLOW_RECEIVER)
    api_ticket(db_url)
    assert deliver_due(db_url, now=t0(), timeout_s=1, allow=ALLOW_RECEIVER).retried == 2
    errors = {error for *_, error in _deliveries(db_url)}
    assert errors == {"delivery failed: no HTTP answer from the endpoint (details in the server log)"}


def test_a_url_password_never_reaches_a_log(db_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    """The password of https://user:password@host/ is sent as Basic auth but is in no log line, at any level,
    from our code or the HTTP client, through retries and the dead letter."""
    password = "pa55-w0rd-in-the-url"
    url = receiver.url.replace("http://", f"http://hookuser:{password}@")
    with psycopg.connect(db_url) as conn:
        create_endpoint(conn, url=url, secret=SECRET, max_attempts=2, allow=ALLOW_RECEIVER)
    api_ticket(db_url)
    receiver.fail_first = 10
    now = t0()
    with caplog.at_level(logging.DEBUG):
        for _ in range(2):
            deliver_due(db_url, now=now, allow=ALLOW_RECEIVER)
            now += timedelta(hours=1)
    assert len(receiver.requests) == 2
    assert receiver.requests[0]["headers"]["authorization"] == "Basic aG9va3VzZXI6cGE1NS13MHJkLWluLXRoZS11cmw="
    assert "dead-lettered" in caplog.text and "hookuser:***@127.0.0.1" in caplog.text
    assert password not in caplog.text


def test_https_to_a_pinned_address_verifies_the_certificate_of_the_name(tls_receiver: TlsReceiver) -> None:
    """Over HTTPS the checked address is connected to while SNI, certificate check and Host use the URL's name."""
    dns = resolver({"hooks.example": ["127.0.0.1"]})
    trusted = httpx.HTTPTransport(verify=ssl.create_default_context(cadata=tls_receiver.ca_pem.decode()))
    transport = PinnedTransport(EgressPolicy.parse(["127.0.0.1"]), dns, inner=trusted)
    with httpx.Client(transport=transport) as client:
        answer = client.post(f"https://hooks.example:{tls_receiver.port}/hook", content=b"{}")
    assert answer.status_code == 200
    assert tls_receiver.server_names == ["hooks.example"]
    assert tls_receiver.hosts == [f"hooks.example:{tls_receiver.port}"]


def test_a_pinned_ipv6_address_is_connected_to_in_brackets() -> None:
    """A name resolving to an (allow-listed) IPv6 address is reached at that address."""
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
        port = listener.getsockname()[1]
        dns = resolver({"v6.example": ["::1"]})
        transport = PinnedTransport(EgressPolicy.parse(["::1"]), dns)
        with httpx.Client(transport=transport, timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
            client.post(f"http://v6.example:{port}/hook", content=b"{}")  # connected; the listener never answers
        conn, _ = listener.accept()
        conn.close()
