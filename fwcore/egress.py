"""Where the server may send requests of its own: public addresses only, unless allow-listed.

A URL a user gives us (a webhook endpoint) is fetched by the server, from inside the network it
runs in. Without a check that is server-side request forgery: ``http://169.254.169.254/`` reads the
cloud's instance credentials, ``http://127.0.0.1:5432/`` probes the database. So a target must be a
*public* address (:func:`refusal` says why not: loopback, private, link-local, unspecified, multicast,
broadcast or otherwise not globally routable, judged with :mod:`ipaddress`), or be allow-listed by
host name or network in the settings (``FIELDWATCH_WEBHOOK_ALLOWED_TARGETS``).

Two rules make the check hold:

* **An address is checked as the network sees it, whatever its spelling.** The C resolver reads
  ``127.1``, ``2130706433``, ``0x7f.1`` and ``0177.0.0.1`` as 127.0.0.1 (``inet_aton``'s forms), and
  ``[::ffff:127.0.0.1]`` reaches it over IPv6; :func:`literal_address` reads the same forms, and
  :func:`refusal` judges an IPv4 address wrapped in IPv6 (mapped, compatible, 6to4, NAT64) as itself.
  ``localhost`` and ``*.localhost`` are loopback by definition (RFC 6761). Any other name is resolved
  and *every* address it resolves to must pass.
* **The connection goes to the address that was checked.** DNS may answer differently a second time
  (rebinding: public when the endpoint is saved, 127.0.0.1 when it is called), so a caller connects
  to what :func:`checked_addresses` returned and never resolves the name again
  (``ticketing.webhook_transport`` does this for httpx).

::

    EgressError
    ├── EgressRefused   the target is not public and not allow-listed   (an Invalid: 422 at the API)
    └── Unresolvable    the name does not resolve now

:func:`redact_url` masks a URL's password for display and logs.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from fwcore.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``resolve(host, port)``: every address of ``host``; raises :class:`Unresolvable`.
Resolver = Callable[[str, int], Sequence[IPAddress]]

#: How the settings and the error messages name the allow-list.
ALLOW_LIST_SETTING = "FIELDWATCH_WEBHOOK_ALLOWED_TARGETS"
ALLOW_LIST_FORM = "comma-separated host names, IP addresses or CIDR networks, e.g. 10.0.5.0/24,crm.internal"

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*", re.ASCII)
_PART = {
    16: re.compile(r"[0-9a-f]+", re.ASCII),
    8: re.compile(r"[0-7]*", re.ASCII),
    10: re.compile(r"[0-9]+", re.ASCII),
}


class EgressError(Exception):
    """A target the server must not, or cannot, send to."""


class EgressRefused(EgressError, Invalid):
    """The target is not a public address and not allow-listed; the message says which and why."""

    loc = ("body", "url")


class Unresolvable(EgressError):
    """A host name has no address right now (no such name, or DNS is unreachable)."""


def _normal(host: str) -> str:
    """Host as compared: lower case, without IPv6 brackets and one final dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.removesuffix(".")


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """``inet_aton``'s reading: 1-4 dot-separated parts, each decimal, octal (``0…``) or hex (``0x…``);
    the last part fills the remaining bytes (``127.1`` is 127.0.0.1)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if part[:2] == "0x":
            base, digits = 16, part[2:]
        elif part.startswith("0"):
            base, digits = 8, part[1:]
        else:
            base, digits = 10, part
        if not _PART[base].fullmatch(digits) or (base == 16 and not digits):
            return None
        numbers.append(int(digits or "0", base))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def is_host_name(host: str) -> bool:
    """Whether ``host`` is spelled like a DNS name (ASCII labels; an IDN in its ``xn--`` form), not a number."""
    name = _normal(host)
    return bool(_HOST_NAME.fullmatch(name)) and not name.replace(".", "").isdigit()


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form a resolver reads as a number; None for a name."""
    host = _normal(host)
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.partition("%")[0])  # a zone (%eth0) names no other address
        except ValueError:
            return None
    return _inet_aton(host)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to the IPv4 network, if it does."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (``"loopback"``, ``"private"``, …); None if it is one."""
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_unspecified or ip.is_loopback):
        v4 = _embedded_v4(ip)
        if v4 is not None:
            return refusal(v4)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip == _BROADCAST:
        return "broadcast"
    if ip.is_reserved:
        return "not globally routable"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not globally routable"
    return None


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Non-public targets the operator allows: host names (exact) and networks. Empty: public only."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> EgressPolicy:
        """From the settings' entries; a ValueError names an entry that is neither a network nor a host name."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = _normal(raw)
            network = _network(entry)
            if network is not None:
                networks.append(network)
            elif is_host_name(entry):
                hosts.add(entry)
            else:
                raise ValueError(f"webhook allow-list entry {raw!r} is not a host name, IP address or CIDR network")
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return _normal(host) in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_v4(ip)) is not None:
            candidates.append(v4)
        return any(a.version == n.version and a in n for a in candidates for n in self.networks)


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the operating system's resolver gives for ``host`` (in its order of preference)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"{host} does not resolve: {exc}") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if ip not in found:
            found.append(ip)
    return found


def checked_addresses(
    host: str, port: int, policy: EgressPolicy, resolve: Resolver = system_resolver
) -> list[IPAddress]:
    """The addresses to connect to for ``host``, every one allowed — connect only to these.

    Raises :class:`EgressRefused` (naming the host and why) when one is not, :class:`Unresolvable`
    when a name has no address.
    """
    name = _normal(host)
    literal = literal_address(name)
    if policy.allows_host(name):
        return [literal] if literal is not None else list(resolve(host, port))
    if literal is None and (name == "localhost" or name.endswith(".localhost")):
        raise EgressRefused(_refused(name, "is a", "loopback"))
    addresses = [literal] if literal is not None else list(resolve(host, port))
    if not addresses:
        raise Unresolvable(f"{host} resolves to no address")
    for ip in addresses:
        why = refusal(ip)
        if why is not None and not policy.allows_address(ip):
            raise EgressRefused(_refused(name, "is a" if literal is not None else "resolves to a", why))
    return addresses


def _refused(host: str, verb: str, why: str) -> str:
    return (
        f"url host {host} {verb} {why} address; webhooks go to public addresses only, "
        f"unless the host or its network is in {ALLOW_LIST_SETTING}"
    )


def redact_url(url: str) -> str:
    """``url`` with the password of its user info shown as ``***`` (what logs and responses may show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
