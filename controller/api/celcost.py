"""Worst-case cost of one CEL validation rule, estimated the way the API server does.

A CRD whose rules the API server estimates too expensive is refused at creation, so
Phalanx checks its own rules before shipping them. This is an independent Python
rendering of two upstream algorithms (read, not copied):

- cel-go `checker/cost.go`: the static estimator. Every identifier and field selection
  costs 1, constants 0, creating a list 10 and a map 30; `a || b` and `a && b` cost both
  sides, `c ? x : y` the condition plus the dearer branch; a comprehension (the
  expansion of `all`, `exists`, `exists_one`, `map`, `filter`) costs its range's maximum
  size times the cost of one step plus the loop condition; comparing or scanning a
  string costs 0.1 per character (`StringTraversalCostFactor`), a regular expression
  0.25 per pattern character times the scanned string (`RegexStringLengthCostFactor`).
- apiserver `pkg/cel/library/cost.go` (Kubernetes' estimator, consulted before cel-go's
  own rules): `quantity`, `isQuantity`, `url`, `lowerAscii`, ... are string traversals,
  quantity comparisons cost 1.

Sizes come from the schema (`controller.api.crdcost` builds the declared types): a
string's maximum size is four bytes per `maxLength` character, a list's is its
`maxItems`; an unbounded one is as large as the 3 MiB request limit allows.

Only what Phalanx's rules and the usual Kubernetes rule vocabulary need is modelled; a
function outside it is refused (`CelCostError`) rather than guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import lark
from celpy.celparser import CELParseError, CELParser
from celpy.evaluation import celbytes, celstr

UINT64_MAX = 2**64 - 1

# cel-go common/cost.go
SELECT_AND_IDENT_COST = 1
CONST_COST = 0
LIST_CREATE_BASE_COST = 10
MAP_CREATE_BASE_COST = 30
STRING_TRAVERSAL_COST_FACTOR = 0.1
REGEX_STRING_LENGTH_COST_FACTOR = 0.25

ACCUMULATOR = "@result"
"""The hidden accumulator name cel-go's macros use (paths through it are not sized)."""


class CelCostError(ValueError):
    """A rule that cannot be estimated: it does not parse or type-check, or it calls a
    function the estimator does not model."""


# Saturating unsigned arithmetic, as cel-go does on uint64 -----------------------------


def _add(x: int, y: int) -> int:
    return min(x + y, UINT64_MAX)


def _mul(x: int, y: int) -> int:
    return min(x * y, UINT64_MAX)


def _by_factor(x: int, factor: float) -> int:
    """x * factor rounded up, saturating; done in float64 like the upstream estimator."""
    as_float = float(x)
    if as_float > 0 and factor > 0 and as_float > UINT64_MAX / factor:
        return UINT64_MAX
    rounded = math.ceil(as_float * factor)
    return UINT64_MAX if rounded >= 2.0**64 else int(rounded)


@dataclass(frozen=True)
class Range:
    """A [min, max] estimate, of a size or of a cost."""

    min: int
    max: int

    def add(self, other: Range) -> Range:
        return Range(_add(self.min, other.min), _add(self.max, other.max))

    def times(self, other: Range) -> Range:
        return Range(_mul(self.min, other.min), _mul(self.max, other.max))

    def by_factor(self, factor: float) -> Range:
        return Range(_by_factor(self.min, factor), _by_factor(self.max, factor))

    def union(self, other: Range) -> Range:
        return Range(min(self.min, other.min), max(self.max, other.max))


def fixed(value: int) -> Range:
    return Range(value, value)


UNKNOWN = Range(0, UINT64_MAX)


# Declared types -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DeclType:
    """A CEL type with the size facts the estimator needs (apiserver `DeclType`).

    `kind` is one of bool, int, uint, double, string, bytes, null, timestamp, duration,
    dyn, list, map, object, quantity. `max_elements` is characters (bytes) for strings,
    items for lists and properties for maps; `min_serialized_size` is the fewest JSON
    bytes a value takes, used to bound unbounded containers by the request size.
    """

    kind: str
    max_elements: int = 0
    min_serialized_size: int = 1
    elem: DeclType | None = None
    fields: Mapping[str, DeclType] = field(default_factory=dict)

    @property
    def cel_kind(self) -> str:
        """The kind cel-go sees: schema objects and quantities are structs, int-or-string dyn."""
        return "struct" if self.kind in ("object", "quantity") else self.kind


