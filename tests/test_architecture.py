"""Architecture: the application (`fieldwatch/`) holds no SQL; the domains own their tables and queries."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: SQL still in the application: lines per file, until the change that owns it moves it. The count
#: may only go down, and an entry is removed once its file is clean. Empty: keep it so.
PENDING: dict[str, int] = {}

#: SQL in a string literal (keywords in capitals, as this code base writes SQL; prose is not matched).
_SQL = re.compile(r"\bSELECT\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b|\bpg_notify\b|\bCOPY\s*\(")
#: Methods that send SQL to the database (called with a statement; ``dict.copy()`` has no argument).
_RUNS_SQL = {"execute", "executemany", "copy"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (prose, not statements)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def sql_in(source: str, name: str = "<source>") -> list[str]:
    """``"name:line: why"`` for each SQL statement or statement-running call in ``source``."""
    tree = ast.parse(source, name)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            hit = _SQL.search(node.value)
            if hit:
                found.append(f"{name}:{node.lineno}: SQL in a string ({hit[0]!r})")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _RUNS_SQL
            and (node.args or node.keywords)
        ):
            found.append(f"{name}:{node.lineno}: .{node.func.attr}(...) runs SQL")
    return found


def test_the_scanner_finds_statements_and_calls_but_not_prose_or_http_verbs() -> None:
    """Strings holding SQL and calls that run it are found; docstrings, HTTP verbs and dict.copy() are not."""
    source = '''
"""Module prose: we SELECT what to show."""
def f(conn, d):
    """Docstring: INSERT INTO is fine here."""
    conn.execute(query)
    q = "UPDATE alarms SET state = 'cleared'"
    n = f"SELECT count(*) FROM {table}"
    methods = ["GET", "DELETE"]
    return d.copy(), "pg_notify"
'''
    found = sql_in(source)
    assert [line.split(": ", 1)[0] for line in found] == ["<source>:5", "<source>:6", "<source>:7", "<source>:9"]


def test_the_application_holds_no_sql() -> None:
    """No module under fieldwatch/ writes or runs SQL: it calls the domains' functions instead."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "fieldwatch").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        hits = sql_in(path.read_text(), rel)
        if hits:
            found[rel] = hits
    lines = {rel: len({hit.split(":")[1] for hit in hits}) for rel, hits in found.items()}
    unexpected = [hit for rel, hits in found.items() if lines[rel] > PENDING.get(rel, 0) for hit in hits]
    assert not unexpected, (
        "SQL belongs to the domain that owns the table (ingest, rules, ticketing): add a function there "
        "and call it.\n" + "\n".join(unexpected)
    )
    stale = {rel: n for rel, n in PENDING.items() if lines.get(rel, 0) < n}
    assert not stale, f"these files hold less SQL than PENDING allows; lower or remove their entries: {stale}"
