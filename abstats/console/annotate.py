"""Place the API's field problems (``policy.ramp.steps``) at their lines of a pretty-printed JSON
document, for the policy editor. Pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from abstats.errors import FieldProblem


@dataclass
class Line:
    text: str
    path: str  # the JSON path of the value that starts on this line ("" for the root)
    problems: list[FieldProblem] = field(default_factory=list)


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _lines(value: Any, path: str, indent: int, prefix: str, suffix: str) -> list[Line]:
    pad = "  " * indent
    if isinstance(value, dict) and value:
        out = [Line(f"{pad}{prefix}{{", path)]
        items = list(value.items())
        for i, (k, v) in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            out += _lines(v, _key(path, str(k)), indent + 1, f"{json.dumps(k)}: ", comma)
        return [*out, Line(f"{pad}}}{suffix}", path)]
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        out = [Line(f"{pad}{prefix}[", path)]
        for i, v in enumerate(value):
            comma = "," if i < len(value) - 1 else ""
            out += _lines(v, f"{path}[{i}]", indent + 1, "", comma)
        return [*out, Line(f"{pad}]{suffix}", path)]
    return [Line(f"{pad}{prefix}{json.dumps(value)}{suffix}", path)]


def _parents(path: str) -> list[str]:
    """``ramp.steps[1]`` -> ``ramp.steps[1]``, ``ramp.steps``, ``ramp``, ``""``."""
    out = [path]
    while path:
        path = re.sub(r"(\[\d+\]|\.?[^.\[]+)$", "", path)
        out.append(path)
    return out


def annotate(document: Any, problems: list[FieldProblem], root: str = "policy") -> list[Line]:
    """``document`` as indented JSON lines, each problem attached to the line of its field (or of
    the nearest enclosing field that is present, e.g. the object missing a required key)."""
    lines = _lines(document, "", 0, "", "")
    first_line: dict[str, int] = {}
    for i, line in enumerate(lines):
        first_line.setdefault(line.path, i)
    for problem in problems:
        path = problem.field
        if path == root:
            path = ""
        elif path.startswith(root + ".") or path.startswith(root + "["):
            path = path[len(root) :].lstrip(".")
        index = next((first_line[p] for p in _parents(path) if p in first_line), 0)
        lines[index].problems.append(problem)
    return lines
