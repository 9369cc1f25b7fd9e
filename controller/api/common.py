"""Building blocks shared by the CRD models: names, quantities, metadata, conditions, selectors.

Each constrained string type validates in Python with a message a user can act on and
carries the equivalent OpenAPI pattern, so the generated CRD makes the API server enforce
the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from controller.api.errors import FieldProblem, show

GROUP = "phalanx.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
SCHEDULER_NAME = "phalanx"
DEVICE_QUOTA_PREFIX = "devices/"

# Kubernetes name grammars (apimachinery/pkg/util/validation), written so that both
# Python's re and the API server's RE2 accept them. *_FRAGMENT are unanchored pieces.
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL_PATTERN = rf"^{_LABEL}$"
SUBDOMAIN_FRAGMENT = rf"{_LABEL}(\.{_LABEL})*"
DNS_SUBDOMAIN_PATTERN = rf"^{SUBDOMAIN_FRAGMENT}$"
NAME_PART_FRAGMENT = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
QUALIFIED_NAME_PATTERN = rf"^({SUBDOMAIN_FRAGMENT}/)?{NAME_PART_FRAGMENT}$"
LABEL_VALUE_PATTERN = rf"^({NAME_PART_FRAGMENT})?$"
_C_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

# Kubernetes resource.Quantity: a decimal number, then an exponent, an SI or a binary suffix.
_QUANTITY_BODY = r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?"
NON_NEGATIVE_QUANTITY_PATTERN = rf"^\+?{_QUANTITY_BODY}$"

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = DNS_SUBDOMAIN_MAX + 1 + 63
LABEL_VALUE_MAX = 63

# Bounds on every list, map and string of the CRDs. The API server needs them to estimate
# CEL rule costs (an unbounded one is sized by the 3 MiB request limit), and they keep one
# object from growing without end; the models enforce the same numbers.
QUANTITY_MAX_LENGTH = 64
"""Longer than any real quantity ('123456789012345678901234567890Gi' is 32)."""
MAX_RESOURCE_NAMES = 64
"""Resource names in one resource list (requests, quota usage, ...)."""
MAX_LABELS = 64
"""Labels in a label map, node selector or matchLabels."""
MAX_ANNOTATIONS = 64
ANNOTATION_VALUE_MAX = 256 * 1024
"""Kubernetes caps all of an object's annotations together at 256 KiB."""
MAX_SELECTOR_EXPRESSIONS = 32
MAX_SELECTOR_VALUES = 64
MAX_CONDITIONS = 16
CONDITION_MESSAGE_MAX = 32768

_RE_LABEL = re.compile(DNS_LABEL_PATTERN)
_RE_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)
_RE_NAME_PART = re.compile(rf"^{NAME_PART_FRAGMENT}$")
_RE_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)
_RE_C_IDENTIFIER = re.compile(rf"^{_C_IDENTIFIER}$")
_RE_REASON = re.compile(CONDITION_REASON_PATTERN)
_RE_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(\d+(\.\d*)?|\.\d+))"
    r"((?P<exp>[eE][+-]?\d+)|(?P<suffix>[numkMGTPE]|[KMGTPE]i))?$"
)


class ApiModel(BaseModel):
    """Our own API types: camelCase on the wire, strict types, unknown fields rejected.

    Strict typing mirrors the API server, which would refuse `replicas: "3"` too;
    forbidding extras turns a misspelt field into an error instead of silent pruning.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


class KubeModel(BaseModel):
    """Kubernetes-owned types we only read parts of: unknown fields are kept, not refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", strict=True
    )


