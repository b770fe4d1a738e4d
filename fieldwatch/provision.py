"""``fieldwatch gateway provision`` / ``revoke`` / ``sparkplug`` / ``sync-broker``: gateway logins on the broker.

Runs on the server side (it touches the database, which the edge ``gateway`` package must never
import) and is mounted under ``fieldwatch gateway``.

What ``provision`` does, in this order so a failure leaves nothing half-issued:

1. checks that the broker's files can be rewritten so the broker can still read them
   (:func:`fieldwatch.broker_files.plan`: owner, group, mode; nothing is written yet);
2. registers the gateway, or rotates its password if it is already registered at that site, and
   stores only the hash (Mosquitto's ``$7$``) and its grants: its topic prefix
   ``fw/v1/{site}/{gateway}/`` and, for a Sparkplug B gateway, its Sparkplug node
   (:func:`ingest.provisioning.register_gateway`, one transaction);
3. regenerates the gateway section of the password file and of the ACL file **whole** from the
   registry (:mod:`fieldwatch.mosquitto_auth`), so no stale line survives a rotation, a revocation
   or a Sparkplug change, and no gateway's grant lands in another gateway's block;
4. writes the gateway's YAML config with the broker URL and its credentials (mode 0600);
5. with ``--reload``, makes the broker reread its files (``FIELDWATCH_BROKER_RELOAD_COMMAND``,
   ``systemctl reload mosquitto`` by default): clients whose login is gone are disconnected at once.

``revoke`` deletes a gateway's login (step 2 in reverse) and does steps 3 and 5; ``sparkplug``
changes a gateway's Sparkplug node without a new password; ``sync-broker`` does steps 1, 3 and 5
alone (after an upgrade, or to check what the files would become with ``--check``).

Every change runs under one PostgreSQL advisory lock, so two commands at once cannot interleave
their reads and writes of the files.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer

from fieldwatch.broker_files import BrokerFileError, FileAccess, Planned, plan, reload_broker, write
from fieldwatch.mosquitto_auth import mosquitto_hash, regenerate_acl, regenerate_passwords
from fwcore.contract import TOPIC_ROOT, check_slug
from fwcore.errors import DomainError

if TYPE_CHECKING:  # imported where used: `fieldwatch gateway` must load on an edge box without psycopg
    import psycopg

    from fwcore.settings import Settings
    from ingest.provisioning import GatewayLogin

T = TypeVar("T")


class ProvisionError(Exception):
    """Provisioning cannot go on; the message says what to fix."""


def mqtt_username(site: str, gateway: str) -> str:
    """The broker login of a gateway (URL-safe, so it fits in ``mqtt_url``; also its MQTT client id)."""
    return f"{site}.{gateway}"


def topic_prefix(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/"


def broker_url(base: str, username: str, password: str) -> str:
    """``base`` (``mqtt://host:port``) with the gateway's credentials in it."""
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{username}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme or "mqtt", netloc, "", "", ""))


def config_text(site: str, gateway: str, url: str, sparkplug: tuple[str, str] | None = None) -> str:
    """The gateway's starting config: identity and broker; the field engineer adds devices."""
    sp = ""
    if sparkplug is not None:
        sp = f"sparkplug:                  # the broker grants this node only\n  group_id: {sparkplug[0]}\n"
        sp += f"  edge_node_id: {sparkplug[1]}\n"
    return f"""\
# Gateway config written by `fieldwatch gateway provision` (docs/gateway.md).
# It holds this gateway's broker password: keep it readable by the gateway's user only.
# Add the devices below, then run `fieldwatch gateway check --config <this file>` on site.
gateway: {gateway}
site: {site}
mqtt_url: "{url}"
poll_interval: 1.0
{sp}devices: []
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
class BrokerFiles:
    """The broker's gateway password and ACL files, who must be able to read them, and how to reload it.

    A file left None is not touched. ``reload_command`` None: do not reload (the caller says to).
    """

    password_file: Path | None = None
    acl_file: Path | None = None
    access: FileAccess = field(default_factory=FileAccess)
    reload_command: str | None = None

    @property
    def given(self) -> bool:
        return self.password_file is not None or self.acl_file is not None


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
    sparkplug: tuple[str, str] | None = None
    #: Hand-written grants of gateway logins the regenerated ACL no longer carries.
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Synced:
    """The outcome of regenerating the broker's files (``revoke``, ``sparkplug``, ``sync-broker``)."""

    #: The login that was revoked, if any (revoke).
    username: str | None = None
    #: Whether a file's text changed (or, with ``check``, would change).
    changed: bool = False
    dropped: tuple[str, ...] = ()


