"""``fieldwatch gateway provision``: register a gateway, issue its MQTT credentials, write its config.

Runs on the server side (it touches the database, which the edge ``gateway``
package must never import) and is mounted under ``fieldwatch gateway``.

What one call does, in this order so a failure leaves nothing half-issued:

1. checks the site exists and the gateway slug is free (or already belongs to
   that site: provisioning again **rotates** the credentials);
2. generates a random password and stores only its hash, in Mosquitto's ``$7$``
   format (PBKDF2-SHA512, :func:`mosquitto_hash`), in ``gateway_credentials``;
3. for Mosquitto, replaces the gateway's line in the password file and its block
   in the ACL file so it may publish and subscribe only under
   ``fw/v1/{site}/{gateway}/#`` (reload Mosquitto afterwards: ``kill -HUP``);
4. writes the gateway's YAML config with the broker URL and credentials.

Steps 1 and 2 write rows, so they are ingest's (:func:`ingest.provisioning.register_gateway`,
one transaction); this module makes the password and its hash and edits the broker's files.
Those pure parts (hashing, ACL/password-file editing, config text) stay here, beside the command:
they are about Mosquitto's files, not the registry, and the gateway package must not carry
server-side broker administration. They are plain functions, testable without a database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer

from fwcore.contract import TOPIC_ROOT, check_slug
from fwcore.errors import DomainError

#: Mosquitto 2's defaults for ``$7$`` hashes (what ``mosquitto_passwd`` writes).
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12


class ProvisionError(Exception):
    """Provisioning cannot go on; the message says what to fix."""


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``: a Mosquitto password-file hash."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (constant-time compare)."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    expected = mosquitto_hash(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return hmac.compare_digest(expected.rsplit("$", 1)[1], digest)


def mqtt_username(site: str, gateway: str) -> str:
    """The broker login of a gateway (URL-safe, so it fits in ``mqtt_url``)."""
    return f"{site}.{gateway}"


def topic_prefix(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/"


def with_password_entry(text: str, username: str, hashed: str) -> str:
    """A password file's text with ``username``'s line added or replaced."""
    lines = [ln for ln in text.splitlines() if ln.split(":", 1)[0] != username]
    return "\n".join([*lines, f"{username}:{hashed}"]) + "\n"


def acl_block(username: str, prefix: str) -> str:
    """The ACL lines giving ``username`` read/write on its own prefix and nothing else."""
    return f"# fieldwatch gateway {username}\nuser {username}\ntopic readwrite {prefix}#\n"


def with_acl_entry(text: str, username: str, prefix: str) -> str:
    """An ACL file's text with ``username``'s block (as written by :func:`acl_block`) added or replaced."""
    marker = f"# fieldwatch gateway {username}"
    out: list[str] = []
    skip = 0
    for line in text.splitlines():
        if line == marker:
            skip = 2  # the block's "user" and "topic" lines
            continue
        if skip and line.startswith(("user ", "topic ")):
            skip -= 1
            continue
        skip = 0
        out.append(line)
    body = "\n".join(out).rstrip("\n")
    return (body + "\n\n" if body else "") + acl_block(username, prefix)


def broker_url(base: str, username: str, password: str) -> str:
    """``base`` (``mqtt://host:port``) with the gateway's credentials in it."""
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{username}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme or "mqtt", netloc, "", "", ""))


def config_text(site: str, gateway: str, url: str) -> str:
    """The gateway's starting config: identity and broker; the field engineer adds devices."""
    return f"""\
# Gateway config written by `fieldwatch gateway provision` (docs/gateway.md).
# It holds this gateway's broker password: keep it readable by the gateway's user only.
# Add the devices below, then run `fieldwatch gateway check --config <this file>` on site.
gateway: {gateway}
site: {site}
mqtt_url: "{url}"
poll_interval: 1.0
devices: []
# devices:
#   - name: pump-1
#     host: 192.168.10.21          # Modbus TCP
#     profile: pump-p100
#   - name: pump-2
#     protocol: opcua
#     endpoint: opc.tcp://192.168.10.22:4840
#     root: "2:pump-2"
#     profile: pump-p100-opcua
"""


