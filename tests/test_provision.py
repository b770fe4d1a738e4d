"""Gateway provisioning: registration, the broker's password and ACL files (text, owner, group, mode), config file."""

from __future__ import annotations

import getpass
import grp
import os
import pwd
import queue
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from fieldwatch.broker_files import BrokerFileError, FileAccess, plan
from fieldwatch.cli import app
from fieldwatch.mosquitto_auth import (
    BEGIN,
    END,
    mosquitto_hash,
    regenerate_acl,
    regenerate_passwords,
    verify_mosquitto_hash,
)
from fieldwatch.provision import BrokerFiles, ProvisionError, provision
from fwcore.settings import SettingsError, load_settings, mqtt_parts
from gateway import load_config
from ingest.provisioning import GatewayLogin
from tests.support.brokers import PrivateMosquitto
from tests.support.waits import wait_until

#: Files in pytest's tmp_path, read by a broker running as the test's own user (not the real setup:
#: tests/test_provision_broker.py runs the broker as `mosquitto`).
AS_INVOKER = FileAccess(broker_user=getpass.getuser())
ROOT = os.geteuid() == 0


@pytest.fixture
def etc() -> Iterator[Path]:
    """A directory the broker's user may enter, like /etc/mosquitto (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="fw-etc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _site(db_url: str, slug: str) -> None:
    with psycopg.connect(db_url) as conn:
        client = conn.execute(
            "INSERT INTO clients (name, segment) VALUES (%s, 'standard') RETURNING id", (f"c-{slug}",)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, %s, %s, 0, 0)",
            (client, slug, slug),
        )


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our $7$ hash verifies a password the way mosquitto_passwd's does, and rejects a wrong one."""
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "u", "s3cret"], check=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert verify_mosquitto_hash("s3cret", theirs)
    assert not verify_mosquitto_hash("wrong", theirs)
    assert verify_mosquitto_hash("x", mosquitto_hash("x")) and mosquitto_hash("x") != mosquitto_hash("x")


def _login(gateway: str, password_hash: str = "$7$h", sparkplug: tuple[str, str] | None = None) -> GatewayLogin:
    return GatewayLogin("s", gateway, f"s.{gateway}", password_hash, f"fw/v1/s/{gateway}/", sparkplug)


def test_file_entries_are_replaced_not_duplicated() -> None:
    """Provisioning again replaces a gateway's password line and ACL block and keeps the others."""
    pw = regenerate_passwords("other:$7$1$a$b\n", [_login("g", "$7$old")]).text
    pw = regenerate_passwords(pw, [_login("g", "$7$new")]).text
    assert [ln for ln in pw.splitlines() if not ln.startswith("#")] == ["other:$7$1$a$b", "", "s.g:$7$new"]
    acl = regenerate_acl("user ingest\ntopic read fw/v1/#\n", [_login("g")]).text
    acl = regenerate_acl(acl, [_login("g"), _login("h")]).text
    acl = regenerate_acl(acl, [_login("g"), _login("h")]).text
    assert acl.count("user s.g") == 1 and acl.count("user s.h") == 1 and "user ingest" in acl


def test_hand_written_entries_stay_and_the_gateway_section_comes_last() -> None:
    """Hand-written entries and pattern lines stay; a gateway entry written by an earlier version or by hand
    is replaced by the generated one, and its extra grants are reported; lines found after the section move
    above it, so they can never become grants of the last gateway."""
    legacy = (
        "pattern read $SYS/broker/connection/%c/state\n"
        "user ingest\ntopic readwrite fw/v1/#\n"
        "# fieldwatch gateway s.g\nuser s.g\ntopic readwrite fw/v1/s/g/#\ntopic write spBv1.0/x/+/y\n"
        "user s.h\ntopic read fw/v1/s/g/#\npattern write sensors/%u/#\n"
    )
    first = regenerate_acl(legacy, [_login("g"), _login("h")])
    assert first.dropped == ("s.g: topic write spBv1.0/x/+/y", "s.h: topic read fw/v1/s/g/#")
    assert _sections(first.text) == {
        None: [],
        "ingest": ["topic readwrite fw/v1/#"],
        "s.g": ["topic readwrite fw/v1/s/g/#"],
        "s.h": ["topic readwrite fw/v1/s/h/#"],
    }
    assert "pattern read $SYS/broker/connection/%c/state" in first.text and "pattern write sensors/%u/#" in first.text
    appended = first.text + "user ops\ntopic read fw/v1/+/+/status\n"
    second = regenerate_acl(appended, [_login("g"), _login("h")])
    lines = second.text.splitlines()
    assert lines.index("user ops") < lines.index(BEGIN) and lines[-1] == END
    assert _sections(second.text)["ops"] == ["topic read fw/v1/+/+/status"] and second.dropped == ()
    assert regenerate_acl(second.text, [_login("g"), _login("h")]).text == second.text
    indented = regenerate_acl("  user  s.g\n\ttopic write x/y\n", [_login("g")])
    assert indented.dropped == ("s.g: topic write x/y",) and _sections(indented.text)[None] == []