BOOL = DeclType("bool", min_serialized_size=4)
INT = DeclType("int")
UINT = DeclType("uint")
DOUBLE = DeclType("double")
STRING = DeclType("string", min_serialized_size=2)
BYTES = DeclType("bytes", min_serialized_size=2)
NULL = DeclType("null", min_serialized_size=4)
DYN = DeclType("dyn")
TIMESTAMP = DeclType("timestamp", min_serialized_size=12)
DURATION = DeclType("duration", min_serialized_size=3)
QUANTITY = DeclType("quantity", min_serialized_size=8)
_SCALARS = frozenset({"bool", "int", "uint", "double", "timestamp", "duration"})
_LITERAL_TYPES = {
    "int": INT,
    "uint": UINT,
    "double": DOUBLE,
    "string": STRING,
    "bytes": BYTES,
    "bool": BOOL,
    "null": NULL,
}


def list_of(elem: DeclType, max_items: int = 0) -> DeclType:
    return DeclType("list", max_elements=max_items, min_serialized_size=2, elem=elem)


# Expressions (cel-go's AST shape, macros expanded) ---------------------------------------


class Expr:
    """Base of the expression nodes; compared by identity like cel-go's expression ids."""

    __slots__ = ()


@dataclass(eq=False)
class Literal(Expr):
    kind: str
    value: Any


@dataclass(eq=False)
class Ident(Expr):
    name: str


@dataclass(eq=False)
class Select(Expr):
    operand: Expr
    field: str
    test_only: bool = False


@dataclass(eq=False)
class Call(Expr):
    function: str
    target: Expr | None
    args: list[Expr]


@dataclass(eq=False)
class CreateList(Expr):
    elements: list[Expr]


@dataclass(eq=False)
class CreateMap(Expr):
    entries: list[tuple[Expr, Expr]]


@dataclass(eq=False)
class Comprehension(Expr):
    iter_var: str
    iter_range: Expr
    accu_var: str
    accu_init: Expr
    loop_condition: Expr
    loop_step: Expr
    result: Expr


def _expand_macro(name: str, target: Expr, args: list[Expr]) -> Expr | None:
    """cel-go parser/macro.go: the comprehension each receiver macro stands for."""
    if name not in ("all", "exists", "exists_one", "map", "filter") or len(args) not in (2, 3):
        return None
    if not isinstance(args[0], Ident):
        raise CelCostError(f"{name}(): the first argument must be a simple name")
    var = args[0].name
    accu = Ident(ACCUMULATOR)
    if name == "all" and len(args) == 2:
        init: Expr = Literal("bool", True)
        condition: Expr = Call("@not_strictly_false", None, [accu])
        step: Expr = Call("_&&_", None, [accu, args[1]])
        result: Expr = accu
    elif name == "exists" and len(args) == 2:
        init = Literal("bool", False)
        condition = Call("@not_strictly_false", None, [Call("!_", None, [accu])])
        step = Call("_||_", None, [accu, args[1]])
        result = accu
    elif name == "exists_one" and len(args) == 2:
        init = Literal("int", 0)
        condition = Literal("bool", True)
        step = Call("_?_:_", None, [args[1], Call("_+_", None, [accu, Literal("int", 1)]), accu])
        result = Call("_==_", None, [accu, Literal("int", 1)])
    elif name == "map":
        init, condition, result = CreateList([]), Literal("bool", True), accu
        step = Call("_+_", None, [accu, CreateList([args[-1]])])
        if len(args) == 3:
            step = Call("_?_:_", None, [args[1], step, accu])
    elif name == "filter" and len(args) == 2:
        init, condition, result = CreateList([]), Literal("bool", True), accu
        step = Call("_+_", None, [accu, CreateList([args[0]])])
        step = Call("_?_:_", None, [args[1], step, accu])
    else:
        return None
    return Comprehension(var, target, ACCUMULATOR, init, condition, step, result)


_BINARY = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_gt": "_>_",
    "relation_ge": "_>=_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "@in",
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}


def _integer(text: str) -> int:
    return int(text, 16) if "0x" in text.lower() else int(text)


_LITERALS: dict[str, Callable[[lark.Token], tuple[str, Any]]] = {
    "INT_LIT": lambda t: ("int", _integer(t)),
    "UINT_LIT": lambda t: ("uint", _integer(t[:-1])),
    "FLOAT_LIT": lambda t: ("double", float(t)),
    "STRING_LIT": lambda t: ("string", str(celstr(t))),
    "MLSTRING_LIT": lambda t: ("string", str(celstr(t))),
    "BYTES_LIT": lambda t: ("bytes", bytes(celbytes(t))),
    "BOOL_LIT": lambda t: ("bool", t == "true"),
    "NULL_LIT": lambda t: ("null", None),
}


def _children(tree: lark.Tree[Any]) -> list[Any]:
    return [c for c in tree.children if c is not None]


