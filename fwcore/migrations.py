"""Append-only SQL migrations: applied once each, in order, checked against what was released.

A directory of migrations holds files ``NNNN_name.sql``; a file may come in variants
``NNNN_name.VARIANT.sql`` (the caller picks one variant per database, e.g. ``timescale`` or
``plain``). A *repair* of an edited migration is an ordinary migration whose version sorts
right after the one it repairs: ``0004.1_repair_x.sql`` runs after ``0004`` and before ``0005``
(versions are dot-separated integers, compared as numbers).

Why the checks: a migration that has landed is history. Each applied file's sha256 is recorded
in ``schema_migrations``; if the file changes afterwards the database no longer matches the
files and the runner refuses, naming the file, the checksum recorded when it was applied
(expected) and the file's now (found). The directory's ``checksums.lock`` lists every released
file with its checksum, so a changed file is caught in CI before any database sees it, plus the
checksums of *earlier* released versions of files that were edited anyway: a database that
applied one of those is accepted, and the repair the lock names brings it to the current schema.

Every migration runs in its own transaction under a session advisory lock, so several processes
starting together apply each migration exactly once. Exceptions: :class:`MigrationError` (and
:class:`NotMigrated`, a database with no migration table yet); psycopg errors from a failing
migration are translated into it.

Maintaining the lock (``python -m fwcore.migrations``)::

    python -m fwcore.migrations check DIR   # exit 1 naming every changed, missing or unlisted file
    python -m fwcore.migrations lock DIR    # add new files to DIR/checksums.lock (never rewrites one)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import psycopg

log = logging.getLogger(__name__)

LOCK_FILE = "checksums.lock"
_VERSION = re.compile(r"\d+(?:\.\d+)*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
ADVICE = (
    "Restore the file as released; a change must be a new migration: write a new migration instead of "
    "editing a landed one (see docs/upgrading.md)."
)


class MigrationError(RuntimeError):
    """A migration could not be applied, or the applied history does not match the files."""


class NotMigrated(MigrationError):
    """The database has no migration history yet (nothing was ever applied)."""


def checksum(sql: str) -> str:
    """The sha256 recorded for a migration: of its text, UTF-8 encoded, newlines as read in text mode."""
    return hashlib.sha256(sql.encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (``0004`` or ``0004.1``), file name and SQL text."""

    version: str
    name: str
    sql: str
    variant: str | None = None

    @property
    def checksum(self) -> str:
        return checksum(self.sql)

    @property
    def key(self) -> tuple[int, ...]:
        """Sort key: ``0004`` < ``0004.1`` < ``0004.2`` < ``0005``."""
        return version_key(self.version)


def version_key(version: str) -> tuple[int, ...]:
    """Versions compare as numbers part by part, so a repair ``NNNN.1`` sits between ``NNNN`` and the next."""
    return tuple(int(part) for part in version.split("."))


def parse_name(name: str) -> tuple[str, str | None]:
    """``(version, variant)`` of a migration file name; MigrationError when it is not one."""
    stem = name.removesuffix(".sql")
    version, _, rest = stem.partition("_")
    if stem == name or not rest or not _VERSION.fullmatch(version):
        raise MigrationError(f"{name}: a migration file is named NNNN_name.sql (NNNN.N_name.sql for a repair)")
    variant = rest.rpartition(".")[2] if "." in rest else None
    return version, variant


@dataclass(frozen=True)
class Earlier:
    """An earlier released version of an edited migration, and the migration that repairs it."""

    name: str
    checksum: str
    label: str  # which release, e.g. ``v1@eb6fa32``
    repair: str  # file name of the repair migration


@dataclass(frozen=True)
class Lock:
    """The content of ``checksums.lock``: released checksums, and known earlier versions."""

    released: dict[str, str]
    earlier: tuple[Earlier, ...] = ()

    def earlier_of(self, name: str, sha: str) -> Earlier | None:
        return next((e for e in self.earlier if e.name == name and e.checksum == sha), None)


def parse_lock(text: str) -> Lock:
    """Read a lock: ``FILE SHA256`` per released file, ``FILE SHA256 earlier=LABEL repair=FILE`` per earlier one."""
    released: dict[str, str] = {}
    earlier: list[Earlier] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = raw.partition("#")[0].split()
        if not fields:
            continue
        opts = dict(f.partition("=")[::2] for f in fields[2:])
        if len(fields) < 2 or not _SHA256.fullmatch(fields[1]) or set(opts) not in ({"earlier", "repair"}, set()):
            raise MigrationError(f"{LOCK_FILE} line {lineno}: expected 'FILE SHA256 [earlier=LABEL repair=FILE]'")
        name, sha = fields[0], fields[1]
        if opts:
            earlier.append(Earlier(name, sha, opts["earlier"], opts["repair"]))
        elif name in released:
            raise MigrationError(f"{LOCK_FILE} line {lineno}: {name} is listed twice")
        else:
            released[name] = sha
    return Lock(released, tuple(earlier))