def test_unknown_site_is_refused(db_url: str, tmp_path: Path) -> None:
    """A gateway cannot be provisioned for a site that does not exist; nothing is written."""
    with pytest.raises(ProvisionError, match="does not exist"):
        provision(db_url, "s-nosuch", "gw-1", tmp_path / "gw.yaml", mqtt_url="mqtt://127.0.0.1:1883")
    assert not (tmp_path / "gw.yaml").exists()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[PrivateMosquitto, Path, Path]]:
    """Our own Mosquitto with a password file and an ACL, anonymous access off."""
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    pw.write_text(f"ingest:{mosquitto_hash('ingest-pw')}\n")
    pw.chmod(0o600)
    acl.write_text("user ingest\ntopic read fw/v1/#\n")
    acl.chmod(0o600)
    with PrivateMosquitto(password_file=pw, acl_file=acl, workdir=tmp_path / "broker") as b:
        yield b, pw, acl


def _client(port: int, user: str, password: str, cid: str) -> mqtt.Client:
    """A client connected as ``user`` (CONNACK received: refused credentials fail here, naming the reason)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    client.username_pw_set(user, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_until(client.is_connected, 5, what=f"the broker to accept {user}")
    return client


def test_gateway_can_only_publish_under_its_own_prefix(
    db_url: str, tmp_path: Path, uid: str, broker: tuple[PrivateMosquitto, Path, Path]
) -> None:
    """Gateway A publishes under its own prefix; what it publishes as gateway B never reaches a subscriber."""
    mosquitto, pw, acl = broker
    port = mosquitto.port
    site = f"s-{uid}"
    _site(db_url, site)
    cfg_a, cfg_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    url = mosquitto.url
    files = BrokerFiles(pw, acl, AS_INVOKER)
    a = provision(db_url, site, "gw-a", cfg_a, mqtt_url=url, broker=files)
    provision(db_url, site, "gw-b", cfg_b, mqtt_url=url, broker=files)
    mosquitto.reload()  # SIGHUP: mosquitto rereads password and ACL files

    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT c.password_hash, c.mqtt_username FROM gateway_credentials c JOIN gateways g ON g.id = c.gateway_id"
            " WHERE g.slug = 'gw-a'"
        ).fetchone()
    assert row is not None and verify_mosquitto_hash(a.password, row[0]) and a.password not in row[0]

    # The written config carries working credentials.
    parts = mqtt_parts(yaml.safe_load(cfg_a.read_text())["mqtt_url"])
    got: queue.Queue[str] = queue.Queue()
    subscribed = threading.Event()
    sub = _client(port, "ingest", "ingest-pw", f"ingest-{uid}")
    sub.on_message = lambda c, u, m: got.put(m.topic)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe("fw/v1/#", qos=1)
    gw = _client(port, parts["username"], parts["password"], f"gw-a-{uid}")
    wait_until(subscribed.is_set, 5, what="the subscriber's SUBACK")
    gw.publish(f"fw/v1/{site}/gw-b/telemetry", b"forged", qos=1).wait_for_publish(3)
    gw.publish(f"fw/v1/{site}/gw-a/telemetry", b"mine", qos=1).wait_for_publish(3)
    first = got.get(timeout=5)
    time.sleep(0.3)  # time must pass: a forged message that slipped through could only show up late
    topics = [first] + [got.get_nowait() for _ in range(got.qsize())]
    for c in (gw, sub):
        c.loop_stop()
        c.disconnect()
    assert topics == [f"fw/v1/{site}/gw-a/telemetry"]


def test_cli_provisions_and_reprovisioning_rotates(db_url: str, tmp_path: Path, uid: str, monkeypatch) -> None:
    """`fieldwatch gateway provision` writes a config; running it again rotates the password."""
    site = f"s-{uid}"
    _site(db_url, site)
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    out = tmp_path / "gw.yaml"
    args = ["gateway", "provision", "--site", site, "--name", "gw-c", "--out", str(out), "--mqtt-url", "mqtt://h:1"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    pw1 = mqtt_parts(yaml.safe_load(out.read_text())["mqtt_url"])["password"]
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "rotated" in second.output
    data = yaml.safe_load(out.read_text())
    assert data["gateway"] == "gw-c" and mqtt_parts(data["mqtt_url"])["password"] != pw1
    assert (out.stat().st_mode & 0o777) == 0o600
    # Once devices are added it is a valid gateway config.
    data["devices"] = [{"name": "pump-1", "host": "127.0.0.1", "profile": "pump-p100"}]
    out.write_text(yaml.safe_dump(data))
    assert load_config(out).site == site
    bad = CliRunner().invoke(app, [*args[:3], "s-nosuch0", *args[4:]])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def _sections(acl: str) -> dict[str | None, list[str]]:
    """The ACL's topic lines by the user they apply to, as Mosquitto reads them (None: anonymous clients)."""
    out: dict[str | None, list[str]] = {None: []}
    user: str | None = None
    for line in acl.splitlines():
        if line.startswith("user "):
            user = line.split(" ", 1)[1]
            out.setdefault(user, [])
        elif line.startswith("topic "):
            out[user].append(line)
    return out