def cel_rules(*rules: tuple[str, str]) -> dict[str, Any]:
    """`x-kubernetes-validations` for a schema node, from (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"message": m, "rule": r} for r, m in rules]}


def _checked(problem: Callable[[str], str | None]) -> AfterValidator:
    """Run a `*_problem` check; its message plus the offending value becomes the error."""

    def validate(value: str) -> str:
        message = problem(value)
        if message is not None:
            raise ValueError(f"{message} (got {show(value)})")
        return value

    return AfterValidator(validate)


def _string_schema(**schema: Any) -> WithJsonSchema:
    """The OpenAPI side of a checked string: the pattern the API server enforces."""
    return WithJsonSchema({"type": "string", **schema})


def dns_label_problem(value: str) -> str | None:
    if len(value) > DNS_LABEL_MAX or not _RE_LABEL.match(value):
        return (
            "must be a DNS label: at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns_subdomain_problem(value: str) -> str | None:
    if len(value) > DNS_SUBDOMAIN_MAX or not _RE_SUBDOMAIN.match(value):
        return (
            "must be a DNS subdomain: at most 253 lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def qualified_name_problem(value: str) -> str | None:
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or dns_subdomain_problem(prefix)):
        return "must be a qualified name: the prefix before '/' must be a DNS subdomain"
    if len(name) > 63 or not _RE_NAME_PART.match(name):
        return (
            "must be a qualified name: an optional DNS-subdomain prefix and '/', then at most "
            "63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _RE_LABEL_VALUE.match(value):
        return (
            "must be a label value: empty, or at most 63 letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def device_attribute_problem(value: str) -> str | None:
    domain, slash, name = value.partition("/")
    if not slash or dns_subdomain_problem(domain) or len(domain) > 63:
        return "must be a fully qualified device attribute 'domain/name', e.g. gpu.example.com/numa"
    if len(name) > 32 or not _RE_C_IDENTIFIER.match(name):
        return "the attribute name after '/' must be a C identifier of at most 32 characters"
    return None


def condition_reason_problem(value: str) -> str | None:
    if len(value) > 1024 or not _RE_REASON.match(value):
        return "must be CamelCase: a letter, then letters, digits, '_', ',' or ':'"
    return None


DnsLabel = Annotated[
    str,
    _checked(dns_label_problem),
    _string_schema(maxLength=DNS_LABEL_MAX, pattern=DNS_LABEL_PATTERN),
]
DnsSubdomain = Annotated[
    str,
    _checked(dns_subdomain_problem),
    _string_schema(maxLength=DNS_SUBDOMAIN_MAX, pattern=DNS_SUBDOMAIN_PATTERN),
]
QualifiedName = Annotated[
    str,
    _checked(qualified_name_problem),
    _string_schema(maxLength=QUALIFIED_NAME_MAX, pattern=QUALIFIED_NAME_PATTERN),
]
LabelValue = Annotated[
    str,
    _checked(label_value_problem),
    _string_schema(maxLength=LABEL_VALUE_MAX, pattern=LABEL_VALUE_PATTERN),
]
ConditionReason = Annotated[
    str,
    _checked(condition_reason_problem),
    _string_schema(minLength=1, maxLength=1024, pattern=CONDITION_REASON_PATTERN),
]


# Quantities -------------------------------------------------------------------------

_SUFFIX_FACTOR: dict[str, Decimal] = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: int | str) -> Decimal:
    """The exact value of a Kubernetes quantity (`500m` -> 0.5, `1Gi` -> 1073741824)."""
    if isinstance(value, int):
        return Decimal(value)
    match = _RE_QUANTITY.match(value)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number = Decimal(match["num"])
    if match["exp"]:
        return number.scaleb(int(match["exp"][1:]))
    if match["suffix"]:
        return number * _SUFFIX_FACTOR[match["suffix"]]
    return number


def _check_quantity(value: object) -> int | str:
    """Integers or quantity strings, never negative: what requests, quota and usage hold.

    Floats are refused because the API server refuses them for int-or-string fields;
    the message says to quote the value instead.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        hint = f"; write it as a string, e.g. '{value}'" if isinstance(value, float) else ""
        raise ValueError(
            f"must be an integer or a quantity string such as '500m' or '4Gi' "
            f"(got {show(value)}){hint}"
        )
    if isinstance(value, str) and len(value) > QUANTITY_MAX_LENGTH:
        raise ValueError(
            f"must be a quantity of at most {QUANTITY_MAX_LENGTH} characters (got {show(value)})"
        )
    if isinstance(value, str) and not _RE_QUANTITY.match(value):
        raise ValueError(
            f"must be a Kubernetes quantity such as '2', '500m', '1.5' or '4Gi' (got {show(value)})"
        )
    if parse_quantity(value) < 0 or (isinstance(value, str) and value.startswith("-")):
        raise ValueError(f"must not be negative (got {show(value)})")
    return value


