"""Outbound webhooks under test: a real local HTTP receiver that verifies signatures and dedups by key.

``receiver``, ``silent_server`` and ``tls_receiver`` are fixtures (imported by the test modules that
use them). The
receiver listens on loopback, which webhooks refuse unless allow-listed: the tests allow it
explicitly with :data:`ALLOW_RECEIVER` (or :data:`ALLOW_RECEIVER_ENV` for the API's settings).
"""

from __future__ import annotations

import ipaddress
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fwcore.egress import EgressPolicy, IPAddress, Unresolvable
from ticketing.webhooks import verify

SECRET = "s3cret-s3cret-s3cret"
#: The local receiver's address, allow-listed as a deployment would allow-list its own receiver.
ALLOW_RECEIVER = EgressPolicy.parse(["127.0.0.1"])
ALLOW_RECEIVER_ENV = {"FIELDWATCH_WEBHOOK_ALLOWED_TARGETS": "127.0.0.1"}


def resolver(names: dict[str, Sequence[str]]) -> Callable[[str, int], list[IPAddress]]:
    """A DNS stand-in answering ``names`` (host -> addresses); any other name does not resolve."""

    def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in names:
            raise Unresolvable(f"{host} does not resolve (test resolver)")
        return [ipaddress.ip_address(a) for a in names[host]]

    return resolve


def t0() -> datetime:
    """Just after now: the outbox stamps rows with the database's real now()."""
    return datetime.now(UTC) + timedelta(minutes=1)


@dataclass
class Receiver:
    """A stdlib HTTP server that fails the first ``fail_first`` requests and dedups by key."""

    url: str = ""
    port: int = 0
    fail_first: int = 0
    requests: list[dict] = field(default_factory=list)
    processed: dict[str, dict] = field(default_factory=dict)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A :class:`Receiver` listening on a free port for the test; shut down afterwards."""
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            h = {k.lower(): v for k, v in self.headers.items()}
            rec.requests.append({"headers": h, "body": body})
            if len(rec.requests) <= rec.fail_first:
                self.send_response(503)
            else:
                ok = verify(SECRET, h["x-fieldwatch-timestamp"], body, h["x-fieldwatch-signature"])
                if ok:
                    rec.processed.setdefault(h["idempotency-key"], orjson.loads(body))
                self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    rec.url = f"http://127.0.0.1:{rec.port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """The port of a TCP server on 127.0.0.1 that accepts a connection and closes it without a word."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            pass  # the server closes the connection when this returns

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@dataclass
class TlsReceiver:
    """An HTTPS server on 127.0.0.1 with a certificate for :attr:`name` only, from the test's own CA."""

    name: str
    port: int
    ca_pem: bytes
    server_names: list[str | None] = field(default_factory=list)  # SNI of each handshake
    hosts: list[str] = field(default_factory=list)  # Host header of each request


def _certificate_authority(name: str) -> tuple[bytes, bytes, bytes]:
    """A CA certificate, and a certificate and key for the DNS name ``name`` that it signed (PEM)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, certificate and CRL signing
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), leaf.public_bytes(pem), key_pem


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[TlsReceiver]:
    """A :class:`TlsReceiver` for ``hooks.example`` answering 200 to every POST; shut down afterwards."""
    ca_pem, cert_pem, key_pem = _certificate_authority("hooks.example")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    rec = TlsReceiver(name="hooks.example", port=server.server_address[1], ca_pem=ca_pem)
    context.sni_callback = lambda sock, server_name, ctx: rec.server_names.append(server_name)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            rec.hosts.append(self.headers["Host"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server.RequestHandlerClass = Handler
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()
    thread.join(5)


def api_ticket(url: str) -> int:
    """A 'new' ticket from the API (external id CRM-1) on a freshly seeded gold client's device."""
    with psycopg.connect(url) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('A', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, 's', 's', 48, 11) RETURNING id",
            (client,),
        ).fetchone()[0]
        dev = conn.execute(
            "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'p', 'P') RETURNING id", (site,)
        ).fetchone()[0]
        return conn.execute(
            "INSERT INTO tickets (device_id, problem_code, title, source, external_id) "
            "VALUES (%s, 'X', 'x', 'api', 'CRM-1') RETURNING id",
            (dev,),
        ).fetchone()[0]
