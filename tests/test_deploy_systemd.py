"""The systemd units under deploy/systemd/ are valid for systemd and run real commands: every
`fieldwatch` command line parses, and the backup unit's pg_dump makes a restorable dump."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service")) + sorted((ROOT / "deploy" / "systemd").glob("*.timer"))
INSTALLED = "/opt/fieldwatch/bin/fieldwatch"
FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def exec_lines(path: Path) -> list[str]:
    """Every ExecStart/ExecStartPre/… command of a unit, without systemd's prefixes (-, +, @, !)."""
    return [
        value.lstrip("-+@!:")
        for line in path.read_text().splitlines()
        if (m := re.match(r"^(Exec\w+)=(.*)$", line)) and (value := m.group(2))
    ]


def test_the_units_exist() -> None:
    """The server, its backup and timer, and the gateway template are shipped."""
    names = {u.name for u in UNITS}
    assert {
        "fieldwatch.service",
        "fieldwatch-backup.service",
        "fieldwatch-backup.timer",
        "fieldwatch-gateway@.service",
    } <= names


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds no unknown key, bad value or missing executable in any unit."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (.ci/run does)"
    for path in UNITS:
        name = path.name.replace("@.", "@test.")
        (tmp_path / name).write_text(path.read_text().replace(INSTALLED, FIELDWATCH))
    res = subprocess.run(
        [analyze, "verify", *(str(p) for p in sorted(tmp_path.iterdir()))], capture_output=True, text=True
    )
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


@pytest.mark.parametrize("path", [u for u in UNITS if u.suffix == ".service"], ids=lambda p: p.name)
def test_every_fieldwatch_command_in_a_unit_parses(path: Path) -> None:
    """Each `fieldwatch …` command line of a unit is one the CLI accepts (its --help exits 0)."""
    commands = [shlex.split(line) for line in exec_lines(path)]
    assert commands, f"{path.name} runs nothing"
    for argv in commands:
        if argv[0] != INSTALLED:
            assert Path(argv[0]).is_absolute() and Path(argv[0]).exists(), argv[0]
            continue
        args = [a.replace("%i", "gw-01") for a in argv[1:] if not a.startswith("/etc/")]
        res = subprocess.run([FIELDWATCH, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, (path.name, argv, res.stderr)


def test_units_run_as_the_fieldwatch_user_with_a_read_only_system() -> None:
    """Every service runs as `fieldwatch`, not root, with ProtectSystem=strict and NoNewPrivileges."""
    for path in UNITS:
        if path.suffix != ".service":
            continue
        service = unit(path)["Service"]
        assert service["User"] == "fieldwatch" and service["ProtectSystem"] == "strict", path.name
        assert service["NoNewPrivileges"] == "true", path.name


def test_the_backup_unit_makes_a_restorable_dump(db_url: str, tmp_path: Path) -> None:
    """The backup unit's command, run as systemd would run it, writes a pg_dump that pg_restore can list."""
    (command,) = exec_lines(ROOT / "deploy" / "systemd" / "fieldwatch-backup.service")
    argv = shlex.split(command)
    assert argv[:2] == ["/bin/sh", "-c"]
    # systemd turns $$ into $ and %% into %; the dumps go to our directory instead of /var/lib.
    script = argv[2].replace("$$", "$").replace("%%", "%").replace("/var/lib/fieldwatch/backups", str(tmp_path))
    res = subprocess.run(
        ["/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FIELDWATCH_DATABASE_URL": db_url},
    )
    assert res.returncode == 0, res.stderr
    (dump,) = tmp_path.glob("fieldwatch-*.dump")
    assert dump.stat().st_mode & 0o077 == 0
    listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True).stdout
    assert "schema_migrations" in listing
