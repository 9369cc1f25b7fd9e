"""Specification of the generated CRDs: current, structural, and agreeing with the models."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import cel
import pytest
import yaml
from pydantic import Field, ValidationError

from controller.api import crdgen
from controller.api.common import ApiModel, cel_rules, parse_quantity
from controller.api.crdcost import CRD_COST_LIMIT, PER_RULE_COST_LIMIT, schema_cost
from controller.api.crdgen import CrdBudgetError, check_crds, render_crds, write_crds
from controller.api.gangjob import GangJob
from controller.api.queue import Queue
from tests.wide_cli import invoke

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = ["gangjobs.phalanx.dev.yaml", "queues.phalanx.dev.yaml"]


def crd(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(render_crds()[name])
    return loaded


def schema_of(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = crd(name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node that describes a value: the root, properties, items, map values."""
    yield path or "<root>", node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{*}}")


def all_dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for sub in value.values():
            yield from all_dicts(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from all_dicts(sub)


# Staleness and determinism ------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    assert check_crds(REPO / "crds") == [], "crds/ is stale: regenerate with `phalanx crds`"


def test_rendering_is_deterministic() -> None:
    assert render_crds() == render_crds()


def test_written_files_end_with_a_newline_and_check_clean(tmp_path: Path) -> None:
    written = write_crds(tmp_path / "out")

    assert sorted(p.name for p in written) == CRD_FILES
    assert all(p.read_text(encoding="utf-8").endswith("\n") for p in written)
    assert check_crds(tmp_path / "out") == []


def test_check_names_missing_and_edited_files(tmp_path: Path) -> None:
    write_crds(tmp_path)
    (tmp_path / "gangjobs.phalanx.dev.yaml").unlink()
    queues = tmp_path / "queues.phalanx.dev.yaml"
    queues.write_text(queues.read_text(encoding="utf-8") + "# hand edit\n", encoding="utf-8")

    assert check_crds(tmp_path) == CRD_FILES


# Shape of the CRDs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "scope", "short_name"),
    [
        ("gangjobs.phalanx.dev.yaml", "GangJob", "Namespaced", "gj"),
        ("queues.phalanx.dev.yaml", "Queue", "Cluster", "pq"),
    ],
)
def test_crd_identity(name: str, kind: str, scope: str, short_name: str) -> None:
    doc = crd(name)

    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == name.removesuffix(".yaml")
    assert doc["spec"]["group"] == "phalanx.dev"
    assert doc["spec"]["scope"] == scope
    assert doc["spec"]["names"]["kind"] == kind
    assert short_name in doc["spec"]["names"]["shortNames"]
    [version] = doc["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("name", CRD_FILES)
def test_every_schema_node_has_a_type(name: str) -> None:
    untyped = [
        path
        for path, node in schema_nodes(schema_of(name))
        if "type" not in node
        and not node.get("x-kubernetes-int-or-string")
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert untyped == []


@pytest.mark.parametrize("name", CRD_FILES)
def test_schema_has_no_refs_definitions_or_titles(name: str) -> None:
    keys = {key for node in all_dicts(schema_of(name)) for key in node}

    assert keys.isdisjoint({"$ref", "$defs", "definitions", "title", "const", "propertyNames"})


@pytest.mark.parametrize("name", CRD_FILES)
def test_any_of_appears_only_as_int_or_string(name: str) -> None:
    for path, node in schema_nodes(schema_of(name)):
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path


@pytest.mark.parametrize("name", CRD_FILES)
def test_objects_never_mix_properties_and_additional_properties(name: str) -> None:
    mixed = [
        path
        for path, node in schema_nodes(schema_of(name))
        if "properties" in node and "additionalProperties" in node
    ]
    assert mixed == []


@pytest.mark.parametrize("name", CRD_FILES)
def test_root_declares_only_types_for_api_version_kind_and_metadata(name: str) -> None:
    properties = schema_of(name)["properties"]

    assert properties["apiVersion"] == {"type": "string"}
    assert properties["kind"] == {"type": "string"}
    assert properties["metadata"] == {"type": "object"}


@pytest.mark.parametrize("name", CRD_FILES)
def test_quantities_are_int_or_string_with_a_pattern(name: str) -> None:
    quantities = [
        node for _, node in schema_nodes(schema_of(name)) if node.get("x-kubernetes-int-or-string")
    ]
    assert quantities
    assert all("type" not in node and "pattern" in node for node in quantities)


def test_pod_template_spec_keeps_unknown_pod_fields() -> None:
    pod_set = schema_of("gangjobs.phalanx.dev.yaml")["properties"]["spec"]["properties"]["podSets"]
    template = pod_set["items"]["properties"]["template"]

    assert template["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] is True
    container = template["properties"]["spec"]["properties"]["containers"]["items"]
    assert container["x-kubernetes-preserve-unknown-fields"] is True


@pytest.mark.parametrize("name", CRD_FILES)
def test_exclusive_bounds_are_openapi_booleans_beside_their_bound(name: str) -> None:
    for path, node in schema_nodes(schema_of(name)):
        for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if exclusive in node:
                assert node[exclusive] is True and bound in node, path


def test_checkpoint_interval_must_be_positive() -> None:
    spec = schema_of("gangjobs.phalanx.dev.yaml")["properties"]["spec"]["properties"]
    node = spec["checkpointIntervalSeconds"]

    assert (node["type"], node["minimum"], node["exclusiveMinimum"]) == ("number", 0, True)


def test_queue_policy_params_keep_whatever_the_policy_takes() -> None:
    spec = schema_of("queues.phalanx.dev.yaml")["properties"]["spec"]["properties"]
    policies = spec["policies"]["properties"]

    assert sorted(policies) == ["ordering", "placement", "preemption"]
    for choice in policies.values():
        assert choice["required"] == ["name"]
        assert choice["properties"]["params"] == {
            "description": "The policy's parameters; absent: its defaults.",
            "maxProperties": 64,
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }


@pytest.mark.parametrize("name", CRD_FILES)
def test_every_validation_rule_has_a_message_and_compiles(name: str) -> None:
    rules = [
        rule
        for node in all_dicts(schema_of(name))
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert rules
    for rule in rules:
        assert set(rule) == {"rule", "message"}
        assert rule["message"].strip()
        cel.compile(rule["rule"])


@pytest.mark.parametrize("name", CRD_FILES)
def test_rules_that_iterate_lists_have_a_bounded_list(name: str) -> None:
    # The API server rejects a CRD whose estimated CEL cost is too high; for a rule
    # comparing every pair of items that estimate is only bounded by maxItems.
    for path, node in schema_nodes(schema_of(name)):
        for rule in node.get("x-kubernetes-validations", []):
            if ".all(" in rule["rule"] or "exists_one(" in rule["rule"]:
                assert node["type"] == "array" and "maxItems" in node, path


@pytest.mark.parametrize("name", CRD_FILES)
def test_defaults_are_valid_for_their_node(name: str) -> None:
    python_types = {"integer": int, "number": float, "string": str, "boolean": bool}
    for path, node in schema_nodes(schema_of(name)):
        if "default" in node:
            assert isinstance(node["default"], python_types[node["type"]]), path
            assert node["default"] in node.get("enum", [node["default"]]), path
            assert node["default"] >= node.get("minimum", node["default"]), path


@pytest.mark.parametrize("name", CRD_FILES)
def test_list_map_keys_are_required_in_items(name: str) -> None:
    for path, node in schema_nodes(schema_of(name)):
        if node.get("x-kubernetes-list-type") == "map":
            assert set(node["x-kubernetes-list-map-keys"]) <= set(node["items"]["required"]), path


@pytest.mark.parametrize("name", CRD_FILES)
def test_printer_columns_point_at_schema_fields(name: str) -> None:
    [version] = crd(name)["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".metadata."):
            continue
        node = schema
        for part in path.strip(".").split("."):
            node = node["properties"][part]
        assert node.get("type") == column["type"], path


# CEL rules agree with the models ----------------------------------------------------

JOB = yaml.safe_load(
    """
apiVersion: phalanx.dev/v1alpha1
kind: GangJob
metadata: {name: ddp, namespace: research}
spec:
  queueName: team-a
  priority: 100
  podSets:
  - name: master
    replicas: 1
    template:
      spec:
        containers: [{name: c, image: trainer, resources: {claims: [{name: gpus}]}}]
        resourceClaims: [{name: gpus, resourceClaimTemplateName: two-gpus}]
  - name: worker
    replicas: 2
    template:
      spec:
        containers: [{name: c, image: trainer}]
        resourceClaims: [{name: scratch, resourceClaimName: shared-scratch}]
"""
)

QUEUE = yaml.safe_load(
    """
apiVersion: phalanx.dev/v1alpha1
kind: Queue
metadata: {name: team-a}
spec:
  parent: research
  quota:
  - {resource: cpu, nominal: 64, lendingLimit: "32"}
  - {resource: memory, nominal: 256Gi, lendingLimit: 256Gi}
  - {resource: devices/gpu.example.com, nominal: "8", lendingLimit: 8}
"""
)


def _is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except ValueError:
        return False
    return True


def _compare(a: str, b: str) -> int:
    x, y = parse_quantity(a), parse_quantity(b)
    return (x > y) - (x < y)


# Kubernetes' quantity library, enough of it for our rules: a "quantity" is its text.
KUBERNETES_CEL_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "isQuantity": _is_quantity,
    "quantity": lambda text: text,
    "compareTo": _compare,
}


def failing_rules(schema: dict[str, Any], value: Any) -> list[str]:
    """Messages of the CRD rules `value` breaks, evaluated where the API server would."""
    failed = []
    for rule in schema.get("x-kubernetes-validations", []):
        context = cel.Context(variables={"self": value}, functions=KUBERNETES_CEL_FUNCTIONS)
        if cel.evaluate(rule["rule"], context) is not True:
            failed.append(rule["message"])
    if isinstance(value, dict):
        for key, sub in value.items():
            sub_schema = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            if isinstance(sub_schema, dict):
                failed += failing_rules(sub_schema, sub)
    elif isinstance(value, list) and "items" in schema:
        for sub in value:
            failed += failing_rules(schema["items"], sub)
    return failed


def changed(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = doc
    for part in parents:
        node = node[part]
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("name", "doc"),
    [("gangjobs.phalanx.dev.yaml", JOB), ("queues.phalanx.dev.yaml", QUEUE)],
    ids=["gangjob", "queue"],
)
def test_valid_objects_pass_every_cel_rule(name: str, doc: dict[str, Any]) -> None:
    assert failing_rules(schema_of(name), doc) == []


CEL_CASES = [
    pytest.param(
        JOB,
        "spec.podSets.1.name",
        "master",
        "podSets names must be unique",
        id="duplicate-pod-set-names",
    ),
    pytest.param(
        JOB,
        "spec.priorityClassName",
        "high",
        "set either priority or priorityClassName, not both",
        id="priority-and-priority-class",
    ),
    pytest.param(
        JOB,
        "spec.podSets.0.template.spec.resourceClaims.0.resourceClaimName",
        "shared",
        "exactly one of resourceClaimName and resourceClaimTemplateName must be set",
        id="claim-with-both-sources",
    ),
    pytest.param(
        JOB,
        "spec.podSets.1.template.spec.resourceClaims.0",
        {"name": "scratch"},
        "exactly one of resourceClaimName and resourceClaimTemplateName must be set",
        id="claim-with-no-source",
    ),
    pytest.param(
        QUEUE,
        "spec.parent",
        "team-a",
        "a queue cannot be its own parent",
        id="own-parent",
    ),
    pytest.param(
        QUEUE,
        "spec.quota.1.resource",
        "cpu",
        "quota resources must be unique",
        id="duplicate-quota-resource",
    ),
    pytest.param(
        QUEUE,
        "spec.quota.1.lendingLimit",
        "257Gi",
        "lendingLimit must not exceed nominal",
        id="lending-limit-above-nominal",
    ),
    pytest.param(
        QUEUE,
        "spec.quota.2.lendingLimit",
        9,
        "lendingLimit must not exceed nominal",
        id="integer-lending-limit-above-string-nominal",
    ),
    pytest.param(
        QUEUE,
        "spec.quota.2.resource",
        "devices/GPU",
        "the DeviceClass name after 'devices/' must be a DNS subdomain",
        id="device-class-not-dns-subdomain",
    ),
]


@pytest.mark.parametrize(("doc", "path", "value", "message"), CEL_CASES)
def test_cel_rule_and_model_reject_the_same_object(
    doc: dict[str, Any], path: str, value: Any, message: str
) -> None:
    bad = changed(doc, path, value)
    model = GangJob if bad["kind"] == "GangJob" else Queue
    name = "gangjobs.phalanx.dev.yaml" if model is GangJob else "queues.phalanx.dev.yaml"

    assert failing_rules(schema_of(name), bad) == [message]
    with pytest.raises(ValidationError):
        model.from_manifest(bad)


@pytest.mark.parametrize("name", CRD_FILES)
def test_schema_patterns_are_valid_regular_expressions(name: str) -> None:
    for path, node in schema_nodes(schema_of(name)):
        if "pattern" in node:
            re.compile(node["pattern"])
            assert "(?" not in node["pattern"], f"{path}: RE2 in the API server lacks lookarounds"


# What the API server will accept: bounds and CEL cost -----------------------------------


def unbounded(path: str, node: dict[str, Any]) -> str | None:
    """Why a list, map or string has no bound the API server can size it by, if so."""
    if node.get("type") == "array" and "maxItems" not in node:
        return f"{path}: list without maxItems"
    opaque_map = node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node
    if ("additionalProperties" in node or opaque_map) and "maxProperties" not in node:
        return f"{path}: map without maxProperties"
    is_string = node.get("type") == "string" or node.get("x-kubernetes-int-or-string")
    sized = "maxLength" in node or "enum" in node or node.get("format") == "date-time"
    if is_string and not sized:
        return f"{path}: string without maxLength"
    return None


@pytest.mark.parametrize("name", CRD_FILES)
def test_every_list_map_and_string_is_bounded(name: str) -> None:
    schema = schema_of(name)
    server_owned = {".apiVersion", ".kind", ".metadata"}
    problems = [
        problem
        for path, node in schema_nodes(schema)
        if path not in server_owned and (problem := unbounded(path, node))
    ]
    assert problems == []


@pytest.mark.parametrize("name", CRD_FILES)
def test_every_rule_costs_under_half_of_the_api_server_budgets(name: str) -> None:
    cost = schema_cost(schema_of(name))
    for rule in cost.rules:
        print(f"{name} {rule.path}: {rule.cost} ({rule.factor:.5f}x of {PER_RULE_COST_LIMIT})")
    print(f"{name} total: {cost.total} ({cost.factor:.5f}x of {CRD_COST_LIMIT})")

    assert cost.rules
    assert all(rule.cost <= PER_RULE_COST_LIMIT / 2 for rule in cost.rules)
    assert cost.total <= CRD_COST_LIMIT / 2


class _Item(ApiModel):
    name: Annotated[str, Field(max_length=63)]


class _CostlySpec(ApiModel):
    items: Annotated[
        list[_Item],
        Field(
            json_schema_extra=cel_rules(
                ("self.all(x, self.exists_one(y, y.name == x.name))", "names must be unique")
            )
        ),
    ] = []


class _Costly(ApiModel):
    spec: _CostlySpec


@pytest.fixture
def costly_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generation sees one more resource whose unbounded list makes its rule O(n^2)."""
    resource = crdgen._Resource(_Costly, "Costly", "costlies", (), "Cluster", "x", ())
    monkeypatch.setattr(crdgen, "RESOURCES", (*crdgen.RESOURCES, resource))


COSTLY_RULE = "openAPIV3Schema.properties[spec].properties[items].x-kubernetes-validations[0].rule"


@pytest.mark.usefixtures("costly_resource")
def test_generation_refuses_a_rule_over_budget_naming_it_and_its_factor() -> None:
    with pytest.raises(CrdBudgetError) as refused:
        render_crds()

    problems = refused.value.problems
    assert any(
        p.startswith(f"costlies.phalanx.dev: {COSTLY_RULE}: estimated cost ") for p in problems
    )
    assert any("x the per-rule limit" in p for p in problems)
    unbounded_list = "openAPIV3Schema.properties[spec].properties[items]: list without maxItems"
    assert f"costlies.phalanx.dev: {unbounded_list}" in problems


@pytest.mark.usefixtures("costly_resource")
def test_crds_check_command_fails_on_a_rule_over_budget(tmp_path: Path) -> None:
    result = invoke(["crds", "--check", "--out", str(tmp_path)], columns=400)

    assert result.exit_code == 1
    assert COSTLY_RULE in result.output


def test_generation_refuses_a_rule_the_server_would_accept_but_above_half_its_limit() -> None:
    # 150000 strings of at most 100 characters, each compared once: 42 * 150000 = 63%.
    items = {
        "type": "string",
        "maxLength": 100,
        "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}],
    }
    schema = {
        "type": "object",
        "properties": {"names": {"type": "array", "maxItems": 150000, "items": items}},
    }

    assert crdgen.budget_problems("x", schema) == [
        "x: openAPIV3Schema.properties[names].items.x-kubernetes-validations[0].rule: "
        "estimated cost 6300000 is 0.63x the per-rule limit 10000000 (42 per call x 150000); "
        "allowed 0.50x"
    ]