Quantity = Annotated[
    int | str,
    PlainValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": QUANTITY_MAX_LENGTH,
            "pattern": NON_NEGATIVE_QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


def resource_name_problem(value: str) -> str | None:
    if qualified_name_problem(value):
        return "must be a resource name such as cpu, memory or nvidia.com/gpu"
    return None


ResourceName = Annotated[str, _checked(resource_name_problem), _string_schema()]
ResourceList = Annotated[dict[ResourceName, Quantity], Field(max_length=MAX_RESOURCE_NAMES)]
"""Resource name -> quantity, as in `resources.requests` or a queue's usage."""
Labels = Annotated[dict[QualifiedName, LabelValue], Field(max_length=MAX_LABELS)]
Annotations = Annotated[
    dict[str, Annotated[str, Field(max_length=ANNOTATION_VALUE_MAX)]],
    Field(max_length=MAX_ANNOTATIONS),
]


# Metadata, conditions, selectors -------------------------------------------------------


class ObjectMeta(KubeModel):
    """The parts of metav1.ObjectMeta Phalanx reads; server-set fields pass through."""

    name: DnsSubdomain
    namespace: DnsLabel | None = None
    labels: dict[QualifiedName, LabelValue] = {}
    annotations: dict[str, str] = {}
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Annotated[datetime | None, Field(strict=False)] = None


class Condition(ApiModel):
    """metav1.Condition, the standard shape `kubectl wait --for=condition=` understands."""

    type: QualifiedName
    status: Literal["True", "False", "Unknown"]
    reason: ConditionReason
    message: Annotated[str, Field(max_length=CONDITION_MESSAGE_MAX)] = ""
    last_transition_time: Annotated[datetime, Field(strict=False)]
    observed_generation: Annotated[int | None, Field(ge=0)] = None


def _unique_condition_types(conditions: list[Condition]) -> list[Condition]:
    seen: set[str] = set()
    for i, condition in enumerate(conditions):
        if condition.type in seen:
            raise FieldProblem((i, "type"), f"duplicate condition type {show(condition.type)}")
        seen.add(condition.type)
    return conditions


Conditions = Annotated[
    list[Condition],
    AfterValidator(_unique_condition_types),
    Field(
        max_length=MAX_CONDITIONS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]
"""Conditions keyed by type, so server-side apply merges them one by one."""


class LabelSelectorRequirement(ApiModel):
    """One metav1.LabelSelectorRequirement."""

    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[list[LabelValue] | None, Field(max_length=MAX_SELECTOR_VALUES)] = None

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        # The same rule the API server applies to metav1.LabelSelector.
        if self.operator in ("In", "NotIn") and not self.values:
            raise FieldProblem(("values",), f"must not be empty with operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise FieldProblem(("values",), f"must be empty with operator {self.operator}")
        return self


class LabelSelector(ApiModel):
    """metav1.LabelSelector: every matchLabels pair and every expression must hold."""

    match_labels: Labels = {}
    match_expressions: Annotated[
        list[LabelSelectorRequirement], Field(max_length=MAX_SELECTOR_EXPRESSIONS)
    ] = []

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a set of labels satisfies the selector; the empty selector matches all."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
            if req.operator == "In" and (not present or labels[req.key] not in (req.values or [])):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in (req.values or []):
                return False
        return True