def _exprs(tree: lark.Tree[Any] | None) -> list[Expr]:
    return [] if tree is None else [_to_expr(c) for c in _children(tree)]


def _to_expr(node: Any) -> Expr:
    """The lark parse tree of cel-python's grammar as cel-go's AST."""
    rule = node.data
    kids = _children(node)
    if rule in ("expr", "conditionalor", "conditionaland") and len(kids) > 1:
        if rule == "expr":
            return Call("_?_:_", None, [_to_expr(k) for k in kids])
        op = "_||_" if rule == "conditionalor" else "_&&_"
        return Call(op, None, [_to_expr(kids[0]), _to_expr(kids[1])])
    if rule in ("relation", "addition", "multiplication") and len(kids) > 1:
        operator, right = kids
        return Call(_BINARY[operator.data], None, [_to_expr(operator.children[0]), _to_expr(right)])
    if rule == "unary" and len(kids) == 2:
        return Call("!_" if kids[0].data == "unary_not" else "-_", None, [_to_expr(kids[1])])
    if rule == "member_dot":
        return Select(_to_expr(kids[0]), str(kids[1]))
    if rule == "member_dot_arg":
        target, name = _to_expr(kids[0]), str(kids[1])
        args = _exprs(kids[2] if len(kids) > 2 else None)
        return _expand_macro(name, target, args) or Call(name, target, args)
    if rule == "member_index":
        return Call("_[_]", None, [_to_expr(kids[0]), _to_expr(kids[1])])
    if rule in ("ident_arg", "dot_ident_arg"):
        name = str(kids[0])
        args = _exprs(kids[1] if len(kids) > 1 else None)
        if name == "has":
            if len(args) != 1 or not isinstance(args[0], Select):
                raise CelCostError("has() takes one field selection, e.g. has(self.field)")
            return Select(args[0].operand, args[0].field, test_only=True)
        return Call(name, None, args)
    if rule in ("ident", "dot_ident"):
        return Ident(str(kids[0]))
    if rule == "list_lit":
        return CreateList(_exprs(kids[0] if kids else None))
    if rule == "map_lit":
        flat = _exprs(kids[0] if kids else None)
        return CreateMap(list(zip(flat[::2], flat[1::2], strict=True)))
    if rule == "literal":
        token = kids[0]
        kind, value = _LITERALS[token.type](token)
        return Literal(kind, value)
    if rule == "member_object":
        raise CelCostError("message construction is not used in CRD rules")
    if len(kids) == 1:  # expr, conditionalor, ..., member, primary, paren_expr wrap one child
        return _to_expr(kids[0])
    raise CelCostError(f"unexpected CEL syntax node {rule}")


_PARSER: CELParser | None = None


def parse(rule: str) -> Expr:
    """Parse a rule with cel-python's CEL grammar and expand its macros."""
    global _PARSER
    if _PARSER is None:
        _PARSER = CELParser()
    try:
        return _to_expr(_PARSER.parse(rule))
    except CELParseError as error:
        raise CelCostError(f"does not parse: {error}") from error


# Type checking: just enough to pick overloads the way cel-go's checker does ------------------


@dataclass(frozen=True)
class Overload:
    id: str
    member: bool
    params: tuple[str, ...]
    result: DeclType | None
    """None: the result type is worked out from the arguments (see `_result_type`)."""