def render_lock(lock: Lock, directory_label: str) -> str:
    """The lock as text: released files in migration order, each followed by its earlier versions."""
    width = max((len(n) for n in lock.released), default=0)
    lines = [
        "# The released migrations and their sha256 (of the file's text). A listed file never changes:",
        "# a change is a new migration. Checked by the migration runner and by a CI test.",
        f"# After adding a migration:  python -m fwcore.migrations lock {directory_label}",
        "#",
        "# 'earlier=' lines are versions of an edited file that earlier releases shipped: a database that",
        "# applied one is accepted, and the 'repair=' migration (sorting right after the file) brings it",
        "# to the current schema. See docs/upgrading.md.",
    ]
    named = {e.name for e in lock.earlier}
    for name in sorted(lock.released.keys() | named, key=lambda n: (_key_or_last(n), n)):
        if name in lock.released:
            lines.append(f"{name:<{width}}  {lock.released[name]}")
        for e in lock.earlier:
            if e.name == name:
                lines.append(f"{name:<{width}}  {e.checksum}  earlier={e.label}  repair={e.repair}")
    return "\n".join(lines) + "\n"


def _key_or_last(name: str) -> tuple[int, ...]:
    try:
        return version_key(parse_name(name)[0])
    except MigrationError:
        return (sys.maxsize,)


Status = Literal["ok", "repaired", "to repair", "changed", "pending", "no file"]


@dataclass(frozen=True)
class MigrationState:
    """Where one migration stands in a database, compared with the files and the lock.

    ``ok``: applied, file unchanged; ``repaired``/``to repair``: applied as a known earlier
    version whose repair has run / will run at the next migrate; ``changed``: refused (see
    ``problem``); ``pending``: not applied yet; ``no file``: applied, but this release has no such file.
    """

    version: str
    name: str
    status: Status
    applied_at: datetime | None = None
    earlier: Earlier | None = None
    expected: str | None = None
    found: str | None = None
    expected_from: str = ""
    problem: str | None = None

    def describe(self) -> str:
        """A short human description, for ``fieldwatch db status``."""
        if self.status == "repaired" and self.earlier:
            return f"repaired by {self.earlier.repair} (applied {self.earlier.label})"
        if self.status == "to repair" and self.earlier:
            return f"earlier release {self.earlier.label}: migrate applies {self.earlier.repair}"
        if self.status == "changed":
            if self.expected and self.found:
                return f"changed: expected {self.expected[:12]}… ({self.expected_from}), found {self.found[:12]}…"
            return f"changed: {self.problem}"
        if self.status == "no file":
            return "applied, no such file in this release"
        return self.status


def assess(
    migrations: list[Migration], applied: dict[str, tuple[str, str, datetime]], lock: Lock | None
) -> list[MigrationState]:
    """Compare the files with the lock and with what the database applied (version → name, sha, at).

    Pure: the runner refuses when any state has a ``problem``; ``fieldwatch db status`` shows them all.
    """
    by_name = {m.name: m for m in migrations}
    states = [_assess_one(m, applied.get(m.version), lock, by_name, applied) for m in migrations]
    known = {m.version for m in migrations}
    states += [
        MigrationState(version, name, "no file", applied_at=at)
        for version, (name, _sha, at) in applied.items()
        if version not in known
    ]
    return sorted(states, key=lambda s: version_key(s.version))