def _sparkplug_doc_lines(group: str, node: str) -> list[str]:
    """The three lines docs/gateway.md told users to add to a Sparkplug gateway's ACL entry."""
    return [
        f"topic write spBv1.0/{group}/+/{node}",
        f"topic write spBv1.0/{group}/+/{node}/#",
        f"topic read spBv1.0/{group}/NCMD/{node}",
    ]


def _add_to_entry(acl: str, user: str, lines: list[str]) -> str:
    """``lines`` appended to ``user``'s entry, as a person following the old docs would."""
    out, inside = [], False
    for line in acl.splitlines():
        if inside and (line.startswith("user ") or line.startswith("#")):
            out += lines
            inside = False
        out.append(line)
        if line == f"user {user}":
            inside = True
    if inside:
        out += lines
    return "\n".join(out) + "\n"


def test_reprovisioning_never_moves_a_gateways_lines_into_another_entry(db_url: str, tmp_path: Path, uid: str) -> None:
    """Re-provisioning D, then C, after Sparkplug lines were added to both entries (as the old docs said):
    no line of D's ends up in C's entry and no topic line is left before every `user` line (anonymous)."""
    site = f"s-{uid}"
    _site(db_url, site)
    acl, pw = tmp_path / "acl", tmp_path / "passwd"
    kw = {"mqtt_url": "mqtt://127.0.0.1:1883", "broker": BrokerFiles(pw, acl, AS_INVOKER)}
    for gw in ("gw-c", "gw-d"):
        provision(db_url, site, gw, tmp_path / f"{gw}.yaml", **kw)  # type: ignore[arg-type]
    text = acl.read_text()
    for gw in ("gw-c", "gw-d"):
        text = _add_to_entry(text, f"{site}.{gw}", _sparkplug_doc_lines(site, gw))
    acl.write_text(text)

    provision(db_url, site, "gw-d", tmp_path / "gw-d.yaml", **kw)  # type: ignore[arg-type]
    sections = _sections(acl.read_text())
    assert not [line for line in sections[f"{site}.gw-c"] if "gw-d" in line], acl.read_text()
    provision(db_url, site, "gw-c", tmp_path / "gw-c.yaml", **kw)  # type: ignore[arg-type]
    sections = _sections(acl.read_text())
    assert sections[None] == [], acl.read_text()
    for gw in ("gw-c", "gw-d"):
        assert all(f"/{gw}/" in line or line.endswith(f"/{gw}") for line in sections[f"{site}.{gw}"]), acl.read_text()