SparkplugArg = tuple[str, str] | Literal["keep"] | None


def provision(
    db_url: str,
    site: str,
    gateway: str,
    out: Path,
    *,
    mqtt_url: str,
    name: str = "",
    broker: BrokerFiles | None = None,
    sparkplug: SparkplugArg = "keep",
) -> Provisioned:
    """Register (or rotate), regenerate the broker's files, write the gateway's config, reload if asked.

    ``sparkplug``: the (group id, edge node id) the gateway publishes Sparkplug B as; None for none;
    ``"keep"`` leaves what is registered.
    """
    from ingest.provisioning import register_gateway

    check_slug(site, "site")
    check_slug(gateway, "gateway")
    broker = broker or BrokerFiles()
    username = mqtt_username(site, gateway)
    password = secrets.token_urlsafe(24)
    hashed = mosquitto_hash(password)
    prefix = topic_prefix(site, gateway)

    def change(conn: psycopg.Connection) -> bool:
        return register_gateway(
            conn, site, gateway, name=name, mqtt_username=username, password_hash=hashed, topic_prefix=prefix,
            sparkplug=sparkplug,
        ).rotated  # fmt: skip

    rotated, synced, logins = _change_and_sync(db_url, broker, change)
    node = next((lg.sparkplug for lg in logins if lg.username == username), None)
    try:
        _write_private(out, config_text(site, gateway, broker_url(mqtt_url, username, password), node))
    except OSError as exc:
        raise ProvisionError(
            f"cannot write {out}: {exc.strerror}; run again with another --out (a new password)"
        ) from None
    if broker.reload_command:
        _reload(broker.reload_command)
    return Provisioned(site, gateway, username, password, hashed, prefix, rotated, node, synced.dropped)


def revoke(db_url: str, site: str, gateway: str, *, broker: BrokerFiles | None = None) -> Synced:
    """Delete the gateway's broker login and regenerate the broker's files without it (reload if asked)."""
    from ingest.provisioning import revoke_gateway

    broker = broker or BrokerFiles()
    # Its lines go even if it had no login any more (revoked earlier without the files).
    login, synced, _ = _change_and_sync(
        db_url, broker, lambda conn: revoke_gateway(conn, site, gateway), forget=(mqtt_username(site, gateway),)
    )
    if broker.reload_command:
        _reload(broker.reload_command)
    return Synced(login.username if login else None, synced.changed, synced.dropped)


def set_sparkplug(db_url: str, site: str, gateway: str, node: tuple[str, str] | None, *, broker: BrokerFiles) -> Synced:
    """Grant a provisioned gateway Sparkplug node ``node`` (None: none) and regenerate the files; same password."""
    from ingest.provisioning import set_sparkplug as record

    _, synced, _ = _change_and_sync(db_url, broker, lambda conn: record(conn, site, gateway, node))
    if broker.reload_command:
        _reload(broker.reload_command)
    return synced


def sync_broker(db_url: str, *, broker: BrokerFiles, check: bool = False) -> Synced:
    """Regenerate the broker's files from the registry (``check``: only say whether they would change)."""
    _, synced, _ = _change_and_sync(db_url, broker, lambda conn: None, check=check)
    if broker.reload_command and not check:
        _reload(broker.reload_command)
    return synced


def _change_and_sync(
    db_url: str,
    broker: BrokerFiles,
    change: Callable[[psycopg.Connection], T],
    *,
    forget: tuple[str, ...] = (),
    check: bool = False,
) -> tuple[T, Synced, list[GatewayLogin]]:
    """Under the lock: plan the files (refusing before any change), apply ``change``, regenerate the files.

    ``forget``: logins whose lines must go although the registry does not list them (revoked ones).
    """
    import psycopg

    from ingest.provisioning import broker_files_lock, gateway_logins

    try:
        with psycopg.connect(db_url, autocommit=True) as conn, broker_files_lock(conn):
            planned = _plan(broker)
            done = change(conn)
            logins = gateway_logins(conn)
            changed = False
            dropped: list[str] = []
            for kind, p in planned:
                regen = (regenerate_passwords if kind == "password" else regenerate_acl)(
                    p.current, logins, forget=forget
                )
                changed = changed or regen.text != p.current
                dropped += regen.dropped
                if not check:
                    write(p, regen.text)
    except DomainError as exc:  # unknown site or gateway, a slug or Sparkplug node of another gateway
        raise ProvisionError(exc.message) from None
    except BrokerFileError as exc:
        raise ProvisionError(str(exc)) from None
    return done, Synced(changed=changed, dropped=tuple(dropped)), logins


