"""The checksum lock: released migrations never change, every file is listed, the past is on file (no database)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fwcore.migrations import (
    LOCK_FILE,
    Earlier,
    Lock,
    MigrationDir,
    MigrationError,
    main,
    parse_lock,
    parse_name,
    render_lock,
    version_key,
    write_lock,
)
from ingest.schema import MIGRATIONS
from tests.fixtures.migrations.history import COMMITS, fixture_files, sha256

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS_DIR = ROOT / "ingest" / "migrations"


def test_every_migration_matches_the_lock() -> None:
    """Each file of ingest/migrations is listed in checksums.lock with its checksum, and each listed file exists."""
    problems = MIGRATIONS.check_lock()
    assert problems == [], "\n".join(problems)


def test_fixtures_are_the_released_versions_the_lock_knows() -> None:
    """The historical files kept as fixtures are exactly the lock's earlier versions, by commit; the
    released versions are read from ingest/migrations itself, not kept twice."""
    lock = MIGRATIONS.lock()
    assert lock is not None
    for path in fixture_files():
        name, commit, sha = path.name, path.parent.name, sha256(path.read_text(encoding="utf-8"))
        earlier = lock.earlier_of(name, sha)
        assert earlier is not None and earlier.label.endswith("@" + commit), path
    kept = {(p.name, sha256(p.read_text(encoding="utf-8"))) for p in fixture_files()}
    assert {(e.name, e.checksum) for e in lock.earlier} == kept
    assert all(e.label.split("@")[1] in COMMITS for e in lock.earlier)


def test_each_repair_sorts_right_after_the_file_it_repairs() -> None:
    """0004.1 runs after 0004 and before 0005 (numeric versions), and so on for every repair."""
    order = [m.name for m in MIGRATIONS.available("plain")]
    lock = MIGRATIONS.lock()
    assert lock is not None
    for e in lock.earlier:
        assert order.index(e.repair) == order.index(e.name) + 1


@pytest.fixture
def released(tmp_path: Path) -> Path:
    """A copy of the real migrations directory to change."""
    return Path(shutil.copytree(MIGRATIONS_DIR, tmp_path / "migrations"))


def _check(directory: Path) -> list[str]:
    return MigrationDir(directory, "ingest/migrations", 0).check_lock()


def test_a_changed_released_file_fails_the_check(released: Path) -> None:
    """Editing a listed file fails, saying to write a new migration instead."""
    path = released / "0005_rules.sql"
    path.write_text(path.read_text(encoding="utf-8") + "\nALTER TABLE rules ADD COLUMN x int;\n", encoding="utf-8")
    [problem] = _check(released)
    assert problem.startswith("0005_rules.sql changed since it was released")
    assert "write a new migration instead" in problem


def test_a_removed_released_file_fails_the_check(released: Path) -> None:
    """Deleting a listed file fails: a released migration is never removed."""
    (released / "0007_ticketing_models_autoresolve.sql").unlink()
    [problem] = _check(released)
    assert "0007_ticketing_models_autoresolve.sql is listed" in problem and "never removed" in problem


def test_an_unlisted_file_fails_the_check_saying_how_to_lock_it(released: Path) -> None:
    """A new file not in the lock fails, with the command that adds it."""
    (released / "9999_more.sql").write_text("CREATE TABLE more (id int);\n", encoding="utf-8")
    [problem] = _check(released)
    assert "9999_more.sql is not in checksums.lock" in problem
    assert "python -m fwcore.migrations lock ingest/migrations" in problem


def test_the_lock_command_adds_a_new_file_and_keeps_the_rest(released: Path, capsys: pytest.CaptureFixture) -> None:
    """`python -m fwcore.migrations lock DIR` lists a new migration; released and earlier lines stay."""
    before = parse_lock((released / LOCK_FILE).read_text(encoding="utf-8"))
    (released / "9999_more.sql").write_text("CREATE TABLE more (id int);\n", encoding="utf-8")
    assert main(["lock", str(released)]) == 0
    assert "locked 9999_more.sql" in capsys.readouterr().out
    after = parse_lock((released / LOCK_FILE).read_text(encoding="utf-8"))
    assert after.released == {**before.released, "9999_more.sql": sha256("CREATE TABLE more (id int);\n")}
    assert after.earlier == before.earlier
    assert _check(released) == []
    assert main(["lock", str(released)]) == 0  # nothing new: unchanged
    assert parse_lock((released / LOCK_FILE).read_text(encoding="utf-8")) == after


def test_the_lock_command_refuses_to_record_an_edit(released: Path, capsys: pytest.CaptureFixture) -> None:
    """The lock records releases: after an edit of a listed file it refuses and leaves the lock alone."""
    lock_text = (released / LOCK_FILE).read_text(encoding="utf-8")
    (released / "0001_core.sql").write_text("-- edited\n", encoding="utf-8")
    assert main(["lock", str(released)]) == 1
    assert "0001_core.sql changed since it was released" in capsys.readouterr().err
    assert (released / LOCK_FILE).read_text(encoding="utf-8") == lock_text
    with pytest.raises(MigrationError, match="write a new migration instead"):
        write_lock(released)


def test_check_command_is_what_ci_runs() -> None:
    """`python -m fwcore.migrations check ingest/migrations` exits 0 on the repository."""
    res = subprocess.run(
        [sys.executable, "-m", "fwcore.migrations", "check", "ingest/migrations"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "matches checksums.lock" in res.stdout


def test_a_repair_that_does_not_sort_right_after_its_file_is_refused(released: Path) -> None:
    """An earlier version whose repair would run after a later migration is a lock problem."""
    lock = parse_lock((released / LOCK_FILE).read_text(encoding="utf-8"))
    wrong = Earlier("0004_ingest_storage.sql", "0" * 64, "v0@0000000", "0005.1_repair_rules.sql")
    (released / LOCK_FILE).write_text(
        render_lock(Lock(lock.released, (*lock.earlier, wrong)), "ingest/migrations"), encoding="utf-8"
    )
    [problem] = _check(released)
    assert "must sort right after 0004_ingest_storage.sql" in problem and "0005_rules.sql" in problem


@pytest.mark.parametrize(
    "line",
    ["0001_core.sql", "0001_core.sql not-a-checksum", f"0001_core.sql {'a' * 64} earlier=v1", f"x {'a' * 64} foo=1"],
)
def test_a_malformed_lock_line_is_an_error(line: str) -> None:
    """A lock line is FILE SHA256, optionally with both earlier= and repair=."""
    with pytest.raises(MigrationError, match="line 1"):
        parse_lock(line)


def test_versions_sort_as_numbers_with_repairs_between() -> None:
    """0004 < 0004.1 < 0004.2 < 0005 < 0010, variants and repairs parsed from the name."""
    names = ["0010_x.sql", "0005_rules.sql", "0004.2_b.sql", "0004_ingest.sql", "0004.1_a.sql"]
    assert sorted(names, key=lambda n: version_key(parse_name(n)[0])) == [
        "0004_ingest.sql",
        "0004.1_a.sql",
        "0004.2_b.sql",
        "0005_rules.sql",
        "0010_x.sql",
    ]
    assert parse_name("0002_telemetry.plain.sql") == ("0002", "plain")
    assert parse_name("0004.1_repair_ingest_storage.sql") == ("0004.1", None)
    for bad in ("core.sql", "0001.sql", "00a1_core.sql", "0001_core.txt"):
        with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
            parse_name(bad)