@dataclass(frozen=True, slots=True)
class Provisioned:
    """What :func:`provision` issued (the password is shown once, in the config file)."""

    site: str
    gateway: str
    username: str
    password: str
    password_hash: str
    topic_prefix: str
    rotated: bool


def register(db_url: str, site: str, gateway: str, name: str = "") -> Provisioned:
    """Register ``gateway`` at ``site`` (or rotate its credentials) and store the password hash."""
    import psycopg

    from ingest.provisioning import register_gateway

    check_slug(site, "site")
    check_slug(gateway, "gateway")
    username = mqtt_username(site, gateway)
    password = secrets.token_urlsafe(24)
    hashed = mosquitto_hash(password)
    prefix = topic_prefix(site, gateway)
    try:
        with psycopg.connect(db_url) as conn:
            done = register_gateway(
                conn, site, gateway, name=name, mqtt_username=username, password_hash=hashed, topic_prefix=prefix
            )
    except DomainError as exc:  # the site is unknown, or the slug is another site's gateway
        raise ProvisionError(exc.message) from None
    return Provisioned(site, gateway, username, password, hashed, prefix, done.rotated)


def _rewrite(path: Path, new_text: str) -> None:
    """Replace a file atomically, keeping it private (it holds hashes or a password)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new_text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def provision(
    db_url: str,
    site: str,
    gateway: str,
    out: Path,
    *,
    mqtt_url: str,
    name: str = "",
    password_file: Path | None = None,
    acl_file: Path | None = None,
) -> Provisioned:
    """Register, issue credentials, update Mosquitto's files and write the gateway's config."""
    issued = register(db_url, site, gateway, name)
    if password_file is not None:
        old = password_file.read_text() if password_file.exists() else ""
        _rewrite(password_file, with_password_entry(old, issued.username, issued.password_hash))
    if acl_file is not None:
        old = acl_file.read_text() if acl_file.exists() else ""
        _rewrite(acl_file, with_acl_entry(old, issued.username, issued.topic_prefix))
    _rewrite(out, config_text(site, gateway, broker_url(mqtt_url, issued.username, issued.password)))
    return issued


def provision_command(
    site: Annotated[str, typer.Option(help="Slug of an existing site.")],
    name: Annotated[str, typer.Option(help="Gateway slug (its MQTT topics use it).")],
    out: Annotated[Path, typer.Option(help="Where to write the gateway's YAML config.")] = Path("gateway.yaml"),
    password_file: Annotated[
        Path | None, typer.Option(help="Mosquitto password_file to add the gateway's login to.")
    ] = None,
    acl_file: Annotated[
        Path | None, typer.Option(help="Mosquitto acl_file to add the gateway's topic rule to.")
    ] = None,
    mqtt_url: Annotated[
        str | None, typer.Option(help="Broker URL the gateway should use (default: FIELDWATCH_MQTT_URL).")
    ] = None,
) -> None:
    """Register a gateway, issue its MQTT credentials, update Mosquitto's files, write its config."""
    from fwcore.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        issued = provision(
            settings.database_url,
            site,
            name,
            out,
            mqtt_url=mqtt_url or settings.mqtt_url,
            password_file=password_file,
            acl_file=acl_file,
        )
    except (ProvisionError, SettingsError, ValueError) as exc:
        typer.echo(f"cannot provision: {exc}", err=True)
        raise typer.Exit(2) from None
    verb = "rotated credentials of" if issued.rotated else "provisioned"
    typer.echo(
        f"{verb} gateway {name!r} at site {site!r}; MQTT user {issued.username!r}, topics {issued.topic_prefix}#"
    )
    typer.echo(f"config written to {out} (it holds the password; copy it to the gateway)")
    if password_file or acl_file:
        typer.echo("reload Mosquitto so it reads the new entries: kill -HUP $(pidof mosquitto)")


def mount(root: typer.Typer) -> None:
    """Add ``provision`` to the ``fieldwatch gateway`` group of the ``fieldwatch`` app."""
    for group in root.registered_groups:
        if group.name == "gateway" and group.typer_instance is not None:
            group.typer_instance.command("provision")(provision_command)