def _assess_one(
    m: Migration,
    row: tuple[str, str, datetime] | None,
    lock: Lock | None,
    by_name: dict[str, Migration],
    applied: dict[str, tuple[str, str, datetime]],
) -> MigrationState:
    at = row[2] if row else None
    released = lock.released.get(m.name) if lock else None
    if released is not None and released != m.checksum:
        return MigrationState(
            m.version,
            m.name,
            "changed",
            applied_at=at,
            expected=released,
            found=m.checksum,
            expected_from=LOCK_FILE,
            problem=(
                f"migration {m.name} differs from the released file: expected sha256 {released} "
                f"(in {LOCK_FILE}), found sha256 {m.checksum} (the file now)."
            ),
        )
    if row is None:
        return MigrationState(m.version, m.name, "pending")
    recorded = row[1]
    if recorded == m.checksum:
        return MigrationState(m.version, m.name, "ok", applied_at=at)
    earlier = lock.earlier_of(m.name, recorded) if lock else None
    if earlier is None:
        return MigrationState(
            m.version,
            m.name,
            "changed",
            applied_at=at,
            expected=recorded,
            found=m.checksum,
            expected_from="when applied",
            problem=(
                f"migration {m.name} changed after it was applied: expected sha256 {recorded} (recorded when "
                f"it was applied, {at:%Y-%m-%d %H:%M:%S%z}), found sha256 {m.checksum} (the file now)."
            ),
        )
    repair = by_name.get(earlier.repair)
    if repair is None:
        return MigrationState(
            m.version,
            m.name,
            "changed",
            applied_at=at,
            earlier=earlier,
            problem=(
                f"migration {m.name} was applied as {earlier.label}, whose repair {earlier.repair} "
                "is not among the migrations: this release is incomplete."
            ),
        )
    status: Status = "repaired" if repair.version in applied else "to repair"
    return MigrationState(m.version, m.name, status, applied_at=at, earlier=earlier)


def refusal(states: Iterable[MigrationState]) -> str | None:
    """The one message the runner refuses with (every problem, then what to do), or None."""
    problems = [s.problem for s in states if s.problem]
    return "\n".join([*problems, ADVICE]) if problems else None


VariantChooser = Callable[[psycopg.Connection], str | None]


@dataclass(frozen=True)
class MigrationDir:
    """A directory of migration files (any importlib.resources Traversable) and how to run them."""

    directory: Traversable
    label: str  # how messages name the directory, e.g. "ingest/migrations"
    lock_key: int  # the session advisory lock that serialises migrators

    def files(self) -> list[Migration]:
        """Every migration file, every variant, in order."""
        found = []
        for entry in self.directory.iterdir():
            if entry.name.endswith(".sql") and entry.is_file():
                version, variant = parse_name(entry.name)
                found.append(Migration(version, entry.name, entry.read_text(encoding="utf-8"), variant))
        return sorted(found, key=lambda m: (m.key, m.name))

    def available(self, variant: str | None) -> list[Migration]:
        """The migrations to apply for ``variant``, in order: one file per version."""
        chosen: dict[str, Migration] = {}
        for m in self.files():
            if m.variant is not None and m.variant != variant:
                continue
            if m.version in chosen:
                raise MigrationError(f"two migrations share version {m.version}: {chosen[m.version].name} and {m.name}")
            chosen[m.version] = m
        return list(chosen.values())

    def lock(self) -> Lock | None:
        entry = self.directory / LOCK_FILE
        return parse_lock(entry.read_text(encoding="utf-8")) if entry.is_file() else None

    def migrate(self, conn: psycopg.Connection, choose_variant: VariantChooser | None = None) -> list[str]:
        """Apply pending migrations on an autocommit connection; returns the names applied.

        Refuses (MigrationError, nothing applied) when a file differs from the lock or from what
        the database applied, unless the database applied a known earlier version whose repair is here.
        """
        conn.execute("SELECT pg_advisory_lock(%s)", (self.lock_key,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            variant = choose_variant(conn) if choose_variant else None
            migrations = self.available(variant)
            states = assess(migrations, _applied(conn), self.lock())
            message = refusal(states)
            if message:
                raise MigrationError(message)
            _log_repairs(states)
            pending = {s.version for s in states if s.status == "pending"}
            done: list[str] = []
            for m in migrations:
                if m.version in pending:
                    _apply(conn, m)
                    done.append(m.name)
            return done
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self.lock_key,))

    def states(self, conn: psycopg.Connection, choose_variant: VariantChooser | None = None) -> list[MigrationState]:
        """Every migration's state in this database (applied or not), without changing anything."""
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            raise NotMigrated("database is not migrated yet; run `fieldwatch db migrate`")
        variant = choose_variant(conn) if choose_variant else None
        return assess(self.available(variant), _applied(conn), self.lock())

    def check_lock(self) -> list[str]:
        """What is wrong with the lock against the files (empty when all is well); no database needed."""
        lock = self.lock()
        add = f"python -m fwcore.migrations lock {self.label}"
        if lock is None:
            return [f"{self.label} has no {LOCK_FILE}: create it with `{add}` and commit it"]
        files = {m.name: m for m in self.files()}
        unlisted = [
            f"{name} is not in {LOCK_FILE}: add it with `{add}` and commit the lock with the file"
            for name in files.keys() - lock.released.keys()
        ]
        problems = _released_problems(lock, files) + unlisted
        for variant in {m.variant for m in files.values()}:
            try:
                self.available(variant)
            except MigrationError as exc:
                problems.append(str(exc))
        return sorted(problems)


