"""Turning model validation failures into one plain line per problem.

Users see these lines from the CLI and the webhook, so each names the field by its
JSON path (camelCase, as written in the manifest) and says what is wrong with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

PathPart = str | int

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FieldProblem(ValueError):
    """A validator's complaint about a field below the one it was attached to.

    Cross-field checks run on a whole object, but the user needs the exact field:
    `path` is relative to the object the validator ran on and is appended to
    pydantic's location by `format_validation_error`.
    """

    def __init__(self, path: Sequence[PathPart], problem: str) -> None:
        self.path = tuple(path)
        self.problem = problem
        super().__init__(f"{format_path(self.path)}: {problem}" if self.path else problem)


def format_path(path: Sequence[PathPart]) -> str:
    """`spec.podSets[0].template`; map keys that are not identifiers go in brackets."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part}]"
    return out


def show(value: Any) -> str:
    """A short rendering of a user's value for an error message."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: Any) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    got = show(error.get("input"))
    if kind in ("value_error", "assertion_error"):
        exc = ctx.get("error")
        if isinstance(exc, FieldProblem):
            return exc.problem
        return str(exc) if exc is not None else str(error["msg"])
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        bound = ctx[key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op} {bound} (got {got})"
    simple = {
        "missing": "is required",
        "extra_forbidden": "unknown field (field names are camelCase; check the spelling)",
        "int_type": f"must be an integer (got {got})",
        "int_from_float": f"must be an integer (got {got})",
        "float_type": f"must be a number (got {got})",
        "finite_number": f"must be a finite number (got {got})",
        "string_type": f"must be a string (got {got})",
        "bool_type": f"must be true or false (got {got})",
        "list_type": f"must be a list (got {got})",
        "dict_type": f"must be a map (got {got})",
        "model_type": f"must be an object (got {got})",
        "model_attributes_type": f"must be an object (got {got})",
    }
    if kind in simple:
        return simple[kind]
    if kind == "literal_error":
        return f"must be {ctx['expected']} (got {got})"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s) (got {ctx['actual_length']})"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} item(s) (got {ctx['actual_length']})"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must be at least {ctx['min_length']} characters long"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters long"
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:] + f" (got {got})"


def _location(error: Any) -> tuple[PathPart, ...]:
    loc: tuple[PathPart, ...] = tuple(p for p in error["loc"] if p != "[key]")
    exc = (error.get("ctx") or {}).get("error")
    if isinstance(exc, FieldProblem):
        loc += exc.path
    return loc


def problems(err: ValidationError) -> list[tuple[tuple[PathPart, ...], str]]:
    """(field path, what is wrong) for each problem, in pydantic's order."""
    return [(_location(error), _describe(error)) for error in err.errors()]


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `<source>: spec.podSets[0].replicas: must be >= 1 (got -1)`."""
    lines = []
    for location, problem in problems(err):
        path = format_path(location)
        where = f"{source}: {path}" if path else source
        lines.append(f"{where}: {problem}")
    return "\n".join(lines)
