"""Mosquitto's password and ACL files as text: hashes, and the gateways' blocks regenerated from the registry.

Pure functions (no I/O), used by ``fieldwatch gateway provision`` / ``revoke`` / ``sparkplug`` /
``sync-broker`` (:mod:`fieldwatch.provision`), which read and write the files.

Both files get one **managed section**, between ``# BEGIN fieldwatch gateways`` and
``# END fieldwatch gateways``, always at the end of the file. It is rebuilt whole from the
registry's logins every time, so re-provisioning or revoking a gateway can leave no stale line,
and a gateway's grants cannot drift into another gateway's block. Everything else in the file is
hand-written and kept as it is (the server's own logins, say), except what Mosquitto would read as
a grant to a managed login: a ``user X`` entry for a gateway login X outside the section (Mosquitto
merges every ``user X`` entry, so it would add to what the registry grants) and the blocks that
earlier versions wrote (``# fieldwatch gateway X``, then ``user X``). Those are removed, and the
lines that are not regenerated are reported, so an operator can see a hand-added grant go.

Why the section is last: in an ACL every line after ``user X`` belongs to X until the next
``user`` line, so hand-written lines placed after the section would silently become grants of the
last gateway. Hand-written content found after ``END`` is therefore moved above ``BEGIN``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time only its attributes are read: the edge install has no psycopg to import
    from ingest.provisioning import GatewayLogin

#: Mosquitto 2's defaults for ``$7$`` hashes (what ``mosquitto_passwd`` writes).
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12

BEGIN = "# BEGIN fieldwatch gateways"
END = "# END fieldwatch gateways"
#: The line earlier versions wrote before each gateway's ACL block.
LEGACY_MARKER = "# fieldwatch gateway "

_HEADER = (
    "# Generated from the fieldwatch registry by `fieldwatch gateway provision` (and revoke, sparkplug,\n"
    "# sync-broker). Every line up to END is rewritten each time: add your own entries above BEGIN."
)


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


def grants(login: GatewayLogin) -> list[str]:
    """The ACL lines of one gateway: read/write on its own prefix, and its own Sparkplug node if it has one.

    The Sparkplug lines let the node publish every message type as itself (``spBv1.0/{group}/+/{node}``
    and ``…/{node}/{device}``: births, data, deaths) and read its own commands (``…/NCMD/{node}``);
    no topic of another node matches them. They are the lines docs/gateway.md used to tell users to
    add by hand: once the registry holds the node, such an entry regenerates to the same lines.
    """
    lines = [f"topic readwrite {login.topic_prefix}#"]
    if login.sparkplug is not None:
        group, node = login.sparkplug
        lines += [
            f"topic write spBv1.0/{group}/+/{node}",
            f"topic write spBv1.0/{group}/+/{node}/#",
            f"topic read spBv1.0/{group}/NCMD/{node}",
        ]
    return lines


@dataclass(frozen=True, slots=True)
class Regenerated:
    """A file's new text, and the hand-written lines for managed logins that it no longer carries."""

    text: str
    #: ``"<username>: <line>"`` for each grant removed that the registry does not generate again.
    dropped: tuple[str, ...] = ()


def regenerate_acl(text: str, logins: Iterable[GatewayLogin], *, forget: Iterable[str] = ()) -> Regenerated:
    """``text`` (an ACL file) with its managed section rebuilt from ``logins``.

    ``forget``: logins that are no longer registered (just revoked) whose entries must go too.
    """
    logins = sorted(logins, key=lambda lg: lg.username)
    generated = {lg.username: grants(lg) for lg in logins}
    managed = set(generated) | set(forget)
    kept, dropped = _outside_section(text, managed, generated)
    block = [BEGIN, _HEADER]
    for lg in logins:
        block += ["", f"user {lg.username}", *generated[lg.username]]
    block.append(END)
    return Regenerated(_join(kept, block), tuple(dropped))


def regenerate_passwords(text: str, logins: Iterable[GatewayLogin], *, forget: Iterable[str] = ()) -> Regenerated:
    """``text`` (a password file) with its managed section rebuilt from ``logins`` (one ``user:hash`` each).

    A line for a managed login outside the section is removed (it would be a second, stale password).
    """
    logins = sorted(logins, key=lambda lg: lg.username)
    managed = {lg.username for lg in logins} | set(forget)
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(BEGIN):
            inside = True
        elif line.startswith(END):
            inside = False
        elif not inside and (line.startswith("#") or line.split(":", 1)[0] not in managed):
            kept.append(line)
    block = [BEGIN, _HEADER, *(f"{lg.username}:{lg.password_hash}" for lg in logins), END]
    return Regenerated(_join(kept, block))


def _outside_section(text: str, managed: set[str], generated: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The ACL's hand-written lines, minus every entry of a managed login; and the grants removed for good."""
    kept: list[str] = []
    dropped: list[str] = []
    inside = False  # within BEGIN..END
    owner: str | None = None  # the managed login whose entry is being removed, if any
    legacy: str | None = None  # a legacy marker just seen: the login of the block it opens
    for line in text.splitlines():
        words = line.split(None, 1)
        keyword = words[0] if words else ""
        if line.startswith(BEGIN):
            inside, owner = True, None
        elif line.startswith(END):
            inside = False
        elif inside:
            pass
        elif line.startswith(LEGACY_MARKER):
            legacy = line[len(LEGACY_MARKER) :].strip()
        elif keyword == "user" and len(words) == 2:
            user = words[1].strip()
            owner = user if user in managed or user == legacy else None
            if owner is None:
                kept.append(line)
            legacy = None
        elif owner is not None and keyword != "pattern":  # a pattern line applies to every login: keep it
            if keyword == "topic" and " ".join(line.split()) not in generated.get(owner, []):
                dropped.append(f"{owner}: {line.strip()}")
            legacy = None
        else:
            kept.append(line)
            legacy = None
    return kept, dropped


def _join(kept: list[str], block: list[str]) -> str:
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join([*kept, "", *block] if kept else block) + "\n"