def _released_problems(lock: Lock, files: dict[str, Migration]) -> list[str]:
    """Listed files that changed or disappeared, and earlier versions that do not fit (see _check_earlier)."""
    problems = []
    for name, sha in lock.released.items():
        if name not in files:
            problems.append(
                f"{name} is listed in {LOCK_FILE} but missing: a released migration is never removed; restore it"
            )
        elif files[name].checksum != sha:
            problems.append(
                f"{name} changed since it was released (expected sha256 {sha} from {LOCK_FILE}, found "
                f"{files[name].checksum}): restore it and write a new migration instead"
            )
    return problems + _check_earlier(lock, files)


def _check_earlier(lock: Lock, files: dict[str, Migration]) -> list[str]:
    """Each earlier version names a file and a repair that exist, the repair sorting right after the file."""
    problems = []
    repairs = {e.repair for e in lock.earlier}
    seen: set[tuple[str, str]] = set()
    for e in lock.earlier:
        where = f"{LOCK_FILE}: earlier {e.name} {e.label}"
        if (e.name, e.checksum) in seen or lock.released.get(e.name) == e.checksum:
            problems.append(f"{where}: its checksum is listed twice")
        seen.add((e.name, e.checksum))
        target, repair = files.get(e.name), files.get(e.repair)
        if target is None or repair is None:
            problems.append(f"{where}: {e.name if target is None else e.repair} is not a migration here")
            continue
        between = [
            m.name
            for m in files.values()
            if m.name not in repairs and target.key < m.key < repair.key and m.version != target.version
        ]
        if repair.key <= target.key or between:
            problems.append(
                f"{where}: the repair {e.repair} must sort right after {e.name} "
                f"(before {', '.join(between) or 'nothing'} — name it {target.version}.1_…)"
            )
    return problems


def _applied(conn: psycopg.Connection) -> dict[str, tuple[str, str, datetime]]:
    rows = conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations").fetchall()
    return {v: (n, c, at) for v, n, c, at in rows}


def _apply(conn: psycopg.Connection, m: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(m.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
    except psycopg.Error as exc:
        raise MigrationError(f"migration {m.name} failed: {exc}") from exc
    log.info("applied migration %s", m.name)


def _log_repairs(states: Iterable[MigrationState]) -> None:
    for s in states:
        if s.earlier is None:
            continue
        if s.status == "to repair":
            log.info(
                "%s was applied as an earlier release (%s): %s brings it to the current schema",
                s.name,
                s.earlier.label,
                s.earlier.repair,
            )
        elif s.status == "repaired":
            log.info(
                "%s was applied as an earlier release (%s), repaired by %s", s.name, s.earlier.label, s.earlier.repair
            )


def write_lock(directory: Path, label: str | None = None) -> list[str]:
    """Add every unlisted migration of ``directory`` to its lock; returns the names added.

    Refuses (MigrationError) when a listed file changed or disappeared: the lock records
    releases, it is never rewritten to match an edit.
    """
    label = label or directory.name
    mdir = MigrationDir(directory, label, 0)
    lock = mdir.lock() or Lock({})
    files = {m.name: m for m in mdir.files()}
    problems = _released_problems(lock, files)
    if problems:
        raise MigrationError("\n".join(problems))
    added = sorted(files.keys() - lock.released.keys(), key=lambda n: (files[n].key, n))
    released = {**lock.released, **{n: files[n].checksum for n in added}}
    (directory / LOCK_FILE).write_text(render_lock(Lock(released, lock.earlier), label), encoding="utf-8")
    return added


def _shown(path: Path) -> str:
    """``path`` as the user typed it when relative, else just its last two parts (no machine paths in files)."""
    if not path.is_absolute():
        return path.as_posix()
    rel = os.path.relpath(path)
    return Path(rel).as_posix() if not rel.startswith("..") else "/".join(path.parts[-2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fwcore.migrations", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["check", "lock"], help="check the lock, or add new files to it")
    parser.add_argument("directory", type=Path, help="the migrations directory, e.g. ingest/migrations")
    args = parser.parse_args(argv)
    label = _shown(args.directory)
    try:
        if args.command == "lock":
            added = write_lock(args.directory, label)
            for name in added:
                print(f"locked {name}")
            if not added:
                print(f"{label}/{LOCK_FILE} is up to date")
            return 0
        problems = MigrationDir(args.directory, label, 0).check_lock()
    except MigrationError as exc:
        print(exc, file=sys.stderr)
        return 1
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"every migration in {label} matches {LOCK_FILE}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
