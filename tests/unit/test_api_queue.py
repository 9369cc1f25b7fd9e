"""Specification of the Queue API model and of the checks across a set of queues."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from controller.api import QueuePolicyError, queue_policy_selection
from controller.api.errors import format_validation_error
from controller.api.queue import Queue, QueueTreeError, validate_queue_tree
from controller.engine.policy import FifoWithinPriority, NoPreemption
from policies import registry
from policies.registry import PolicyRef
from policies.routing import PolicySelection
from tests.manifests import REMOVE, edited

TEAM_QUEUE = yaml.safe_load(
    """
apiVersion: phalanx.dev/v1alpha1
kind: Queue
metadata:
  name: team-a
spec:
  parent: research
  weight: 2
  quota:
  - resource: cpu
    nominal: 256
    borrowingLimit: 64
    lendingLimit: 128
  - resource: memory
    nominal: 1Ti
  - resource: devices/gpu.example.com
    nominal: 32
    lendingLimit: "8"
  - resource: nvidia.com/gpu
    nominal: 0
  namespaceSelector:
    matchLabels:
      phalanx.dev/team: a
    matchExpressions:
    - key: env
      operator: In
      values: [prod, staging]
    - key: sandbox
      operator: DoesNotExist
  policies:
    ordering:
      name: test-weighted
      params:
        weight: 24
    preemption:
      name: test-none
"""
)

QUEUE_STATUS = yaml.safe_load(
    """
usage: {cpu: 200500m, devices/gpu.example.com: 24}
borrowed: {cpu: "12"}
pendingGangs: 3
admittedGangs: 5
conditions:
- type: Active
  status: "True"
  reason: QuotaValid
  lastTransitionTime: "2025-03-01T12:00:00Z"
