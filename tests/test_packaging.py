"""Packaging: the edge install stays small and still runs the gateway."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_ON_EDGE = {"psycopg", "psycopg-binary", "psycopg-pool", "fastapi", "pandas", "scikit-learn", "scipy"}


#: Top-level commands that run on an edge install; every other one needs an extra and must say so.
EDGE_COMMANDS = {"gateway", "simulate"}
#: How to invoke each server-only command on an edge box (enough arguments to get past usage checks).
SERVER_ONLY_INVOCATIONS = {
    "db": [["db", "migrate"], ["db", "create"], ["db", "status"]],
    "tokens": [["tokens", "list"], ["tokens", "revoke", "1"], ["tokens", "create", "--role", "viewer"]],
    "ingest": [["ingest"]],
    "rules": [["rules"], ["rules", "apply", "rules.yaml", "--yes"]],
    "history": [["history"]],
    "devices": [["devices"]],
    "dead-letters": [["dead-letters"]],
    "report": [["report"]],
    "serve": [["serve"]],
    "demo": [["demo"]],
    "doctor": [["doctor"]],
    "fleet": [["fleet"], ["fleet", "import", "fleet.yaml"], ["fleet", "sites", "list"]],
    "skills": [["skills"], ["skills", "list"], ["skills", "add", "pump_mech"]],
    "technicians": [["technicians"], ["technicians", "list"]],
    "users": [["users"], ["users", "list"], ["users", "create", "me", "--role", "viewer"]],
}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel `python -m build` makes of this checkout (the wheel built from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.mark.slow
def test_sdist_and_wheel_build_and_pass_twine_check(dist: Path) -> None:
    """The sdist and wheel build, pass `twine check --strict`, and the wheel carries the migrations and their lock."""
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    res = subprocess.run(
        [str(Path(sys.executable).with_name("twine")), "check", "--strict", *map(str, wheels + sdists)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "ingest/migrations/checksums.lock" in names and "ingest/migrations/0001_core.sql" in names
    assert any(n.endswith("entry_points.txt") for n in names)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_edge_install_from_the_wheel(dist: Path, tmp_path: Path) -> None:
    """The wheel with only the edge extra, in a fresh venv, brings no server stack, runs `fieldwatch gateway`,
    and every server-only command says in one line which extra it needs."""
    env_dir = tmp_path / "edge"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    constraints = str(ROOT / "requirements" / "constraints.txt")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", constraints, f"{wheel}[edge]"],
        check=True,
        capture_output=True,
        cwd=tmp_path,  # not the checkout: nothing may come from the source tree
    )
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True, text=True
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines() if line}
    assert not (installed & FORBIDDEN_ON_EDGE), f"edge install pulled in {installed & FORBIDDEN_ON_EDGE}"
    assert {"pymodbus", "paho-mqtt", "asyncua"} <= installed
    probe = (
        "import gateway, simulators, fwcore.contract, fwcore.settings, fieldwatch.cli\n"
        "import sys\n"
        "bad = [m for m in ('psycopg', 'fastapi', 'pandas', 'sklearn', 'scipy') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "from typer.main import get_command\n"
        "print(' '.join(get_command(fieldwatch.cli.app).commands))\n"
    )
    commands = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert set(commands.stdout.split()) == EDGE_COMMANDS | set(SERVER_ONLY_INVOCATIONS), "classify new commands here"
    fieldwatch = str(env_dir / "bin" / "fieldwatch")
    env = {**os.environ, "COLUMNS": "80"}
    for name in sorted(EDGE_COMMANDS):
        res = subprocess.run([fieldwatch, name, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert res.returncode == 0 and "Usage" in res.stdout, res.stderr
    for invocations in SERVER_ONLY_INVOCATIONS.values():
        for args in invocations:
            res = subprocess.run([fieldwatch, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
            lines = [line for line in res.stderr.splitlines() if line.strip()]
            assert res.returncode == 2, (args, res.stderr)
            assert len(lines) == 1 and "Traceback" not in res.stderr, (args, res.stderr)
            extra = "demo" if args == ["demo"] else "server"
            assert f"pip install 'fieldwatch[{extra}]'" in lines[0], (args, lines)


def test_cli_help_everywhere() -> None:
    """Every command and sub-command answers --help: each top-level command in a process of its own
    (the command as a user runs it), and every sub-command in this process — ``fieldwatch.cli`` imports
    every command module when it loads, so a process per sub-command (85 of them, ~2 s each) would
    import nothing more, only again."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from fieldwatch.cli import app

    root = get_command(app)

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    paths = list(walk(root, []))
    assert ["db", "migrate"] in paths and ["demo"] in paths and ["tokens", "create"] in paths
    assert len(paths) > 50

    def help_of(path: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        cmd = [sys.executable, "-m", "fieldwatch.cli", *path, "--help"]
        return path, subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for path, res in pool.map(help_of, [p for p in paths if len(p) <= 1]):
            assert res.returncode == 0, (path, res.stderr)
            assert "Usage" in res.stdout
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], prog_name="fieldwatch")
        assert result.exit_code == 0, (path, result.output, result.exception)
        assert "Usage" in result.output, path