def _overloads() -> dict[str, list[Overload]]:
    table: dict[str, list[Overload]] = {}

    def add(
        name: str,
        id_: str,
        params: tuple[str, ...],
        result: DeclType | None,
        *,
        member: bool = False,
    ) -> None:
        table.setdefault(name, []).append(Overload(id_, member, params, result))

    add("!_", "logical_not", ("bool",), BOOL)
    add("-_", "negate_int64", ("int",), INT)
    add("-_", "negate_double", ("double",), DOUBLE)
    add("_&&_", "logical_and", ("bool", "bool"), BOOL)
    add("_||_", "logical_or", ("bool", "bool"), BOOL)
    add("_?_:_", "conditional", ("bool", "A", "A"), None)
    add("@not_strictly_false", "not_strictly_false", ("bool",), BOOL)
    add("_==_", "equals", ("A", "A"), BOOL)
    add("_!=_", "not_equals", ("A", "A"), BOOL)
    ordered = ("int", "uint", "double", "string", "bytes", "bool", "timestamp", "duration")
    suffix = {"int": "int64", "uint": "uint64"}
    for op, word in (
        ("_<_", "less"),
        ("_<=_", "less_equals"),
        ("_>_", "greater"),
        ("_>=_", "greater_equals"),
    ):
        for kind in ordered:
            add(op, f"{word}_{suffix.get(kind, kind)}", (kind, kind), BOOL)
        for a, b in (
            ("int", "double"),
            ("int", "uint"),
            ("uint", "double"),
            ("uint", "int"),
            ("double", "int"),
            ("double", "uint"),
        ):
            add(op, f"{word}_{suffix.get(a, a)}_{suffix.get(b, b)}", (a, b), BOOL)
    for kind in ("int", "uint", "double"):
        for op, word in (
            ("_+_", "add"),
            ("_-_", "subtract"),
            ("_*_", "multiply"),
            ("_/_", "divide"),
        ):
            add(op, f"{word}_{suffix.get(kind, kind)}", (kind, kind), DeclType(kind))
    add("_%_", "modulo_int64", ("int", "int"), INT)
    add("_%_", "modulo_uint64", ("uint", "uint"), UINT)
    add("_+_", "add_string", ("string", "string"), STRING)
    add("_+_", "add_bytes", ("bytes", "bytes"), BYTES)
    add("_+_", "add_list", ("list", "list"), None)
    add("@in", "in_list", ("A", "list"), BOOL)
    add("@in", "in_map", ("A", "map"), BOOL)
    add("_[_]", "index_list", ("list", "int"), None)
    add("_[_]", "index_map", ("map", "A"), None)
    for kind in ("string", "bytes", "list", "map"):
        add("size", f"size_{kind}", (kind,), INT)
        add("size", f"{kind}_size", (kind,), INT, member=True)
    add("contains", "contains_string", ("string", "string"), BOOL, member=True)
    add("startsWith", "starts_with_string", ("string", "string"), BOOL, member=True)
    add("endsWith", "ends_with_string", ("string", "string"), BOOL, member=True)
    add("matches", "matches_string", ("string", "string"), BOOL, member=True)
    add("matches", "matches", ("string", "string"), BOOL)
    for kind in ("string", "int", "uint", "double", "bytes", "timestamp", "duration", "bool"):
        add("string", f"{suffix.get(kind, kind)}_to_string", (kind,), STRING)
    for kind in ("int", "uint", "double", "string", "timestamp", "duration"):
        add("int", f"{suffix.get(kind, kind)}_to_int64", (kind,), INT)
        add("double", f"{suffix.get(kind, kind)}_to_double", (kind,), DOUBLE)
    add("bytes", "string_to_bytes", ("string",), BYTES)
    add("bytes", "bytes_to_bytes", ("bytes",), BYTES)
    add("dyn", "to_dyn", ("A",), DYN)
    add("duration", "string_to_duration", ("string",), DURATION)
    add("timestamp", "string_to_timestamp", ("string",), TIMESTAMP)
    # Kubernetes libraries (apiserver pkg/cel/library): quantity, strings, regex, lists.
    add("quantity", "string_to_quantity", ("string",), QUANTITY)
    add("isQuantity", "is_quantity_string", ("string",), BOOL)
    for name in ("compareTo",):
        add(name, f"quantity_{name}", ("quantity", "quantity"), INT, member=True)
    for name in ("isGreaterThan", "isLessThan"):
        add(name, f"quantity_{name}", ("quantity", "quantity"), BOOL, member=True)
    for name in ("add", "sub"):
        add(name, f"quantity_{name}", ("quantity", "quantity"), QUANTITY, member=True)
        add(name, f"quantity_{name}_int", ("quantity", "int"), QUANTITY, member=True)
    add("sign", "quantity_sign", ("quantity",), INT, member=True)
    add("isInteger", "quantity_is_integer", ("quantity",), BOOL, member=True)
    add("asInteger", "quantity_get_int", ("quantity",), INT, member=True)
    add("asApproximateFloat", "quantity_get_float", ("quantity",), DOUBLE, member=True)
    for name in ("lowerAscii", "upperAscii", "trim"):
        add(name, f"string_{name}", ("string",), None, member=True)
    add("substring", "string_substring_int", ("string", "int"), None, member=True)
    add("substring", "string_substring_int_int", ("string", "int", "int"), None, member=True)
    add("split", "string_split_string", ("string", "string"), None, member=True)
    add("format", "string_format", ("string", "list"), STRING, member=True)
    add("find", "string_find_string", ("string", "string"), STRING, member=True)
    add("findAll", "string_find_all_string", ("string", "string"), None, member=True)
    add("isSorted", "list_is_sorted", ("list",), BOOL, member=True)
    for name in ("sum", "min", "max"):
        add(name, f"list_{name}", ("list",), None, member=True)
    return table


OVERLOADS = _overloads()


