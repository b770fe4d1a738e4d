"""Writing the broker's password and ACL files so the broker can still read them, and reloading it.

Mosquitto is started as root and drops to its own user (``mosquitto``) before it opens these files,
and again when it rereads them on SIGHUP. A file it cannot open is not skipped: every client is
refused ("Unable to open pwfile"), the whole fleet at once. So every rewrite:

* decides the file's owner, group and mode **before** anything is written (:func:`plan`): the
  settings' values when given, else an existing file's own, else the invoking user, the broker
  user's group and 0640 (root:mosquitto 0640 under sudo: the broker reads, only root writes);
* refuses, naming the fix, when the result would be unreadable by the broker's user, when a group
  or user does not exist here, or when only root could give the file that owner or group;
* replaces the file atomically with that owner, group and mode already set (:func:`write`), so the
  broker never sees a half-written file or one with the wrong permissions.

Refusals are :class:`BrokerFileError`, whose message is one line saying what to do next.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Mode of a file this module creates when no setting says otherwise: the broker's group reads it.
DEFAULT_MODE = 0o640


class BrokerFileError(Exception):
    """A broker file cannot be written (or the broker reloaded) as asked; the message says what to do."""


@dataclass(frozen=True, slots=True)
class FileAccess:
    """Who should own the broker's files (settings ``FIELDWATCH_BROKER_FILE_*`` and ``_BROKER_USER``).

    None keeps an existing file's owner, group or mode; a new file gets the invoking user, the
    group of ``broker_user`` and :data:`DEFAULT_MODE`.
    """

    owner: str | None = None
    group: str | None = None
    mode: int | None = None
    #: The user the broker runs as: the result must be readable by it (checked when it exists here).
    broker_user: str = "mosquitto"


@dataclass(frozen=True, slots=True)
class Planned:
    """A file to write, with the owner, group and mode it will have."""

    path: Path
    uid: int
    gid: int
    mode: int
    #: Its text now ("" for a new file).
    current: str


def plan(path: Path, access: FileAccess, *, euid: int | None = None, groups: set[int] | None = None) -> Planned:
    """Decide ``path``'s owner, group and mode and check that they can be set and read; nothing is written.

    ``euid``/``groups``: the invoking user and its groups (default: this process's).
    """
    euid = os.geteuid() if euid is None else euid
    groups = ({os.getegid(), *os.getgroups()}) if groups is None else groups
    if not path.parent.is_dir():
        raise BrokerFileError(f"directory {path.parent} does not exist: create it, or give the broker's real file")
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise BrokerFileError(f"cannot look at {path}: {exc.strerror}; run this as root (sudo)") from None
    broker = _broker(access.broker_user)
    uid = _uid(access.owner, "FIELDWATCH_BROKER_FILE_OWNER") if access.owner else (st.st_uid if st else euid)
    if access.group:
        gid = _group(access.group, "FIELDWATCH_BROKER_FILE_GROUP")
    elif st is not None:
        gid = st.st_gid
    elif broker is not None:
        gid = broker.pw_gid
    else:
        raise BrokerFileError(
            f"the broker's user {access.broker_user!r} does not exist here, so the group of {path} is unknown: "
            "set FIELDWATCH_BROKER_FILE_GROUP to the group the broker runs as (a name or a number), "
            "or FIELDWATCH_BROKER_USER"
        )
    mode = access.mode if access.mode is not None else (stat.S_IMODE(st.st_mode) if st else DEFAULT_MODE)
    where = f"{path} ({_name(uid, gid)} {mode:04o})"
    if broker is not None and not _can(broker, uid, gid, mode, stat.S_IRUSR):
        raise BrokerFileError(
            f"the broker's user {broker.pw_name!r} could not read {where}, and every gateway would be refused "
            f"after the next reload: set FIELDWATCH_BROKER_FILE_GROUP={_group_name(broker.pw_gid)} and "
            "FIELDWATCH_BROKER_FILE_MODE=0640 (or chgrp/chmod the file), or FIELDWATCH_BROKER_USER"
        )
    if broker is not None:
        for parent in path.resolve().parents:
            pst = parent.stat()
            if not _can(broker, pst.st_uid, pst.st_gid, stat.S_IMODE(pst.st_mode), stat.S_IXUSR):
                raise BrokerFileError(
                    f"the broker's user {broker.pw_name!r} cannot enter {parent} "
                    f"({_name(pst.st_uid, pst.st_gid)} {stat.S_IMODE(pst.st_mode):04o}), so it could not read {path}: "
                    "keep the broker's files in a directory it can enter, such as /etc/mosquitto"
                )
    if euid != 0 and (uid != euid or gid not in groups):
        raise BrokerFileError(
            f"only root can write {where}: run this with sudo, or set FIELDWATCH_BROKER_FILE_OWNER and "
            "FIELDWATCH_BROKER_FILE_GROUP to yourself and a group you are in"
        )
    try:
        current = path.read_text() if st is not None else ""
    except OSError as exc:
        raise BrokerFileError(f"cannot read {path}: {exc.strerror}; run this as a user who can (sudo)") from None
    return Planned(path, uid, gid, mode, current)


def write(planned: Planned, text: str) -> None:
    """Replace the file atomically with ``text``, already owned and moded as planned."""
    path = planned.path
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600, ours
    except OSError as exc:
        raise BrokerFileError(f"cannot write in {path.parent}: {exc.strerror}; run this as root (sudo)") from None
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchown(fh.fileno(), planned.uid, planned.gid)
            os.fchmod(fh.fileno(), planned.mode)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BrokerFileError(f"cannot write {path}: {exc.strerror}; run this as root (sudo)") from None


def reload_broker(command: str) -> None:
    """Run ``command`` (no shell) to make the broker reread its files, e.g. ``systemctl reload mosquitto``."""
    argv = shlex.split(command)
    hint = "the files are written: reload the broker yourself (systemctl reload mosquitto, or kill -HUP its pid)"
    if not argv:
        raise BrokerFileError(f"FIELDWATCH_BROKER_RELOAD_COMMAND is empty; {hint}")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerFileError(f"could not run {command!r} ({exc}); {hint}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise BrokerFileError(f"{command!r} failed ({said[-1] if said else f'exit {done.returncode}'}); {hint}")


def _can(user: pwd.struct_passwd, uid: int, gid: int, mode: int, owner_bit: int) -> bool:
    """Whether ``user`` has the permission ``owner_bit`` (read or execute, as the owner's bit) on such a file."""
    if user.pw_uid == 0:
        return True
    if user.pw_uid == uid:
        return bool(mode & owner_bit)
    if gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return bool(mode & (owner_bit >> 3))
    return bool(mode & (owner_bit >> 6))


def _broker(name: str) -> pwd.struct_passwd | None:
    """The broker's user by name or number; None if it does not exist here (a broker in a container)."""
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


def _uid(name: str, setting: str) -> int:
    if name.isdigit():
        return int(name)  # a user of the broker's container need not exist on this host
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise BrokerFileError(f"user {name!r} does not exist here: fix {setting} (a user name or number)") from None


def _group(name: str, setting: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise BrokerFileError(
            f"group {name!r} does not exist here: install the broker, or fix {setting} (a group name or number)"
        ) from None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _name(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return f"{user}:{_group_name(gid)}"
