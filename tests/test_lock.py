"""The lock: every dependency pyproject.toml names is pinned in requirements/constraints.txt."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "constraints.txt"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")
REFRESH = (
    "refresh the lock: pip-compile --extra dev --strip-extras --unsafe-package fieldwatch --no-emit-index-url "
    "--no-emit-find-links -o requirements/constraints.txt pyproject.toml (CONTRIBUTING.md)"
)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    names = set()
    for spec in specs:
        found = _NAME.match(spec)
        assert found, f"cannot read the dependency {spec!r} in pyproject.toml"
        names.add(_normal(found[1]))
    return names - {"fieldwatch"}  # an extra naming another extra of the project itself


def _pinned() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        found = _PIN.match(line)
        if found:
            pins[_normal(found[1])] = found[2]
    return pins


def test_every_declared_dependency_is_pinned_exactly() -> None:
    """Each package pyproject.toml depends on (base and every extra) has an exact pin in the lock."""
    missing = sorted(_declared() - set(_pinned()))
    assert not missing, f"not in requirements/constraints.txt: {', '.join(missing)}; {REFRESH}"


def test_the_lock_pins_only_exact_versions() -> None:
    """Every requirement line of the lock is `name==version`, so CI installs the same set every day."""
    loose = [
        line
        for line in LOCK.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not _PIN.match(line)
    ]
    assert not loose, f"lines that are not exact pins: {loose[:5]}; {REFRESH}"