def _fits(arg: DeclType, param: str) -> bool:
    if param == "A" or arg.kind == "dyn":
        return True
    if param == "quantity":
        return arg.kind == "quantity"
    return arg.kind == param


class _Checker:
    """Types of sub-expressions and the overloads each call may take (cel-go `checker`)."""

    def __init__(self, root: DeclType) -> None:
        self.root = root
        self.types: dict[Expr, DeclType] = {}
        self.overloads: dict[Expr, list[str]] = {}
        self.scopes: dict[str, list[DeclType]] = {}

    def check(self, e: Expr) -> DeclType:
        t = self._check(e)
        self.types[e] = t
        return t

    def _check(self, e: Expr) -> DeclType:
        if isinstance(e, Literal):
            return _LITERAL_TYPES[e.kind]
        if isinstance(e, Ident):
            if self.scopes.get(e.name):
                return self.scopes[e.name][-1]
            if e.name in ("self", "oldSelf"):
                return self.root
            raise CelCostError(f"undeclared reference to {e.name!r}")
        if isinstance(e, Select):
            operand = self.check(e.operand)
            if operand.kind == "object":
                if e.field not in operand.fields:
                    raise CelCostError(f"undefined field {e.field!r}")
                return BOOL if e.test_only else operand.fields[e.field]
            if operand.kind == "map":
                return BOOL if e.test_only else (operand.elem or DYN)
            if operand.kind == "dyn":
                return BOOL if e.test_only else DYN
            raise CelCostError(f"cannot select {e.field!r} from a {operand.kind}")
        if isinstance(e, CreateList):
            elems = [self.check(x) for x in e.elements]
            return list_of(elems[0] if elems and all(x is elems[0] for x in elems) else DYN)
        if isinstance(e, CreateMap):
            values = []
            for key, value in e.entries:
                self.check(key)
                values.append(self.check(value))
            elem = values[0] if values and all(v is values[0] for v in values) else DYN
            return DeclType("map", min_serialized_size=2, elem=elem)
        if isinstance(e, Comprehension):
            iterated = self.check(e.iter_range)
            if iterated.kind == "list":
                var_type = iterated.elem or DYN
            elif iterated.kind == "map":
                var_type = STRING
            elif iterated.kind == "dyn":
                var_type = DYN
            else:
                raise CelCostError(f"cannot iterate over a {iterated.kind}")
            accu_type = self.check(e.accu_init)
            self.scopes.setdefault(e.accu_var, []).append(accu_type)
            self.scopes.setdefault(e.iter_var, []).append(var_type)
            self.check(e.loop_condition)
            step = self.check(e.loop_step)
            if accu_type.kind == "list":  # map/filter: the accumulated list's element type
                self.scopes[e.accu_var][-1] = step
            self.scopes[e.iter_var].pop()
            result = self.check(e.result)
            self.scopes[e.accu_var].pop()
            return result
        assert isinstance(e, Call)
        return self._check_call(e)

    def _check_call(self, e: Call) -> DeclType:
        if e.function not in OVERLOADS:
            raise CelCostError(f"function {e.function}() is not modelled by the cost estimator")
        target = self.check(e.target) if e.target is not None else None
        args = [self.check(a) for a in e.args]
        operands = ([target] if target is not None else []) + args
        matching = [
            o
            for o in OVERLOADS[e.function]
            if o.member == (target is not None)
            and len(o.params) == len(operands)
            and all(_fits(a, p) for a, p in zip(operands, o.params, strict=True))
        ]
        if not matching:
            kinds = ", ".join(t.kind for t in operands)
            raise CelCostError(f"no overload of {e.function}() takes ({kinds})")
        self.overloads[e] = [o.id for o in matching]
        results = {id(r): r for o in matching if (r := o.result or _result_type(o, operands))}
        return next(iter(results.values())) if len(results) == 1 else DYN


def _result_type(overload: Overload, operands: list[DeclType]) -> DeclType:
    """Result types that follow the operands: indexing, list concatenation, `?:`, ..."""
    if overload.id in ("index_list", "index_map"):
        return operands[0].elem or DYN
    if overload.id == "conditional":
        return operands[1] if operands[1] is operands[2] else DYN
    if overload.id == "add_list":
        return list_of(operands[0].elem or DYN) if operands[0].kind == "list" else operands[1]
    if overload.id in ("list_sum", "list_min", "list_max"):
        return operands[0].elem or DYN
    if overload.id in ("string_split_string", "string_find_all_string"):
        return list_of(STRING)
    return STRING


# Cost estimation (cel-go checker/cost.go with Kubernetes' library estimator) ------------------


