"""Label and field selectors with the API server's syntax and error messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulator.errors import bad_request

Obj = dict[str, Any]

_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|>|<|[^\s=!(),<>]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    values: tuple[str, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "==", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in (">", "<"):
            try:
                number, bound = int(value or ""), int(self.values[0])
            except ValueError:
                return False
            return number > bound if self.op == ">" else number < bound
        return False


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            break
        tokens.append(match.group(1))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return tokens


def parse_labels(text: str) -> list[Requirement]:
    """Parse `a=b,c in (d,e),!f`; a malformed selector is 400 'unable to parse requirement'."""
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    i = 0

    def fail(found: str, expected: str) -> Exception:
        return bad_request(f"unable to parse requirement: found '{found}', expected: {expected}")

    def at(j: int) -> str:
        return tokens[j] if j < len(tokens) else ""

    while i < len(tokens):
        if tokens[i] == "!":
            key = at(i + 1)
            if not key or key in "=!(),<>":
                raise fail(key, "identifier")
            requirements.append(Requirement(key, "!", ()))
            i += 2
        else:
            key = tokens[i]
            op = at(i + 1)
            if op in ("", ","):
                requirements.append(Requirement(key, "exists", ()))
                i += 1
            elif op in ("=", "==", "!=", ">", "<"):
                value = at(i + 2)
                if value in ("=", "==", "!=", "(", ")", "!", ">", "<"):
                    raise fail(value, "identifier")
                if value == ",":
                    value = ""
                    i += 2
                else:
                    i += 3 if i + 2 < len(tokens) else 2
                requirements.append(Requirement(key, op, (value,)))
            elif op in ("in", "notin"):
                if at(i + 2) != "(":
                    raise fail(at(i + 2), "'('")
                j = i + 3
                values: list[str] = []
                while True:
                    token = at(j)
                    if token == ")":
                        break
                    if token in ("", "(", "=", "!="):
                        raise fail(token, "',' or ')'")
                    if token == ",":
                        j += 1
                        continue
                    values.append(token)
                    j += 1
                    if at(j) not in (",", ")"):
                        raise fail(at(j), "',' or ')'")
                requirements.append(Requirement(key, op, tuple(values)))
                i = j + 1
            else:
                raise fail(op, "'=', '!=', '==', 'in', notin'")
        if i < len(tokens):
            if tokens[i] != ",":
                raise fail(tokens[i], "','")
            i += 1
    return requirements


def label_matcher(text: str | None) -> Callable[[Obj], bool] | None:
    if not text:
        return None
    requirements = parse_labels(text)

    def match(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(r.matches(labels) for r in requirements)

    return match


def field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_matcher(text: str | None, supported: tuple[str, ...]) -> Callable[[Obj], bool] | None:
    """`a=b,c!=d` over the indexed fields; any other field is 400 'field label not supported'."""
    if not text:
        return None
    terms: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if match is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        path, op, value = match.groups()
        if path not in ("metadata.name", "metadata.namespace") and path not in supported:
            raise bad_request(f"field label not supported: {path}")
        terms.append((path, op != "!=", value))

    def matches(obj: Obj) -> bool:
        return all((field_value(obj, p) == v) == positive for p, positive, v in terms)

    return matches


def combine(*matchers: Callable[[Obj], bool] | None) -> Callable[[Obj], bool]:
    active = [m for m in matchers if m is not None]
    if not active:
        return lambda obj: True
    if len(active) == 1:
        return active[0]
    return lambda obj: all(m(obj) for m in active)