@pytest.mark.skipif(not ROOT, reason="creating files for the mosquitto group needs root")
def test_new_broker_files_belong_to_root_and_the_brokers_group(
    db_url: str, etc: Path, tmp_path: Path, uid: str
) -> None:
    """Run as root, provisioning creates the password and ACL files root:mosquitto 0640, which the broker's
    user can read."""
    site = f"s-{uid}"
    _site(db_url, site)
    pw, acl = etc / "passwd", etc / "acl"
    provision(db_url, site, "gw-a", tmp_path / "a.yaml", mqtt_url="mqtt://h:1", broker=BrokerFiles(pw, acl))
    for path in (pw, acl):
        st = path.stat()
        assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)) == (0, "mosquitto", 0o640)


@pytest.mark.skipif(not ROOT, reason="giving files to the mosquitto group needs root")
def test_existing_broker_files_keep_their_owner_group_and_mode(
    db_url: str, etc: Path, tmp_path: Path, uid: str
) -> None:
    """Rewriting an existing root:mosquitto 0640 password or ACL file keeps that owner, group and mode."""
    site = f"s-{uid}"
    _site(db_url, site)
    pw, acl = etc / "passwd", etc / "acl"
    gid = grp.getgrnam("mosquitto").gr_gid
    for path, mode in ((pw, 0o640), (acl, 0o440)):
        path.write_text("")
        os.chown(path, 0, gid)
        path.chmod(mode)
    provision(db_url, site, "gw-a", tmp_path / "a.yaml", mqtt_url="mqtt://h:1", broker=BrokerFiles(pw, acl))
    for path, mode in ((pw, 0o640), (acl, 0o440)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, mode)


def _expected_sparkplug_block(site: str, gw: str) -> list[str]:
    return [f"topic readwrite fw/v1/{site}/{gw}/#", *_sparkplug_doc_lines(site, gw)]


def test_sparkplug_gateways_blocks_hold_exactly_their_own_lines(db_url: str, tmp_path: Path, uid: str) -> None:
    """C and D provisioned as Sparkplug gateways, then each re-provisioned: each block holds exactly its own
    prefix and its own Sparkplug node, nothing is granted to anonymous clients, the config names the node."""
    site = f"s-{uid}"
    _site(db_url, site)
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    acl.write_text("user ingest\ntopic readwrite fw/v1/#\n")
    files = BrokerFiles(pw, acl, AS_INVOKER)
    for gw in ("gw-c", "gw-d", "gw-d", "gw-c"):
        done = provision(db_url, site, gw, tmp_path / f"{gw}.yaml", mqtt_url="mqtt://h:1", broker=files,
                         sparkplug=(site, gw))  # fmt: skip
        assert done.dropped == ()
    assert _sections(acl.read_text()) == {
        None: [],
        "ingest": ["topic readwrite fw/v1/#"],
        f"{site}.gw-c": _expected_sparkplug_block(site, "gw-c"),
        f"{site}.gw-d": _expected_sparkplug_block(site, "gw-d"),
    }
    cfg = load_config_data(tmp_path / "gw-c.yaml")
    assert cfg["sparkplug"] == {"group_id": site, "edge_node_id": "gw-c"}
    # Re-provisioning without saying anything about Sparkplug keeps the node; --no-sparkplug takes it away.
    provision(db_url, site, "gw-c", tmp_path / "gw-c.yaml", mqtt_url="mqtt://h:1", broker=files)
    assert _sections(acl.read_text())[f"{site}.gw-c"] == _expected_sparkplug_block(site, "gw-c")
    provision(db_url, site, "gw-c", tmp_path / "gw-c.yaml", mqtt_url="mqtt://h:1", broker=files, sparkplug=None)
    assert _sections(acl.read_text())[f"{site}.gw-c"] == [f"topic readwrite fw/v1/{site}/gw-c/#"]


