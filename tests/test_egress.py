"""Where outbound requests may go: every spelling of an address reduced to the address, non-public ones
refused unless allow-listed, the allow-list read from settings, and URL passwords masked for display."""

from __future__ import annotations

import ipaddress

import pytest

from fwcore.egress import (
    EgressPolicy,
    EgressRefused,
    checked_addresses,
    is_host_name,
    literal_address,
    redact_url,
    refusal,
)
from fwcore.settings import SettingsError, load_settings
from tests.support.webhooks import resolver


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1"),
        ("example.com", None),
        ("1.2.3.256", None),
        ("08.1.1.1", None),
        ("1.2.3.4.5", None),
        ("1..2", None),
        ("0x", None),
        ("1_0.0.0.1", None),
        ("٣.0.0.1", None),  # a non-ASCII digit is a name, not a number
    ],
)
def test_literal_address_reads_every_numeric_spelling(host: str, address: str | None) -> None:
    """inet_aton's forms (1-4 parts, octal, hex) and IPv6, bracketed or with a zone, are addresses; the rest names."""
    got = literal_address(host)
    assert (str(got) if got is not None else None) == address


@pytest.mark.parametrize(
    ("host", "is_name"),
    [
        ("hooks.example.com", True),
        ("xn--bcher-kva.de", True),
        ("crm-1.internal.", True),
        ("under_score.example", True),
        ("a%20b", False),
        ("-a.example", False),
        ("a..example", False),
        ("1.2.3.256", False),
        ("", False),
    ],
)
def test_is_host_name_accepts_dns_spellings_only(host: str, is_name: bool) -> None:
    """ASCII labels of letters, digits, hyphens and underscores are names; escapes, empty labels and numbers are not."""
    assert is_host_name(host) is is_name


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("93.184.216.34", None),
        ("2606:2800:220:1::248", None),
        ("2002:5db8:d822::1", None),  # 6to4 of a public address
        ("127.0.0.1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::7f00:1", "loopback"),  # IPv4-compatible (deprecated)
        ("64:ff9b::a00:1", "private"),
        ("198.18.0.1", "private"),
        ("192.0.2.1", "private"),  # documentation
    ],
)
def test_refusal_names_why_an_address_is_not_public(address: str, why: str | None) -> None:
    """Public addresses have no refusal; an IPv4 address wrapped in IPv6 is judged as itself."""
    assert refusal(ipaddress.ip_address(address)) == why


def test_policy_parses_hosts_and_networks_and_names_a_bad_entry() -> None:
    """Entries are IP addresses, CIDR networks or host names (case and a final dot ignored); a bad one is named."""
    policy = EgressPolicy.parse([" 10.0.5.0/24", "CRM.Internal.", "::1", "fd00::/8"])
    assert policy.allows_host("crm.internal") and policy.allows_host("crm.internal.")
    assert policy.allows_address(ipaddress.ip_address("10.0.5.200"))
    assert policy.allows_address(ipaddress.ip_address("::ffff:10.0.5.1"))
    assert not policy.allows_address(ipaddress.ip_address("10.0.6.1"))
    for bad in ("10.0.0.0/33", "http://crm.internal", "crm internal", ""):
        with pytest.raises(ValueError, match="webhook allow-list entry"):
            EgressPolicy.parse([bad])


def test_checked_addresses_are_what_the_caller_connects_to() -> None:
    """A name's resolved addresses come back only when every one passes; an allow-listed name is not checked."""
    dns = resolver({"hooks.example.com": ["93.184.216.34"], "crm.internal": ["10.0.5.7"]})
    assert checked_addresses("hooks.example.com", 443, EgressPolicy(), dns) == [ipaddress.ip_address("93.184.216.34")]
    assert checked_addresses("crm.internal", 443, EgressPolicy.parse(["crm.internal"]), dns) == [
        ipaddress.ip_address("10.0.5.7")
    ]
    with pytest.raises(EgressRefused, match=r"crm\.internal resolves to a private address"):
        checked_addresses("crm.internal", 443, EgressPolicy(), dns)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pa55@host.example/x?y=1", "https://user:***@host.example/x?y=1"),
        ("https://user:p%40ss@host.example:8443/", "https://user:***@host.example:8443/"),
        ("https://:pa55@host.example/", "https://:***@host.example/"),
        ("https://user@host.example/", "https://user@host.example/"),
        ("https://host.example/a@b", "https://host.example/a@b"),
        ("https://a:b@c@host.example/", "https://a:***@host.example/"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_masks_only_the_password(url: str, shown: str) -> None:
    """The password of a URL's user info becomes ***; the user, host, path and query stay readable."""
    assert redact_url(url) == shown


def test_allow_list_setting_is_comma_separated_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """FIELDWATCH_WEBHOOK_ALLOWED_TARGETS takes comma-separated entries; a bad one stops the start, named."""
    assert load_settings().webhook_allowed_targets == []
    monkeypatch.setenv("FIELDWATCH_WEBHOOK_ALLOWED_TARGETS", "10.0.5.0/24, crm.internal")
    assert load_settings().webhook_allowed_targets == ["10.0.5.0/24", "crm.internal"]
    monkeypatch.setenv("FIELDWATCH_WEBHOOK_ALLOWED_TARGETS", "10.0.5.0/33")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "FIELDWATCH_WEBHOOK_ALLOWED_TARGETS" in str(err.value) and "CIDR" in str(err.value)