@dataclass
class _Var:
    path: list[str] | None
    size: Range | None
    entry: tuple[str, Range, Range] | None  # container kind, key size, value size


class _Coster:
    def __init__(self, root: DeclType, checker: _Checker) -> None:
        self.root = root
        self.types = checker.types
        self.overloads = checker.overloads
        self.paths: dict[Expr, list[str]] = {}
        self.sizes: dict[Expr, Range] = {}
        self.entries: dict[Expr, tuple[str, Range, Range]] = {}
        self.locals: dict[str, list[_Var]] = {}

    # Sizes ------------------------------------------------------------------------------

    def schema_size(self, path: list[str] | None) -> Range | None:
        """apiextensions `sizeEstimator`: walk the path (after its first name) from the root."""
        if not path:
            return None
        node: DeclType | None = self.root
        for name in path[1:]:
            if node is None:
                return None
            if name in ("@items", "@values"):
                node = node.elem
            elif name == "@keys":
                node = STRING if node.kind == "map" else None
            else:
                node = node.fields.get(name)
        return None if node is None else Range(0, node.max_elements)

    def path(self, e: Expr) -> list[str] | None:
        if isinstance(e, Ident) and self.locals.get(e.name):
            return self.locals[e.name][-1].path
        return self.paths.get(e)

    def size(self, e: Expr) -> Range | None:
        if e in self.sizes:
            return self.sizes[e]
        literal = _literal_size(e)
        if literal is not None:
            return literal
        estimated = self.schema_size(self.path(e))
        if estimated is not None:
            self.sizes[e] = estimated
            return estimated
        if self.types[e].kind in _SCALARS:
            return fixed(1)
        if isinstance(e, Ident) and self.locals.get(e.name):
            return self.locals[e.name][-1].size
        return None

    def size_or_unknown(self, e: Expr) -> Range:
        return self.size(e) or UNKNOWN

    def entry(self, e: Expr) -> tuple[str, Range, Range] | None:
        if e in self.entries:
            return self.entries[e]
        if isinstance(e, Ident) and self.locals.get(e.name):
            return self.locals[e.name][-1].entry
        return None

    def node_path(self, e: Expr) -> list[str] | None:
        """The path an estimator sees; none through the accumulator (cel-go `newAstNode`)."""
        path = self.path(e)
        return None if path and path[0] in (ACCUMULATOR, "__result__") else path

    # Costs --------------------------------------------------------------------------------

    def cost(self, e: Expr) -> Range:
        if isinstance(e, Literal):
            return fixed(CONST_COST)
        if isinstance(e, Ident):
            local = self.locals.get(e.name)
            self.paths[e] = local[-1].path or [] if local else [e.name]
            return fixed(SELECT_AND_IDENT_COST)
        if isinstance(e, Select):
            if e.test_only:  # has(): Kubernetes sets PresenceTestHasCost(false)
                return self.cost(e.operand)
            total = self.cost(e.operand)
            if self.types[e.operand].cel_kind in ("map", "struct"):
                total = total.add(fixed(SELECT_AND_IDENT_COST))
            self.paths[e] = [*(self.path(e.operand) or []), e.field]
            return total
        if isinstance(e, CreateList):
            total = fixed(0)
            item = Range(0 if not e.elements else UINT64_MAX, 0)
            for element in e.elements:
                total = total.add(self.cost(element))
                item = item.union(self.size_or_unknown(element))
            self.entries[e] = ("list", fixed(1), item)
            return total.add(fixed(LIST_CREATE_BASE_COST))
        if isinstance(e, CreateMap):
            total = fixed(0)
            empty = Range(0 if not e.entries else UINT64_MAX, 0)
            keys, values = empty, empty
            for key, value in e.entries:
                total = total.add(self.cost(key)).add(self.cost(value))
                keys = keys.union(self.size_or_unknown(key))
                values = values.union(self.size_or_unknown(value))
            self.entries[e] = ("map", keys, values)
            return total.add(fixed(MAP_CREATE_BASE_COST))
        if isinstance(e, Comprehension):
            return self.cost_comprehension(e)
        assert isinstance(e, Call)
        return self.cost_call(e)

    def push(self, name: str, var: _Var) -> None:
        self.locals.setdefault(name, []).append(var)

    def cost_comprehension(self, e: Comprehension) -> Range:
        total = self.cost(e.iter_range).add(self.cost(e.accu_init))
        self.push(
            e.accu_var,
            _Var(self.path(e.accu_init), self.size(e.accu_init), self.entry(e.accu_init)),
        )
        entry = self.entry(e.iter_range)
        container = entry[0] if entry else self.types[e.iter_range].kind
        if container == "list":
            var_size, step = (entry[2] if entry else None), "@items"
        else:
            var_size, step = (entry[1] if entry else None), "@keys"
        self.push(e.iter_var, _Var([*(self.path(e.iter_range) or []), step], var_size, None))
        loop = self.cost(e.loop_condition)
        step_cost = self.cost(e.loop_step)
        self.locals[e.iter_var].pop()
        total = total.add(self.cost(e.result))
        self.locals[e.accu_var].pop()
        count = self.size_or_unknown(e.iter_range)
        total = total.add(count.times(step_cost.add(loop)))
        if isinstance(e.accu_init, Literal):
            init_size = self.size(e.accu_init)
            if init_size is not None:
                self.sizes[e] = init_size
        elif isinstance(e.accu_init, CreateList | CreateMap):
            self.sizes[e] = count
            step_entry = self.entry(e.loop_step)
            if step_entry is not None:
                self.entries[e] = step_entry
        return total

    def cost_call(self, e: Call) -> Range:
        if e.function == "dyn":
            argument = self.cost(e.args[0])
            if (s := self.size(e.args[0])) is not None:
                self.sizes[e] = s
            if (en := self.entry(e.args[0])) is not None:
                self.entries[e] = en
            return fixed(1).add(argument)
        arg_costs = [self.cost(a) for a in e.args]
        total = fixed(0)
        if e.target is not None:
            total = self.cost(e.target)
        function_cost = Range(UINT64_MAX, 0)
        result_size: Range | None = None
        for overload in self.overloads[e]:
            cost, size = self.function_cost(e, overload, arg_costs)
            function_cost = function_cost.union(cost)
            if size is not None:
                result_size = size if result_size is None else result_size.union(size)
            if overload in ("index_list", "index_map"):
                entry = self.entry(e.args[0])
                result_size = entry[2] if entry else None
                kind = "@items" if overload == "index_list" else "@values"
                self.paths[e] = [*(self.path(e.args[0]) or []), kind]
            if result_size is None:
                result_size = self.size(e)
        if result_size is not None:
            self.sizes[e] = result_size
        return total.add(function_cost)

    def function_cost(
        self, e: Call, overload: str, arg_costs: list[Range]
    ) -> tuple[Range, Range | None]:
        args_total = fixed(0)
        for c in arg_costs:
            args_total = args_total.add(c)
        kubernetes = self.kubernetes_call_cost(e, overload)
        if kubernetes is not None:
            return kubernetes[0].add(args_total), kubernetes[1]
        args, target = e.args, e.target
        if overload == "string_format" and target is not None:
            cost = self.size_or_unknown(target).by_factor(STRING_TRAVERSAL_COST_FACTOR)
            return cost.add(args_total), None
        if overload in ("starts_with_string", "ends_with_string"):
            return self.size_or_unknown(args[0]).by_factor(STRING_TRAVERSAL_COST_FACTOR).add(
                args_total
            ), None
        if overload == "string_to_bytes":
            s = self.size_or_unknown(args[0])
            return s.by_factor(STRING_TRAVERSAL_COST_FACTOR).add(args_total), Range(
                s.min, _mul(s.max, 4)
            )
        if overload == "bytes_to_string":
            s = self.size_or_unknown(args[0])
            return s.by_factor(STRING_TRAVERSAL_COST_FACTOR).add(args_total), Range(
                s.min // 4, s.max
            )
        if overload == "in_list":
            return self.size_or_unknown(args[1]).by_factor(1).add(args_total), None
        if overload == "matches_string" and target is not None:
            text = (
                self.size_or_unknown(target).add(fixed(1)).by_factor(STRING_TRAVERSAL_COST_FACTOR)
            )
            regex = self.size_or_unknown(args[0]).by_factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return text.times(regex).add(args_total), None
        if overload == "contains_string" and target is not None:
            text = self.size_or_unknown(target).by_factor(STRING_TRAVERSAL_COST_FACTOR)
            sub = self.size_or_unknown(args[0]).by_factor(STRING_TRAVERSAL_COST_FACTOR)
            return text.times(sub).add(args_total), None
        if overload in ("logical_or", "logical_and"):
            lhs, rhs = arg_costs
            return Range(lhs.min, lhs.add(rhs).max), None
        if overload == "conditional":
            size = self.size_or_unknown(args[1]).union(self.size_or_unknown(args[2]))
            a, b = self.entry(args[1]), self.entry(args[2])
            if a is not None and b is not None:
                self.entries[e] = (a[0], a[1].union(b[1]), a[2].union(b[2]))
            return arg_costs[0].add(arg_costs[1].union(arg_costs[2])), size
        if overload in ("add_string", "add_bytes", "add_list"):
            size = self.size_or_unknown(args[0]).add(self.size_or_unknown(args[1]))
            a, b = self.entry(args[0]), self.entry(args[1])
            if a is not None and b is not None:
                self.entries[e] = (a[0], a[1].union(b[1]), a[2].union(b[2]))
            if overload == "add_list":
                return fixed(1).add(args_total), size
            return size.by_factor(STRING_TRAVERSAL_COST_FACTOR).add(args_total), size
        if overload in _STRING_COMPARISONS:
            smallest = min(self.size_or_unknown(args[0]).max, self.size_or_unknown(args[1]).max)
            cost = Range(1 if smallest > 0 else 0, smallest).by_factor(STRING_TRAVERSAL_COST_FACTOR)
            return cost.add(args_total), None
        return fixed(1).add(args_total), None

    def library_size(self, e: Expr) -> Range:
        """Kubernetes' `sizeEstimate`: computed size, else the schema's, else unknown."""
        return self.size(e) or self.schema_size(self.node_path(e)) or UNKNOWN

    def kubernetes_call_cost(self, e: Call, overload: str) -> tuple[Range, Range | None] | None:
        """apiserver library `EstimateCallCost` for the functions modelled here."""
        name, args, target = e.function, e.args, e.target
        traversal = STRING_TRAVERSAL_COST_FACTOR
        if name in ("quantity", "isQuantity") and args:
            return self.library_size(args[0]).by_factor(traversal), None
        if name in _UNIT_COST_FUNCTIONS:
            return fixed(1), None
        if name in ("lowerAscii", "upperAscii", "substring", "trim") and target is not None:
            s = self.library_size(target)
            return s.by_factor(traversal), s
        if name == "split" and target is not None:
            s = self.library_size(target)
            return s.by_factor(2 * traversal), Range(0, s.max)
        if name in ("find", "findAll") and target is not None:
            s = self.library_size(target)
            text = s.add(fixed(1)).by_factor(traversal)
            regex = self.library_size(args[0]).by_factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return text.times(regex), Range(0, s.max)
        if name in ("isSorted", "sum", "min", "max") and target is not None:
            items = self.library_size(target)
            elem = self.types[target].elem
            element = fixed(1)
            if elem is not None and elem.kind in ("string", "bytes"):
                path = self.node_path(target)
                elem_size = self.schema_size([*path, "@items"]) if path else None
                element = element.add((elem_size or UNKNOWN).by_factor(traversal))
            return items.times(element), None
        if name == "_==_" and len(args) == 2 and self.types[args[0]].kind == "quantity":
            return fixed(1), None
        return None