def load_config_data(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_a_sparkplug_node_belongs_to_one_gateway(db_url: str, tmp_path: Path, uid: str) -> None:
    """A gateway cannot be granted the Sparkplug node of another: the refusal names the owner, nothing changes."""
    site = f"s-{uid}"
    _site(db_url, site)
    acl = tmp_path / "acl"
    files = BrokerFiles(None, acl, AS_INVOKER)
    provision(db_url, site, "gw-c", tmp_path / "c.yaml", mqtt_url="mqtt://h:1", broker=files, sparkplug=(site, "n1"))
    before = acl.read_text()
    with pytest.raises(ProvisionError, match="already belongs to gateway 'gw-c'"):
        provision(db_url, site, "gw-d", tmp_path / "d.yaml", mqtt_url="mqtt://h:1", broker=files,
                  sparkplug=(site, "n1"))  # fmt: skip
    assert acl.read_text() == before and not (tmp_path / "d.yaml").exists()


def test_revoking_leaves_no_line_of_the_gateway(db_url: str, tmp_path: Path, uid: str, monkeypatch) -> None:
    """`fieldwatch gateway revoke` deletes the login and every line of it in both files, keeps the others';
    revoking again says so, an unknown gateway is refused."""
    site = f"s-{uid}"
    _site(db_url, site)
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    files = BrokerFiles(pw, acl, AS_INVOKER)
    for gw in ("gw-a", "gw-b"):
        provision(db_url, site, gw, tmp_path / f"{gw}.yaml", mqtt_url="mqtt://h:1", broker=files, sparkplug=(site, gw))
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("FIELDWATCH_BROKER_USER", getpass.getuser())
    args = ["gateway", "revoke", "--site", site, "--name", "gw-a", "--password-file", str(pw), "--acl-file", str(acl)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0 and f"revoked broker login '{site}.gw-a'" in done.output, done.output
    assert "reload the broker" in done.output
    assert "gw-a" not in pw.read_text() and "gw-a" not in acl.read_text()
    assert f"{site}.gw-b:" in pw.read_text() and _sections(acl.read_text())[f"{site}.gw-b"]
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM gateway_credentials c JOIN gateways g ON g.id = c.gateway_id WHERE g.slug = 'gw-a'"
        ).fetchone() == (0,)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "already revoked" in again.output, again.output
    unknown = CliRunner().invoke(app, [*args[:5], "gw-nosuch", *args[6:]])
    assert unknown.exit_code == 2 and "does not exist" in unknown.output, unknown.output


def test_sparkplug_grants_change_without_a_new_password(db_url: str, tmp_path: Path, uid: str, monkeypatch) -> None:
    """`fieldwatch gateway sparkplug` grants a provisioned gateway its node's topics and `--off` takes them
    away; the password line stays the same throughout."""
    site = f"s-{uid}"
    _site(db_url, site)
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    provision(db_url, site, "gw-a", tmp_path / "a.yaml", mqtt_url="mqtt://h:1", broker=BrokerFiles(pw, acl, AS_INVOKER))
    password_line = pw.read_text()
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("FIELDWATCH_BROKER_USER", getpass.getuser())
    monkeypatch.setenv("FIELDWATCH_BROKER_PASSWORD_FILE", str(pw))
    monkeypatch.setenv("FIELDWATCH_BROKER_ACL_FILE", str(acl))
    base = ["gateway", "sparkplug", "--site", site, "--name", "gw-a"]
    on = CliRunner().invoke(app, [*base, "--group", "plant", "--node", "edge-1"])
    assert on.exit_code == 0 and "Sparkplug node plant/edge-1" in on.output, on.output
    assert _sections(acl.read_text())[f"{site}.gw-a"] == [
        f"topic readwrite fw/v1/{site}/gw-a/#",
        *_sparkplug_doc_lines("plant", "edge-1"),
    ]
    off = CliRunner().invoke(app, [*base, "--off"])
    assert off.exit_code == 0, off.output
    assert _sections(acl.read_text())[f"{site}.gw-a"] == [f"topic readwrite fw/v1/{site}/gw-a/#"]
    assert pw.read_text() == password_line
    never = CliRunner().invoke(app, ["gateway", "sparkplug", "--site", site, "--name", "gw-new"])
    assert never.exit_code == 2 and "provision it first" in never.output, never.output


def test_sync_broker_check_reports_what_would_change_and_writes_nothing(
    db_url: str, tmp_path: Path, uid: str, monkeypatch
) -> None:
    """`sync-broker --check` on an ACL written by an earlier version exits 1 naming the hand-added grant it
    would drop, and writes nothing; `sync-broker` then regenerates it and a second check exits 0."""
    site = f"s-{uid}"
    _site(db_url, site)
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    provision(
        db_url, site, "gw-a", tmp_path / "a.yaml", mqtt_url="mqtt://h:1", broker=BrokerFiles(pw, None, AS_INVOKER)
    )
    legacy = f"# fieldwatch gateway {site}.gw-a\nuser {site}.gw-a\ntopic readwrite fw/v1/{site}/gw-a/#\n"
    acl.write_text(legacy + f"topic write spBv1.0/{site}/+/gw-a\n")
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("FIELDWATCH_BROKER_USER", getpass.getuser())
    files = ["--password-file", str(pw), "--acl-file", str(acl)]
    check = CliRunner().invoke(app, ["gateway", "sync-broker", *files, "--check"])
    assert check.exit_code == 1 and f"would drop  {site}.gw-a: topic write spBv1.0/{site}/+/gw-a" in check.output
    assert acl.read_text().startswith(legacy)
    assert CliRunner().invoke(app, ["gateway", "sync-broker", *files]).exit_code == 0
    assert _sections(acl.read_text()) == {None: [], f"{site}.gw-a": [f"topic readwrite fw/v1/{site}/gw-a/#"]}
    assert CliRunner().invoke(app, ["gateway", "sync-broker", *files, "--check"]).exit_code == 0


# --- owner, group and mode of the broker's files ----------------------------------------------------------


@pytest.mark.skipif(not ROOT, reason="giving files to the mosquitto group needs root")
def test_settings_choose_owner_group_and_mode(db_url: str, etc: Path, tmp_path: Path, uid: str, monkeypatch) -> None:
    """FIELDWATCH_BROKER_FILE_OWNER/_GROUP/_MODE override what an existing file has (e.g. mosquitto:mosquitto
    0600, which newer Mosquitto versions ask for)."""
    site = f"s-{uid}"
    _site(db_url, site)
    pw = etc / "passwd"
    pw.write_text("")
    pw.chmod(0o640)
    for key, value in (("OWNER", "mosquitto"), ("GROUP", "mosquitto"), ("MODE", "0600")):
        monkeypatch.setenv(f"FIELDWATCH_BROKER_FILE_{key}", value)
    monkeypatch.setenv("FIELDWATCH_DATABASE_URL", db_url)
    args = ["gateway", "provision", "--site", site, "--name", "gw-a", "--out", str(tmp_path / "a.yaml")]
    done = CliRunner().invoke(app, [*args, "--password-file", str(pw), "--mqtt-url", "mqtt://h:1"])
    assert done.exit_code == 0, done.output
    st, mosquitto = pw.stat(), pwd.getpwnam("mosquitto")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (mosquitto.pw_uid, mosquitto.pw_gid, 0o600)


@pytest.mark.skipif(not ROOT, reason="files of other owners need root")
@pytest.mark.parametrize(
    ("setup", "access", "message"),
    [
        ("new", FileAccess(group="no-such-group"), "group 'no-such-group' does not exist here"),
        ("new", FileAccess(broker_user="no-such-user"), "the broker's user 'no-such-user' does not exist here"),
        ("root-only", FileAccess(), "could not read .* \\(root:root 0600\\).*FIELDWATCH_BROKER_FILE_GROUP=mosquitto"),
        ("hidden-dir", FileAccess(), "cannot enter"),
    ],
    ids=["unknown-group", "unknown-broker-user", "unreadable-existing-file", "unreachable-directory"],
)
def test_refusals_come_before_anything_is_written(
    db_url: str, etc: Path, tmp_path: Path, uid: str, setup: str, access: FileAccess, message: str
) -> None:
    """A file the broker could not read, an unknown group or broker user: refused with the fix, before the
    gateway is registered or any file or config is written."""
    site = f"s-{uid}"
    _site(db_url, site)
    where = etc / "hidden" if setup == "hidden-dir" else etc
    where.mkdir(exist_ok=True, mode=0o700)
    pw = where / "passwd"
    if setup == "root-only":
        pw.write_text("old\n")
        pw.chmod(0o600)
    with pytest.raises(ProvisionError, match=message):
        provision(
            db_url, site, "gw-a", tmp_path / "a.yaml", mqtt_url="mqtt://h:1", broker=BrokerFiles(pw, None, access)
        )
    assert not (tmp_path / "a.yaml").exists()
    assert (pw.read_text() == "old\n") if setup == "root-only" else not pw.exists()
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM gateways WHERE slug = 'gw-a'").fetchone() == (0,)


def test_only_root_may_give_the_files_to_another_owner_or_group(tmp_path: Path) -> None:
    """Run by an ordinary user, a file for another owner or a group the user is not in is refused up front,
    saying to use sudo; the user's own group is fine."""
    me, other = os.getegid(), str(os.getegid() + 54321)
    with pytest.raises(BrokerFileError, match=r"only root can write .* run this with sudo"):
        plan(tmp_path / "pw", FileAccess(group=other, broker_user="0"), euid=4242, groups={me})
    with pytest.raises(BrokerFileError, match="only root can write"):
        plan(tmp_path / "pw", FileAccess(owner="0", group=str(me), broker_user="0"), euid=4242, groups={me})
    planned = plan(tmp_path / "pw", FileAccess(group=str(me), broker_user="0"), euid=4242, groups={me})
    assert (planned.uid, planned.gid, planned.mode) == (4242, me, 0o640)


@pytest.mark.parametrize(
    ("value", "mode"),
    [("0640", 0o640), ("600", 0o600), (0o640, 0o640), ("", None)],
)
def test_broker_file_mode_is_octal_text(value: object, mode: int | None) -> None:
    """FIELDWATCH_BROKER_FILE_MODE is octal text ('0640'); YAML's own octal int is accepted; empty is unset."""
    assert load_settings(broker_file_mode=value).broker_file_mode == mode


@pytest.mark.parametrize("value", ["0644", "0777", "rw-r-----", 640])
def test_broker_file_mode_refuses_others_and_decimal(value: object) -> None:
    """A mode that gives others access, or is not octal (640 unquoted in YAML is decimal), is refused at start."""
    with pytest.raises(SettingsError, match=r"FIELDWATCH_BROKER_FILE_MODE.*'0640'"):
        load_settings(broker_file_mode=value)


async def test_a_gateways_client_id_is_its_broker_login(tmp_path: Path) -> None:
    """The gateway connects with its login as MQTT client id (what a listener with use_username_as_clientid
    makes it anyway, so its persistent session is the same behind any listener), in both publishing modes;
    without a login it keeps fw-gw-{site}-{gateway}."""
    from gateway.config import parse_config
    from gateway.publisher import MqttPublisher, PublisherCallbacks
    from gateway.sparkplug import SparkplugNode

    callbacks = PublisherCallbacks(lambda: None, lambda reason: None, lambda payload: None)
    with_login = MqttPublisher("mqtt://plant-1.gw-9:pw@127.0.0.1:1883", "plant-1", "gw-9", callbacks)
    anonymous = MqttPublisher("mqtt://127.0.0.1:1883", "plant-1", "gw-9", callbacks)
    assert (with_login.client_id, anonymous.client_id) == ("plant-1.gw-9", "fw-gw-plant-1-gw-9")
    config = parse_config({
        "site": "plant-1", "gateway": "gw-9", "sparkplug": {},
        "devices": [{"name": "pump-1", "host": "127.0.0.1", "profile": "pump-p100"}],
    })  # fmt: skip
    node = SparkplugNode(config, tmp_path, "mqtt://plant-1.gw-9:pw@127.0.0.1:1883", callbacks)
    try:
        assert node.client_id == "plant-1.gw-9"
    finally:
        node.buffer.close()
