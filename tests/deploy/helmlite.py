"""A small renderer for the Helm chart in deploy/helm/phalanx, so the tests can check
what `helm template` would produce on a machine without the helm binary.

It implements the part of Go's text/template and of Helm that the chart uses, and
refuses everything else with an error naming the template and the construct, so the
chart cannot grow a feature that this renderer would silently get wrong:

- actions `{{ }}` with `{{-` / `-}}` whitespace trimming, `{{/* comments */}}`;
- `if` / `else if` / `else`, `range` (lists in order, maps by sorted key, with
  `$k, $v :=`), `with`, `define`, and `end`;
- pipelines with `|` (the value goes in as the last argument), parentheses, fields
  (`.Values.a.b`, `$.Release.Namespace`, `$v.x`), string, raw-string, number and
  boolean literals;
- the functions in FUNCTIONS (Go's and Helm's semantics: sprig's `default` and `empty`,
  `toYaml` without its last newline, `quote` of nil is empty), `include`, `.Files.Get`;
- values: the chart's values.yaml with user values coalesced in (maps merged key by key,
  everything else replaced), `.Release.Name/Namespace/Service`, `.Chart.*`.

Missing fields render as empty, as Helm does without --strict. Templates are rendered in
file order; files starting with `_` only define, NOTES.txt is not a manifest.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TemplateError(Exception):
    """The chart uses something this renderer does not implement, or uses it wrongly."""


# ---- lexing ---------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def _segments(text: str, where: str) -> list[tuple[str, str]]:
    """("text", ...) and ("action", ...) pieces, whitespace trimming applied."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(text):
        chunk = text[pos : m.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if m.group(1):
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            out.append(("action", body))
        trim_next = bool(m.group(3))
        pos = m.end()
    rest = text[pos:]
    out.append(("text", rest.lstrip() if trim_next else rest))
    if "{{" in rest:
        raise TemplateError(f"{where}: unclosed action")
    return out


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<declare>:=)
    | (?P<punct>[|(),])
    | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def _tokens(action: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    action = action.strip()
    while pos < len(action):
        m = _TOKEN.match(action, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"{where}: cannot read {action[pos:]!r} in {{{{ {action} }}}}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(action) and action[pos].isspace():
            pos += 1
    return out


# ---- parsing --------------------------------------------------------------------------


@dataclass
class Pipeline:
    declared: list[str]
    commands: list[list[Any]]
    """Each command: a list of operands; operand = (kind, value) or a nested Pipeline."""


@dataclass
class Node:
    kind: str  # text, print, if, range, with
    text: str = ""
    pipeline: Pipeline | None = None
    body: list[Node] = field(default_factory=list)
    orelse: list[Node] = field(default_factory=list)


def _parse_pipeline(tokens: list[tuple[str, str]], where: str) -> Pipeline:
    declared: list[str] = []
    if any(kind == "declare" for kind, _ in tokens):
        i = [kind for kind, _ in tokens].index("declare")
        names = [v for k, v in tokens[:i] if k != "punct"]
        if not all(n.startswith("$") for n in names) or not 1 <= len(names) <= 2:
            raise TemplateError(f"{where}: bad variable declaration")
        declared, tokens = names, tokens[i + 1 :]
    pos = 0

    def command() -> list[Any]:
        nonlocal pos
        operands: list[Any] = []
        while pos < len(tokens) and tokens[pos] not in (("punct", "|"), ("punct", ")")):
            kind, value = tokens[pos]
            if (kind, value) == ("punct", "("):
                pos += 1
                inner: list[list[Any]] = [command()]
                while pos < len(tokens) and tokens[pos] == ("punct", "|"):
                    pos += 1
                    inner.append(command())
                if pos >= len(tokens) or tokens[pos] != ("punct", ")"):
                    raise TemplateError(f"{where}: unbalanced parenthesis")
                pos += 1
                operands.append(Pipeline([], inner))
                continue
            if kind == "punct":
                raise TemplateError(f"{where}: unexpected {value!r}")
            operands.append((kind, value))
            pos += 1
        if not operands:
            raise TemplateError(f"{where}: empty command")
        return operands

    commands = [command()]
    while pos < len(tokens):
        if tokens[pos] != ("punct", "|"):
            raise TemplateError(f"{where}: unexpected {tokens[pos][1]!r}")
        pos += 1
        commands.append(command())
    return Pipeline(declared, commands)


def _parse(
    segments: list[tuple[str, str]], where: str, defines: dict[str, list[Node]]
) -> list[Node]:
    pos = 0

    def block(stops: tuple[str, ...]) -> tuple[list[Node], str]:
        nonlocal pos
        nodes: list[Node] = []
        while pos < len(segments):
            kind, body = segments[pos]
            pos += 1
            if kind == "text":
                if body:
                    nodes.append(Node("text", text=body))
                continue
            word, _, rest = body.partition(" ")
            if word in ("end", "else") and word in stops:
                return nodes, body
            if word in ("end", "else"):
                raise TemplateError(f"{where}: unexpected {{{{ {body} }}}}")
            if word in ("if", "range", "with"):
                node = Node(word, pipeline=_parse_pipeline(_tokens(rest, where), where))
                node.body, stop = block(("end", "else"))
                current = node
                while stop.startswith("else"):
                    tail = stop.removeprefix("else").strip()
                    if tail.startswith("if "):
                        nested = Node(
                            "if", pipeline=_parse_pipeline(_tokens(tail[3:], where), where)
                        )
                        current.orelse = [nested]
                        nested.body, stop = block(("end", "else"))
                        current = nested
                    elif tail:
                        raise TemplateError(f"{where}: unsupported {{{{ {stop} }}}}")
                    else:
                        current.orelse, stop = block(("end",))
                nodes.append(node)
            elif word == "define":
                name = json.loads(rest.strip())
                defines[name], _ = block(("end",))
            elif word in ("template", "block", "break", "continue"):
                raise TemplateError(f"{where}: {{{{ {word} }}}} is not supported")
            else:
                nodes.append(Node("print", pipeline=_parse_pipeline(_tokens(body, where), where)))
        if stops:
            raise TemplateError(f"{where}: missing {{{{ end }}}}")
        return nodes, ""

    nodes, _ = block(())
    return nodes


# ---- values and functions -------------------------------------------------------------


def truthy(value: Any) -> bool:
    """Go's template truth: false, 0, nil and empty strings, lists and maps are false."""
    return not (value is None or value is False or value == 0 or value in ("", [], {}))


def to_yaml(value: Any) -> str:
    """Helm's toYaml: keys sorted (it goes through JSON), no final newline."""
    text: str = yaml.safe_dump(value, sort_keys=True, default_flow_style=False, width=4096)
    return text.removesuffix("\n...\n").removesuffix("\n")


def _go_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        raise TemplateError(f"printing a {type(value).__name__} needs toYaml or toJson: {value!r}")
    return str(value)


def _indent(spaces: int, text: Any) -> str:
    pad = " " * spaces
    return pad + _go_string(text).replace("\n", "\n" + pad)


def _kind(value: Any) -> str:
    for python, go in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string")):
        if isinstance(value, python):
            return go
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "slice"
    return "invalid"


def _and(*args: Any) -> Any:
    for a in args:
        if not truthy(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if truthy(a):
            return a
    return args[-1]


def _required(message: str, value: Any) -> Any:
    if not truthy(value):
        raise TemplateError(f"required value missing: {message}")
    return value


def _printf(fmt: str, *args: Any) -> str:
    python = re.sub(r"%[vsd]", "%s", fmt)
    return python % tuple(_go_string(a) for a in args)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "default": lambda fallback, *value: value[0] if value and truthy(value[0]) else fallback,
    "empty": lambda value: not truthy(value),
    "quote": lambda *values: " ".join(
        json.dumps(_go_string(v), ensure_ascii=False) for v in values if v is not None
    ),
    "toYaml": to_yaml,
    "toJson": lambda value: json.dumps(value, separators=(",", ":"), sort_keys=True),
    "indent": _indent,
    "nindent": lambda spaces, text: "\n" + _indent(spaces, text),
    "eq": lambda a, *others: any(a == b for b in others),
    "ne": lambda a, b: a != b,
    "not": lambda value: not truthy(value),
    "and": _and,
    "or": _or,
    "required": _required,
    "upper": lambda text: _go_string(text).upper(),
    "kindIs": lambda kind, value: _kind(value) == kind,
    "printf": _printf,
}


# ---- evaluation -----------------------------------------------------------------------


class Files:
    """`.Files.Get` of a chart: a file's text below the chart's root ('' if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def Get(self, name: str) -> str:  # Helm's name for it
        path = self.root / name
        return path.read_text() if path.is_file() else ""


@dataclass
class _Scope:
    dot: Any
    variables: dict[str, Any]


class Chart:
    """A chart directory: `render(values, release_name, namespace)` gives its manifests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = yaml.safe_load((root / "Chart.yaml").read_text())
        self.defaults = yaml.safe_load((root / "values.yaml").read_text()) or {}
        self.defines: dict[str, list[Node]] = {}
        self.templates: dict[str, list[Node]] = {}
        for path in sorted((root / "templates").iterdir()):
            if path.name == "NOTES.txt" or not path.is_file():
                continue
            where = f"templates/{path.name}"
            nodes = _parse(_segments(path.read_text(), where), where, self.defines)
            if not path.name.startswith("_"):
                self.templates[where] = nodes

    def values(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return coalesce(copy.deepcopy(self.defaults), overrides or {})

    def render(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        release: str = "phalanx",
        namespace: str = "phalanx-system",
    ) -> dict[str, str]:
        """Template file -> rendered text, as `helm template` prints them."""
        root = {
            "Values": self.values(overrides),
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {
                "Name": self.meta["name"],
                "Version": self.meta["version"],
                "AppVersion": self.meta.get("appVersion", ""),
            },
            "Files": Files(self.root),
        }
        return {
            where: self._run(nodes, _Scope(root, {"$": root}), where)
            for where, nodes in self.templates.items()
        }

    def manifests(
        self, overrides: Mapping[str, Any] | None = None, **release: str
    ) -> list[dict[str, Any]]:
        """The objects of the rendered chart, plus its crds/ (which Helm installs first)."""
        objects = copy.deepcopy(self._crds())
        for text in self.render(overrides, **release).values():
            objects.extend(d for d in yaml.load_all(text, Loader=_LOADER) if d)
        return objects

    @functools.cache  # noqa: B019 (charts live as long as the test session)
    def _crds(self) -> list[dict[str, Any]]:
        return [
            yaml.load(p.read_text(), Loader=_LOADER)
            for p in sorted((self.root / "crds").glob("*.yaml"))
        ]

    # ---- the interpreter ------------------------------------------------------------

    def _run(self, nodes: list[Node], scope: _Scope, where: str) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
                continue
            assert node.pipeline is not None
            if node.kind == "print":
                value = self._pipeline(node.pipeline, scope, where)
                if not node.pipeline.declared:
                    out.append(_go_string(value))
            elif node.kind == "if":
                chosen = (
                    node.body
                    if truthy(self._pipeline(node.pipeline, scope, where))
                    else node.orelse
                )
                out.append(self._run(chosen, scope, where))
            elif node.kind == "with":
                value = self._pipeline(Pipeline([], node.pipeline.commands), scope, where)
                if truthy(value):
                    out.append(self._run(node.body, _Scope(value, dict(scope.variables)), where))
                else:
                    out.append(self._run(node.orelse, scope, where))
            elif node.kind == "range":
                out.append(self._range(node, scope, where))
        return "".join(out)

    def _range(self, node: Node, scope: _Scope, where: str) -> str:
        assert node.pipeline is not None
        value = self._pipeline(Pipeline([], node.pipeline.commands), scope, where)
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            items = list(enumerate(value))
        elif value is None:
            items = []
        else:
            raise TemplateError(f"{where}: range over {_kind(value)}")
        if not items:
            return self._run(node.orelse, scope, where)
        names = node.pipeline.declared
        out = []
        for k, v in items:
            variables = dict(scope.variables)
            if len(names) == 2:
                variables[names[0]], variables[names[1]] = k, v
            elif len(names) == 1:
                variables[names[0]] = v
            out.append(self._run(node.body, _Scope(v, variables), where))
        return "".join(out)

    def _pipeline(self, pipeline: Pipeline, scope: _Scope, where: str) -> Any:
        value: Any = _NOTHING
        for command in pipeline.commands:
            value = self._command(command, scope, where, value)
        for name in pipeline.declared:
            scope.variables[name] = value
        return value

    def _command(self, command: list[Any], scope: _Scope, where: str, piped: Any) -> Any:
        head = command[0]
        if (
            isinstance(head, tuple)
            and head[0] == "ident"
            and head[1] not in ("true", "false", "nil")
        ):
            name = head[1]
            args = [self._operand(op, scope, where) for op in command[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            if name == "include":
                if len(args) != 2:
                    raise TemplateError(f"{where}: include takes a name and a context")
                defined = self.defines.get(args[0])
                if defined is None:
                    raise TemplateError(f"{where}: no template named {args[0]!r}")
                return self._run(defined, _Scope(args[1], {"$": scope.variables["$"]}), where)
            function = FUNCTIONS.get(name)
            if function is None:
                raise TemplateError(f"{where}: function {name!r} is not supported")
            try:
                return function(*args)
            except TypeError as exc:
                raise TemplateError(f"{where}: {name}: {exc}") from None
        if len(command) > 1 or piped is not _NOTHING:
            method = self._method(command[0], scope, where)
            if method is None:
                raise TemplateError(f"{where}: cannot call {command[0]!r}")
            args = [self._operand(op, scope, where) for op in command[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            return method(*args)
        return self._operand(head, scope, where)

    def _method(self, operand: Any, scope: _Scope, where: str) -> Callable[..., Any] | None:
        if isinstance(operand, tuple) and operand[0] == "field" and operand[1] == ".Files.Get":
            files = scope.variables["$"]["Files"]
            return files.Get  # type: ignore[no-any-return]
        return None

    def _operand(self, operand: Any, scope: _Scope, where: str) -> Any:
        if isinstance(operand, Pipeline):
            return self._pipeline(operand, scope, where)
        kind, text = operand
        if kind == "string":
            return json.loads(text)
        if kind == "raw":
            return text[1:-1]
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "ident":
            if text in ("true", "false"):
                return text == "true"
            if text == "nil":
                return None
            raise TemplateError(f"{where}: function {text!r} used as a value")
        if kind == "field":
            return _walk(scope.dot, text.split(".")[1:], where)
        if kind == "variable":
            name, *path = text.split(".")
            if name not in scope.variables:
                raise TemplateError(f"{where}: undefined variable {name}")
            return _walk(scope.variables[name], path, where)
        raise TemplateError(f"{where}: unexpected {text!r}")


_NOTHING = object()


def _walk(value: Any, path: list[str], where: str) -> Any:
    for part in path:
        if part == "":
            continue
        if isinstance(value, dict):
            value = value.get(part)
        elif value is None:
            return None
        else:
            raise TemplateError(f"{where}: cannot read field {part!r} of a {_kind(value)}")
    return value


def coalesce(defaults: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps key by key, anything else replaced; null deletes."""
    for k, v in overrides.items():
        if v is None:
            defaults.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(defaults.get(k), dict):
            coalesce(defaults[k], v)
        else:
            defaults[k] = copy.deepcopy(v)
    return defaults
