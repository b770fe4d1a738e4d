"""Files people write (rules files, fleet files): YAML read with the line of every value, and validation
errors said in the project's words, with the file, the line and the field.

A pydantic error reads like ``List should have at least 2 items after validation``; the person who
wrote the file needs ``rules.yaml line 12, rules[3].tags: give at least 2 tags``. :func:`load_yaml` keeps
the line of every key and list item (PyYAML's node marks); :func:`explain` turns one pydantic error into
that sentence; :func:`problems` does it for a whole :class:`pydantic.ValidationError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

Path = tuple[str | int, ...]


class FileProblems(ValueError):
    """The file cannot be used; ``problems`` lists each one with file, line and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """The data of a YAML document, and the 1-based line of each key and list item by path.

    Bad YAML is :class:`FileProblems` with the line and column the parser stopped at."""
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        opened = getattr(exc, "context_mark", None)
        if opened is not None and (mark is None or opened.line != mark.line):
            what += f", in what starts on line {opened.line + 1}"
        raise FileProblems([f"{source}{where}: not valid YAML ({what}); check the indentation and quotes"]) from None
    lines: dict[Path, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def _walk(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = (*path, key.value)
            lines[here] = key.start_mark.line + 1
            _walk(value, here, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines)


def render(path: Sequence[str | int], root: str = "") -> str:
    """``("rules", 3, "tags")`` → ``rules[3].tags``; a path from a top-level list starts with ``root``."""
    out = root if path and isinstance(path[0], int) else ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def locate(lines: Mapping[Path, int], loc: Sequence[str | int], base: Path = ()) -> tuple[int | None, Path]:
    """The line of the deepest part of ``base + loc`` the file has, and that path (parts pydantic adds that the
    file does not have, such as a union's tag, are skipped)."""
    path: Path = tuple(base)
    line = lines.get(path)
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
            line = lines[path]
        elif isinstance(part, str) and part.isdigit() and (*path, int(part)) in lines:
            path = (*path, int(part))
            line = lines[path]
    return line, path


def _ctx(error: Mapping[str, Any], key: str) -> Any:
    return (error.get("ctx") or {}).get(key)


def words(error: Mapping[str, Any], field: str | None = None) -> str:
    """What to fix, for one pydantic error, in the project's words (``field``: how to call the value)."""
    kind = error.get("type", "")
    field = field or next((str(p) for p in reversed(error.get("loc", ())) if isinstance(p, str)), "value")
    got = error.get("input")
    if kind == "missing":
        return f"{field} is missing; add it"
    if kind == "extra_forbidden":
        return f"{field!r} is not a known field; check its spelling or remove it"
    if kind in ("too_short", "too_long"):
        n = _ctx(error, "min_length" if kind == "too_short" else "max_length")
        return f"give at {'least' if kind == 'too_short' else 'most'} {n} {field}"
    if kind == "string_too_short":
        return f"{field} must not be empty"
    if kind == "string_too_long":
        return f"{field} is too long: at most {_ctx(error, 'max_length')} characters"
    if kind == "string_pattern_mismatch":
        letters = "letters" if "A-Z" in str(_ctx(error, "pattern")) else "lower-case letters"
        return (
            f"{got!r} is not a valid {field}: use {letters}, digits, '-', '_' or '.', starting with a letter or digit"
        )
    bounds = {
        "greater_than_equal": ("ge", "at least"),
        "greater_than": ("gt", "more than"),
        "less_than_equal": ("le", "at most"),
        "less_than": ("lt", "less than"),
    }
    if kind in bounds:
        key, said = bounds[kind]
        return f"{field} must be {said} {_ctx(error, key)} (it is {got!r})"
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_from_float", "decimal_parsing"):
        return f"{field} must be a {'whole ' if kind.startswith('int') else ''}number (it is {got!r})"
    if kind in ("bool_parsing", "bool_type"):
        return f"{field} must be true or false (it is {got!r})"
    if kind in ("string_type",):
        return f"{field} must be text (it is {got!r})"
    if kind in ("list_type", "tuple_type"):
        return f"{field} must be a list (`- item` lines or [a, b])"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{field} must be a mapping of fields (`name: value` lines)"
    if kind == "literal_error" or kind == "enum":
        return f"{field} must be one of {_ctx(error, 'expected')} (it is {got!r})"
    if kind == "union_tag_invalid":
        said = f"{str(_ctx(error, 'discriminator')).strip(chr(39))} {_ctx(error, 'tag')!r}"
        return f"{said} is not known; use one of {_ctx(error, 'expected_tags')}"
    if kind == "union_tag_not_found":
        return f"say which kind it is with {str(_ctx(error, 'discriminator')).strip(chr(39))}"
    msg = str(error.get("msg", "is not valid"))
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def problems(
    exc: ValidationError, source: str, lines: Mapping[Path, int], base: Path = (), root: str = ""
) -> list[str]:
    """One ``"SOURCE line N, path.to.field: what to fix"`` per error of ``exc`` (the model was validated from the
    data at ``base``; ``root`` names a top-level list). A value several ways wrong (a union) is reported once."""
    found: dict[str, str] = {}
    for e in exc.errors():
        line, path = locate(lines, e["loc"], base)
        if e["type"] == "missing":  # not in the file: name it under the deepest part that is
            path = (*path, e["loc"][-1])
        field = next((str(p) for p in reversed(path) if isinstance(p, str)), None)
        at = f" line {line}" if line is not None else ""
        where = f"{source}{at}, {render(path, root)}"
        found.setdefault(where, f"{where}: {words(e, field)}")
    return list(found.values())