def _plan(broker: BrokerFiles) -> list[tuple[str, Planned]]:
    out = []
    if broker.password_file is not None:
        out.append(("password", plan(broker.password_file, broker.access)))
    if broker.acl_file is not None:
        out.append(("acl", plan(broker.acl_file, broker.access)))
    return out


def _reload(command: str) -> None:
    try:
        reload_broker(command)
    except BrokerFileError as exc:
        raise ProvisionError(str(exc)) from None


def _write_private(path: Path, new_text: str) -> None:
    """Replace a file atomically, readable by its owner only (it holds the gateway's password)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new_text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --- the commands ---------------------------------------------------------------------------------

PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(help="Mosquitto password_file of the gateway listener (default: FIELDWATCH_BROKER_PASSWORD_FILE)."),
]
AclFileOpt = Annotated[
    Path | None, typer.Option(help="Mosquitto acl_file of the gateway listener (default: FIELDWATCH_BROKER_ACL_FILE).")
]
ReloadOpt = Annotated[
    bool,
    typer.Option("--reload", help="Then make the broker reread its files (FIELDWATCH_BROKER_RELOAD_COMMAND)."),
]
SiteOpt = Annotated[str, typer.Option(help="Slug of the gateway's site.")]
NameOpt = Annotated[str, typer.Option(help="Gateway slug (its MQTT topics use it).")]


def _settings_and_files(
    password_file: Path | None, acl_file: Path | None, reload: bool
) -> tuple[Settings, BrokerFiles]:
    """The settings, and the broker's files from the options, else the settings."""
    from fwcore.settings import load_settings

    s = load_settings()
    access = FileAccess(s.broker_file_owner, s.broker_file_group, s.broker_file_mode, s.broker_user)
    files = BrokerFiles(
        password_file or s.broker_password_file,
        acl_file or s.broker_acl_file,
        access,
        s.broker_reload_command if reload else None,
    )
    return s, files


def _report(files: BrokerFiles, dropped: tuple[str, ...], reloaded: bool) -> None:
    """What the operator must know about the broker's files after a change."""
    if dropped:
        typer.echo("these hand-written grants of gateway logins are no longer in the ACL:", err=True)
        for line in dropped:
            typer.echo(f"  {line}", err=True)
        typer.echo(
            "  the registry is the source of every gateway grant now: for a Sparkplug B gateway run "
            "`fieldwatch gateway sparkplug --site <site> --name <gateway>`",
            err=True,
        )
    if not files.given:
        typer.echo(
            "the broker's files were not touched (no --password-file/--acl-file, nor FIELDWATCH_BROKER_PASSWORD_FILE/"
            "_ACL_FILE): run `fieldwatch gateway sync-broker --password-file … --acl-file … --reload`"
        )
    elif reloaded:
        typer.echo("the broker reread its files")
    else:
        typer.echo("reload the broker so it reads them: systemctl reload mosquitto (or kill -HUP $(pidof mosquitto))")


def _fail(verb: str, exc: Exception) -> typer.Exit:
    typer.echo(f"cannot {verb}: {exc}", err=True)
    return typer.Exit(2)


def provision_command(
    site: SiteOpt,
    name: NameOpt,
    out: Annotated[Path, typer.Option(help="Where to write the gateway's YAML config.")] = Path("gateway.yaml"),
    password_file: PasswordFileOpt = None,
    acl_file: AclFileOpt = None,
    mqtt_url: Annotated[
        str | None, typer.Option(help="Broker URL the gateway should use (default: FIELDWATCH_MQTT_URL).")
    ] = None,
    sparkplug: Annotated[
        bool | None,
        typer.Option(
            "--sparkplug/--no-sparkplug",
            help="Grant (or take away) Sparkplug B topics; default: as registered, none for a new gateway.",
        ),
    ] = None,
    sparkplug_group: Annotated[str | None, typer.Option(help="Sparkplug group id (default: the site).")] = None,
    sparkplug_node: Annotated[str | None, typer.Option(help="Sparkplug edge node id (default: the gateway).")] = None,
    reload: ReloadOpt = False,
) -> None:
    """Register a gateway (or rotate its password), regenerate the broker's files, write its config."""
    from fwcore.settings import SettingsError

    node: SparkplugArg = "keep"
    if sparkplug is False:
        node = None
    elif sparkplug or sparkplug_group or sparkplug_node:
        node = (sparkplug_group or site, sparkplug_node or name)
    try:
        settings, files = _settings_and_files(password_file, acl_file, reload)
        issued = provision(
            settings.database_url, site, name, out, mqtt_url=mqtt_url or settings.mqtt_url, broker=files, sparkplug=node
        )
    except (ProvisionError, SettingsError, ValueError) as exc:
        raise _fail("provision", exc) from None
    verb = "rotated credentials of" if issued.rotated else "provisioned"
    typer.echo(
        f"{verb} gateway {name!r} at site {site!r}; MQTT user {issued.username!r}, topics {issued.topic_prefix}#"
        + (f", Sparkplug node {issued.sparkplug[0]}/{issued.sparkplug[1]}" if issued.sparkplug else "")
    )
    typer.echo(f"config written to {out} (it holds the password; copy it to the gateway)")
    _report(files, issued.dropped, reload)


