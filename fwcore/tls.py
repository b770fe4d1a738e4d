"""TLS for fieldwatch's own connections: the MQTT clients' contexts and the API's certificate.

Every paho client (ingest, the gateway, Sparkplug) gets its :class:`ssl.SSLContext` from
:func:`mqtt_tls_context`, so they verify the same way: the broker's certificate must chain to the
configured CA (or the system's CAs when none is configured) and name the host in the URL; TLS 1.2
at least; a client certificate is sent when one is configured. Nothing here turns verification off.

Errors are found before any connection where they can be: a file that cannot be read, a key that
does not match its certificate, TLS files with a plaintext ``mqtt://`` URL all raise
:class:`TlsConfigError` naming the file. A failed handshake is explained by
:func:`explain_handshake_failure` in words that say what to fix (which CA, which host name).
Messages never quote a URL: it may carry a password.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

#: The scheme of an MQTT URL over TLS (``mqtt://`` and ``tcp://`` are plaintext).
MQTT_TLS_SCHEME = "mqtts"


class TlsConfigError(ValueError):
    """A TLS setting cannot be used (unreadable file, mismatched key, TLS files on a plaintext URL)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of one TLS client: the CA to trust (None: the system's) and an optional client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise TlsConfigError("a client certificate needs its key, and a key its certificate: give both")


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails.

    paho wraps the TCP socket, calls ``do_handshake()`` and, when that raises (an untrusted
    certificate), drops the socket without closing it: a file descriptor leaked per retry, and a
    ResourceWarning each time. Closing here makes every client of these contexts leak-free.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _reason(exc: OSError) -> str:
    """``No such file or directory`` for a missing file; OpenSSL's reason for a bad one."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc)
    return exc.strerror or str(exc)


def client_context(files: TlsFiles | None) -> ssl.SSLContext:
    """A verifying client context: the CA file (else the system's CAs), hostname check, TLS >= 1.2."""
    files = files or TlsFiles()
    ctx = ssl.create_default_context()  # CERT_REQUIRED and check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.sslsocket_class = _ClosingSSLSocket
    if files.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(files.ca_file))
        except OSError as exc:  # FileNotFoundError, PermissionError, ssl.SSLError (not PEM)
            raise TlsConfigError(f"cannot use CA file {str(files.ca_file)!r}: {_reason(exc)}") from None
    if files.cert_file is not None and files.key_file is not None:
        try:
            ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
        except OSError as exc:
            raise TlsConfigError(
                f"cannot use client certificate {str(files.cert_file)!r} with key {str(files.key_file)!r}: "
                f"{_reason(exc)}"
            ) from None
    return ctx


def mqtt_tls_context(url: str, files: TlsFiles | None) -> ssl.SSLContext | None:
    """The context for a broker URL: one for ``mqtts://``, None for plaintext.

    TLS files given with a plaintext URL are refused: whoever set a CA expects the traffic to
    be encrypted, and sending it in clear instead would be a silent downgrade.
    """
    parts = urlsplit(url)
    if parts.scheme != MQTT_TLS_SCHEME:
        if files is not None and (files.ca_file or files.cert_file):
            raise TlsConfigError(
                f"MQTT TLS files are configured but the broker URL is {parts.scheme}:// (plaintext) to "
                f"{parts.hostname}:{parts.port or 1883}; use mqtts:// (usually port 8883), or remove the TLS files"
            )
        return None
    return client_context(files)


def server_files_error(cert_file: Path, key_file: Path) -> str | None:
    """Why a server certificate and key cannot be served (None: they can), checked before listening."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except OSError as exc:
        return f"cannot use certificate {str(cert_file)!r} with key {str(key_file)!r}: {_reason(exc)}"
    return None


def explain_handshake_failure(exc: BaseException, host: str, port: int, *, ca_hint: str) -> str | None:
    """What a failed TLS connection means and what to change; None when ``exc`` is no TLS error.

    ``ca_hint`` names where the CA is configured for this client (a setting, a config key).
    """
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        if "mismatch" in str(detail).lower():
            return (
                f"TLS: the broker's certificate at {where} does not name {host} ({detail}); connect with a "
                "host name the certificate names, or reissue the certificate with this one"
            )
        return (
            f"TLS: the broker's certificate at {where} is not trusted (certificate verify failed: {detail}); "
            f"set {ca_hint} to the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake with {where} failed ({exc.reason or exc}); check that it is a TLS listener and, "
            "if it requires client certificates, that one is configured"
        )
    return None