"""
)


def queue_with(path: str, value: Any) -> dict[str, Any]:
    """The fixture with one field, named by a dotted path, replaced (or removed)."""
    return edited(TEAM_QUEUE, path, value)


def problems(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Queue.from_manifest(doc)
    return format_validation_error(caught.value, "queues.yaml")


def queue(name: str, parent: str | None = None) -> Queue:
    spec = {"parent": parent} if parent else {}
    return Queue.from_manifest(
        {
            "apiVersion": "phalanx.dev/v1alpha1",
            "kind": "Queue",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def test_team_queue_with_cpu_memory_and_device_quota_parses() -> None:
    team = Queue.from_manifest(TEAM_QUEUE)

    assert [q.resource for q in team.spec.quota] == [
        "cpu",
        "memory",
        "devices/gpu.example.com",
        "nvidia.com/gpu",
    ]
    assert team.spec.weight == 2
    assert team.spec.policies is not None and team.spec.policies.ordering is not None
    assert team.spec.policies.ordering.params == {"weight": 24}


def test_queue_with_only_a_name_is_a_root_with_no_quota() -> None:
    root = queue("cluster")

    assert root.spec.parent is None
    assert root.spec.quota == []
    assert root.spec.weight == 1


@pytest.mark.parametrize("with_status", [False, True], ids=["spec-only", "with-status"])
def test_dump_and_parse_round_trip(with_status: bool) -> None:
    doc = queue_with("status", QUEUE_STATUS) if with_status else TEAM_QUEUE
    team = Queue.from_manifest(doc)

    again = Queue.from_manifest(team.model_dump(by_alias=True, exclude_none=True))

    assert again == team


@pytest.mark.parametrize(
    ("labels", "matches"),
    [
        ({"phalanx.dev/team": "a", "env": "prod"}, True),
        ({"phalanx.dev/team": "a", "env": "dev"}, False),
        ({"phalanx.dev/team": "b", "env": "prod"}, False),
        ({"phalanx.dev/team": "a"}, False),
        ({"phalanx.dev/team": "a", "env": "prod", "sandbox": "yes"}, False),
    ],
)
def test_namespace_selector_matches_like_kubernetes(labels: dict[str, str], matches: bool) -> None:
    selector = Queue.from_manifest(TEAM_QUEUE).spec.namespace_selector
    assert selector is not None

    assert selector.matches(labels) is matches


BAD_QUEUES = [
    pytest.param(
        "spec.quota.0.resource",
        "gpus",
        "spec.quota[0].resource: unknown quota resource: use cpu, memory, pods, "
        "ephemeral-storage, an extended resource with a domain such as nvidia.com/gpu, "
        "or devices/<deviceClassName> (got 'gpus')",
        id="unknown-quota-resource",
    ),
    pytest.param(
        "spec.quota.2.resource",
        "devices/GPU_Class",
        "spec.quota[2].resource: the DeviceClass name after 'devices/' must be a DNS subdomain "
        "(got 'devices/GPU_Class')",
        id="device-class-not-dns-subdomain",
    ),
    pytest.param(
        "spec.quota.1.resource",
        "cpu",
        "spec.quota[1].resource: duplicate quota resource 'cpu' (also at [0])",
        id="duplicate-quota-resource",
    ),
    pytest.param(
        "spec.quota.1.nominal",
        "-1Gi",
        "spec.quota[1].nominal: must not be negative (got '-1Gi')",
        id="negative-nominal",
    ),
    pytest.param(
        "spec.quota.0.nominal",
        -4,
        "spec.quota[0].nominal: must not be negative (got -4)",
        id="negative-integer-nominal",
    ),
    pytest.param(
        "spec.quota.0.lendingLimit",
        "300",
        "spec.quota[0].lendingLimit: must not exceed nominal 256 (got '300')",
        id="lending-limit-above-nominal",
    ),
    pytest.param(
        "spec.quota.0.borrowingLimit",
        "lots",
        "spec.quota[0].borrowingLimit: must be a Kubernetes quantity such as '2', '500m', "
        "'1.5' or '4Gi' (got 'lots')",
        id="malformed-borrowing-limit",
    ),
    pytest.param(
        "spec.parent",
        "team-a",
        "spec.parent: a queue cannot be its own parent (got 'team-a')",
        id="own-parent",
    ),
    pytest.param(
        "spec.weight",
        -1,
        "spec.weight: must be >= 0 (got -1)",
        id="negative-weight",
    ),
    pytest.param(
        "spec.namespaceSelector.matchExpressions.0.operator",
        "Equals",
        "spec.namespaceSelector.matchExpressions[0].operator: must be 'In', 'NotIn', "
        "'Exists' or 'DoesNotExist' (got 'Equals')",
        id="bad-selector-operator",
    ),
    pytest.param(
        "spec.namespaceSelector.matchExpressions.0.values",
        [],
        "spec.namespaceSelector.matchExpressions[0].values: must not be empty with operator In",
        id="in-without-values",
    ),
    pytest.param(
        "spec.namespaceSelector.matchExpressions.1.values",
        ["yes"],
        "spec.namespaceSelector.matchExpressions[1].values: must be empty with operator "
        "DoesNotExist",
        id="does-not-exist-with-values",
    ),
    pytest.param(
        "spec.policies.ordering.name",
        "",
        "spec.policies.ordering.name: must not be empty",
        id="empty-policy-name",
    ),
    pytest.param(
        "spec.policies.ordering.parameters",
        {"weight": 1},
        "spec.policies.ordering.parameters: unknown field (field names are camelCase; check "
        "the spelling)",
        id="policy-parameters-misspelt",
    ),
    pytest.param(
        "spec.policies.ordering.params",
        [1],
        "spec.policies.ordering.params: must be a map (got [1])",
        id="policy-params-not-a-map",
    ),
    pytest.param(
        "spec.policies.orderin",
        {"name": "drf"},
        "spec.policies.orderin: unknown field (field names are camelCase; check the spelling)",
        id="unknown-policy-kind",
    ),
    pytest.param(
        "metadata.namespace",
        "default",
        "metadata.namespace: must not be set: Queue is cluster-scoped",
        id="namespace-on-cluster-scoped-queue",
    ),
    pytest.param(
        "apiVersion",
        "kueue.x-k8s.io/v1beta1",
        "apiVersion: must be 'phalanx.dev/v1alpha1' (got 'kueue.x-k8s.io/v1beta1')",
        id="wrong-api-version",
    ),
    pytest.param(
        "spec.cohort",
        "research",
        "spec.cohort: unknown field (field names are camelCase; check the spelling)",
        id="unknown-field-in-spec",
    ),
    pytest.param(
        "spec.quota.0.nominal",
        "1" * 40 + "." + "0" * 24,
        "spec.quota[0].nominal: must be a quantity of at most 64 characters (got "
        "'1111111111111111111111111111111111111111.000000000000000...)",
        id="quantity-longer-than-the-crd-allows",
    ),
    pytest.param(
        "spec.namespaceSelector.matchLabels",
        {f"k{i}": "v" for i in range(65)},
        "spec.namespaceSelector.matchLabels: must have at most 64 item(s) (got 65)",
        id="too-many-match-labels",
    ),
    pytest.param(
        "spec.policies.ordering.params",
        {f"p{i}": 1 for i in range(65)},
        "spec.policies.ordering.params: must have at most 64 item(s) (got 65)",
        id="too-many-policy-params",
    ),
    pytest.param(
        "spec.quota",
        [{"resource": f"example.com/r{i}", "nominal": 1} for i in range(65)],
        "spec.quota: must have at most 64 item(s) (got 65)",
        id="too-many-quota-items",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD_QUEUES)
def test_invalid_queue_is_reported_by_field_path(path: str, value: Any, expected: str) -> None:
    assert problems(queue_with(path, value)) == f"queues.yaml: {expected}"


@pytest.mark.parametrize(
    ("lending", "nominal"),
    [("128", 128), (128, "128"), ("1Gi", "1073741824"), ("500m", "0.5"), ("0", 0)],
)
def test_lending_limit_up_to_nominal_is_accepted(lending: Any, nominal: Any) -> None:
    doc = queue_with("spec.quota.0.lendingLimit", lending)
    doc["spec"]["quota"][0]["nominal"] = nominal

    Queue.from_manifest(doc)


def test_valid_tree_passes() -> None:
    validate_queue_tree(
        [queue("research"), queue("team-a", "research"), queue("team-b", "research"), queue("ops")]
    )


def test_cycle_is_named_from_its_smallest_queue() -> None:
    queues = [queue("c", "a"), queue("b", "c"), queue("a", "b"), queue("leaf", "b")]

    with pytest.raises(QueueTreeError) as caught:
        validate_queue_tree(queues)

    assert caught.value.problems == ["queue cycle: a -> b -> c -> a"]


def test_missing_parent_is_named() -> None:
    with pytest.raises(QueueTreeError) as caught:
        validate_queue_tree([queue("research"), queue("team-a", "reserch")])

    assert str(caught.value) == "queue 'team-a': parent queue 'reserch' does not exist"


def test_duplicate_queue_name_is_reported() -> None:
    with pytest.raises(QueueTreeError) as caught:
        validate_queue_tree([queue("team-a"), queue("team-a", "research"), queue("research")])

    assert caught.value.problems == ["queue 'team-a' is defined more than once"]


def test_all_tree_problems_are_reported_together() -> None:
    queues = [queue("x", "y"), queue("y", "x"), queue("orphan", "gone")]

    with pytest.raises(QueueTreeError) as caught:
        validate_queue_tree(queues)

    assert caught.value.problems == [
        "queue 'orphan': parent queue 'gone' does not exist",
        "queue cycle: x -> y -> x",
    ]


# Policies named in spec.policies, checked against the registry --------------------------


@dataclass
class Weighted(FifoWithinPriority):
    """A test-local ordering with a parameter."""

    name = "test-weighted"
    weight: float = 1.0


class NoneAlias(NoPreemption):
    name = "test-none"


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in (Weighted, NoneAlias):
        monkeypatch.setitem(registry._builtin[registry.kind_of(cls)], cls.name, cls)


def test_queue_policies_become_the_queue_selection(local: None) -> None:
    assert queue_policy_selection(Queue.from_manifest(TEAM_QUEUE)) == PolicySelection(
        ordering=PolicyRef("test-weighted", {"weight": 24}), preemption=PolicyRef("test-none")
    )


@pytest.mark.parametrize("policies", [REMOVE, {}], ids=["absent", "empty"])
def test_queue_without_policies_selects_none(local: None, policies: Any) -> None:
    assert (
        queue_policy_selection(Queue.from_manifest(queue_with("spec.policies", policies))) is None
    )


def test_unknown_policy_in_a_queue_is_reported_with_what_exists(local: None) -> None:
    doc = queue_with("spec.policies.ordering.name", "test-wieghted")

    with pytest.raises(QueuePolicyError) as caught:
        queue_policy_selection(Queue.from_manifest(doc))

    (problem,) = caught.value.problems
    assert problem.startswith(
        "queue team-a: spec.policies.ordering: no ordering policy named 'test-wieghted'; "
        "available: "
    )
    assert "test-weighted" in problem.split("available: ")[1].split(", ")


def test_every_bad_policy_in_a_queue_is_reported(local: None) -> None:
    doc = queue_with("spec.policies.ordering.params", {"weight": "heavy"})
    doc["spec"]["policies"]["placement"] = {"name": "nowhere"}

    with pytest.raises(QueuePolicyError) as caught:
        queue_policy_selection(Queue.from_manifest(doc))

    assert caught.value.problems[0] == (
        "queue team-a: spec.policies.ordering: ordering policy 'test-weighted': weight: "
        "input should be a valid number (got 'heavy')"
    )
    assert caught.value.problems[1].startswith(
        "queue team-a: spec.policies.placement: no placement policy named 'nowhere'"
    )
