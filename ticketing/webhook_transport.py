"""An httpx transport that connects only to addresses the egress policy checked.

Checking a webhook's URL when it is saved is not enough: its name may resolve to a public address
then and to 127.0.0.1 when the delivery is made (DNS rebinding), and httpx would resolve it again
on connecting. :class:`PinnedTransport` resolves the host itself, checks every address with
:func:`fwcore.egress.checked_addresses`, and sends the request to the checked address — the URL's
host replaced by the address, the ``Host`` header and TLS server name (SNI, and so certificate
verification) still the original name. Connections are not kept alive, so a connection opened for
one name is never reused for another name on the same address.

A name that does not resolve fails like httpx's own DNS failure (``httpx.ConnectError``); a refused
target raises :class:`fwcore.egress.EgressRefused` before any connection is made.
"""

from __future__ import annotations

import httpx

from fwcore.egress import EgressPolicy, Resolver, Unresolvable, checked_addresses, system_resolver

#: Addresses of one name tried in turn when a connection is refused (bounds the time one delivery takes).
MAX_ADDRESSES = 4


class PinnedTransport(httpx.BaseTransport):
    """Sends each request to a checked address of its host (see the module docstring)."""

    def __init__(
        self,
        policy: EgressPolicy,
        resolve: Resolver = system_resolver,
        *,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolve
        self._inner = inner or httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0), trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = checked_addresses(host, port, self._policy, self._resolve)
        except Unresolvable as exc:
            raise httpx.ConnectError(str(exc), request=request) from None
        failure: httpx.ConnectError | None = None
        for address in addresses[:MAX_ADDRESSES]:
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=str(address)),
                headers=request.headers,  # keeps Host: the original name
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            try:
                return self._inner.handle_request(pinned)
            except httpx.ConnectError as exc:  # nothing was sent: the next address may answer
                failure = exc
        assert failure is not None  # checked_addresses returns at least one address
        raise failure

    def close(self) -> None:
        self._inner.close()