_UNIT_COST_FUNCTIONS = frozenset(
    {
        "sign",
        "asInteger",
        "isInteger",
        "asApproximateFloat",
        "isGreaterThan",
        "isLessThan",
        "compareTo",
        "add",
        "sub",
    }
)
_STRING_COMPARISONS = frozenset(
    {
        f"{word}_{kind}"
        for word in ("less", "greater", "less_equals", "greater_equals")
        for kind in ("string", "bytes")
    }
    | {"equals", "not_equals"}
)


def _literal_size(e: Expr) -> Range | None:
    """cel-go `computeExprSize`: literals and list/map literals have known sizes."""
    if isinstance(e, Literal):
        if e.kind == "string":
            return fixed(len(e.value))
        if e.kind == "bytes":
            return fixed(len(e.value))
        return fixed(1)
    if isinstance(e, CreateList):
        return fixed(len(e.elements))
    if isinstance(e, CreateMap):
        return fixed(len(e.entries))
    return None


def rule_cost(rule: str, self_type: DeclType) -> int:
    """Worst-case cost of one evaluation of `rule` with `self` of `self_type`
    (what cel-go's `EstimateCost(...).Max` gives the API server)."""
    expr = parse(rule)
    checker = _Checker(self_type)
    checker.check(expr)
    return _Coster(self_type, checker).cost(expr).max


def walk(e: Expr) -> Iterator[Expr]:
    """Every sub-expression, for tests and diagnostics."""
    yield e
    children: list[Expr] = []
    if isinstance(e, Select):
        children = [e.operand]
    elif isinstance(e, Call):
        children = ([e.target] if e.target else []) + e.args
    elif isinstance(e, CreateList):
        children = e.elements
    elif isinstance(e, CreateMap):
        children = [x for pair in e.entries for x in pair]
    elif isinstance(e, Comprehension):
        children = [e.iter_range, e.accu_init, e.loop_condition, e.loop_step, e.result]
    for child in children:
        yield from walk(child)
