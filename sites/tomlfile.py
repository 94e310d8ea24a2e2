"""Files a person edits (the pipeline, SITE.toml): TOML validated with pydantic, and each
problem said as ``FILE:LINE: field: what``, so it can be fixed without reading a traceback."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
QUIET = ("missing", "model_type", "extra_forbidden")  # the value given says nothing more


class FileProblems(ValueError):
    """Every problem found in one file, each naming its line and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map dotted key paths (with [[array]] indices) to the line that sets them."""
    lines: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    counts: dict[tuple[Any, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if match := re.match(r"^\[\[\s*([^\]]+?)\s*\]\]$", line):
            key = tuple(match.group(1).split("."))
            counts[key] = counts.get(key, -1) + 1
            table = (*key, counts[key])
            lines.setdefault(table, number)
        elif match := re.match(r"^\[\s*([^\]]+?)\s*\]$", line):
            table = tuple(match.group(1).split("."))
            lines.setdefault(table, number)
        elif match := re.match(r"^([A-Za-z0-9_.\-\"']+)\s*=", line):
            key = tuple(part.strip().strip("\"'") for part in match.group(1).split("."))
            lines.setdefault((*table, *key), number)
    return lines


def locate(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """The line of ``loc``, or of the nearest table that holds it."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def problem(path: Path, lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...], message: str) -> str:
    line = locate(lines, loc)
    field = ".".join(str(p) for p in loc) or "(top level)"
    return f"{path.name}:{line}: {field}: {message}" if line else f"{path.name}: {field}: {message}"


def validate(model: type[Model], text: str, path: Path) -> Model:
    """``text`` as ``model``; FileProblems with every problem, located, when it is not one."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FileProblems([f"{path.name}: not valid TOML: {err}"]) from err
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = key_lines(text)
        problems = []
        for e in err.errors():
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            if not loc and (named := re.match(r"^Value error, ([a-z_]+(?:\.[a-z_]+)+) =", e["msg"])):
                loc = tuple(named.group(1).split("."))  # a cross-field check that names its field
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                message = "unknown field (a typo?)"
            elif e["type"] == "missing":
                message = "required field is missing"
            scalar = isinstance(e["input"], str | int | float | bool)
            given = f" (got {e['input']!r})" if scalar and e["type"] not in QUIET else ""
            problems.append(problem(path, lines, loc, message + (given if len(given) < 80 else "")))
        raise FileProblems(problems) from err