def revoke_command(
    site: SiteOpt,
    name: NameOpt,
    password_file: PasswordFileOpt = None,
    acl_file: AclFileOpt = None,
    reload: ReloadOpt = False,
) -> None:
    """Delete a gateway's broker login and its lines in the broker's files; with --reload it is refused at once."""
    from fwcore.settings import SettingsError

    try:
        settings, files = _settings_and_files(password_file, acl_file, reload)
        done = revoke(settings.database_url, site, name, broker=files)
    except (ProvisionError, SettingsError, ValueError) as exc:
        raise _fail("revoke", exc) from None
    if done.username:
        typer.echo(f"revoked broker login {done.username!r} of gateway {name!r} at site {site!r}")
    else:
        typer.echo(f"gateway {name!r} at site {site!r} had no broker login (already revoked)")
    _report(files, done.dropped, reload)


def sparkplug_command(
    site: SiteOpt,
    name: NameOpt,
    group: Annotated[str | None, typer.Option(help="Sparkplug group id (default: the site).")] = None,
    node: Annotated[str | None, typer.Option(help="Sparkplug edge node id (default: the gateway).")] = None,
    off: Annotated[bool, typer.Option("--off", help="Take the gateway's Sparkplug grants away.")] = False,
    password_file: PasswordFileOpt = None,
    acl_file: AclFileOpt = None,
    reload: ReloadOpt = False,
) -> None:
    """Grant a provisioned gateway its Sparkplug B node's topics (or take them away); its password stays."""
    from fwcore.settings import SettingsError

    spb = None if off else (group or site, node or name)
    try:
        settings, files = _settings_and_files(password_file, acl_file, reload)
        done = set_sparkplug(settings.database_url, site, name, spb, broker=files)
    except (ProvisionError, SettingsError, ValueError) as exc:
        raise _fail("change the Sparkplug grants", exc) from None
    typer.echo(
        f"gateway {name!r} at site {site!r}: " + (f"Sparkplug node {spb[0]}/{spb[1]}" if spb else "no Sparkplug grants")
    )
    _report(files, done.dropped, reload)


def sync_command(
    password_file: PasswordFileOpt = None,
    acl_file: AclFileOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing: exit 1 if the files differ from the registry.")
    ] = False,
    reload: ReloadOpt = False,
) -> None:
    """Regenerate the gateway logins in the broker's files from the registry (after an upgrade, or to repair)."""
    from fwcore.settings import SettingsError

    try:
        settings, files = _settings_and_files(password_file, acl_file, reload)
        if not files.given:
            raise ProvisionError("give --password-file and --acl-file (or FIELDWATCH_BROKER_PASSWORD_FILE/_ACL_FILE)")
        done = sync_broker(settings.database_url, broker=files, check=check)
    except (ProvisionError, SettingsError, ValueError) as exc:
        raise _fail("sync the broker's files", exc) from None
    if check:
        for line in done.dropped:
            typer.echo(f"would drop  {line}")
        typer.echo("the broker's files differ from the registry" if done.changed else "the broker's files are in sync")
        raise typer.Exit(1 if done.changed else 0)
    typer.echo("the broker's files are regenerated from the registry" if done.changed else "already in sync")
    _report(files, done.dropped, reload)


def mount(root: typer.Typer) -> None:
    """Add ``provision``, ``revoke``, ``sparkplug`` and ``sync-broker`` to ``fieldwatch gateway``."""
    for group in root.registered_groups:
        if group.name == "gateway" and group.typer_instance is not None:
            group.typer_instance.command("provision")(provision_command)
            group.typer_instance.command("revoke")(revoke_command)
            group.typer_instance.command("sparkplug")(sparkplug_command)
            group.typer_instance.command("sync-broker")(sync_command)
