"""Packaging: the edge install stays small and still runs the gateway."""

from __future__ import annotations

import subprocess
import sys
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_ON_EDGE = {"psycopg", "psycopg-binary", "psycopg-pool", "fastapi", "pandas", "scikit-learn", "scipy"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_edge_extra_installs_no_server_stack(tmp_path: Path) -> None:
    """`pip install .[edge]` brings no database driver, web server or data-science stack, and the gateway imports."""
    env_dir = tmp_path / "edge"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[edge]"],
        check=True,
        capture_output=True,
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
    )
    subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True)
    help_out = subprocess.run(
        [str(env_dir / "bin" / "fieldwatch"), "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "gateway" in help_out
    # A server-only command explains which extra is missing instead of crashing.
    res = subprocess.run([str(env_dir / "bin" / "fieldwatch"), "db", "migrate"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "fieldwatch[server]" in res.stderr.replace("\n", "")


@pytest.mark.timeout(900)  # one process per command (~85 of them): each must import on its own
def test_cli_help_everywhere() -> None:
    """Every command and sub-command answers --help."""
    from typer.main import get_command

    from fieldwatch.cli import app

    root = get_command(app)

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    paths = list(walk(root, []))
    assert ["db", "migrate"] in paths and ["demo"] in paths and ["tokens", "create"] in paths

    def help_of(path: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        cmd = [sys.executable, "-m", "fieldwatch.cli", *path, "--help"]
        return path, subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for path, res in pool.map(help_of, paths):
            assert res.returncode == 0, (path, res.stderr)
            assert "Usage" in res.stdout
