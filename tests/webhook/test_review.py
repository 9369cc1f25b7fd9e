"""AdmissionReview v1 in and out, and field errors printed as Kubernetes prints them."""

from __future__ import annotations

import base64
import json

import pytest

from controller.webhook.review import (
    ReviewError,
    allow,
    forbidden,
    invalid,
    invalid_at,
    not_found,
    parse,
    pointer,
    refuse,
    required,
    response,
    too_many,
)


def review(**request: object) -> dict[str, object]:
    base = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "phalanx.dev", "version": "v1alpha1", "kind": "GangJob"},
        "resource": {"group": "phalanx.dev", "version": "v1alpha1", "resource": "gangjobs"},
        "name": "train",
        "namespace": "team-a",
        "operation": "CREATE",
        "userInfo": {"username": "alice"},
        "object": {"metadata": {"name": "train"}},
        "oldObject": None,
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": base | request,
    }


def test_a_review_is_read_into_a_request() -> None:
    request = parse(review())
    assert (request.operation, request.group, request.kind, request.resource) == (
        "CREATE",
        "phalanx.dev",
        "GangJob",
        "gangjobs",
    )
    assert (request.name, request.namespace, request.username) == ("train", "team-a", "alice")
    assert request.old_object is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "expected a JSON object"),
        (
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"},
            "expected apiVersion",
        ),
        (review(uid=""), "request.uid is missing"),
        (review(operation="PATCH"), "request.operation must be one of"),
        (review(object=[1]), "request.object must be an object"),
    ],
)
def test_what_is_not_an_admission_review_is_refused_with_the_reason(
    body: object, problem: str
) -> None:
    with pytest.raises(ReviewError, match=problem):
        parse(body)


def test_field_errors_print_as_apimachinery_prints_them() -> None:
    assert str(not_found(("spec", "queueName"), "q")) == 'spec.queueName: Not found: "q"'
    assert str(invalid(("spec", "podSets", 0, "replicas"), 0, "must be >= 1")) == (
        "spec.podSets[0].replicas: Invalid value: 0: must be >= 1"
    )
    assert str(invalid_at(("spec", "podSets", 1), "too big")) == (
        "spec.podSets[1]: Invalid value: too big"
    )
    assert str(forbidden(("spec", "nodeName"), "no")) == "spec.nodeName: Forbidden: no"
    assert str(required(("metadata", "labels", "phalanx.dev/queue"))) == (
        "metadata.labels[phalanx.dev/queue]: Required value"
    )
    assert str(too_many(("spec", "podSets"), 12, "pods")) == "spec.podSets: Too many: 12: pods"


def test_a_refusal_of_content_is_422_invalid_with_causes() -> None:
    errors = [not_found(("spec", "queueName"), "q"), invalid(("spec", "x"), "y", "bad")]
    answer = response("u1", refuse(errors), parse(review()))["response"]
    assert answer["allowed"] is False
    assert answer["status"] == {
        "status": "Failure",
        "message": '[spec.queueName: Not found: "q", spec.x: Invalid value: "y": bad]',
        "reason": "Invalid",
        "code": 422,
        "details": {
            "name": "train",
            "group": "phalanx.dev",
            "kind": "gangjobs",
            "causes": [
                {
                    "reason": "FieldValueNotFound",
                    "message": 'Not found: "q"',
                    "field": "spec.queueName",
                },
                {
                    "reason": "FieldValueInvalid",
                    "message": 'Invalid value: "y": bad',
                    "field": "spec.x",
                },
            ],
        },
    }


def test_a_policy_refusal_is_403_forbidden() -> None:
    verdict = refuse([forbidden(("spec", "queueName"), "not yours")])
    assert (verdict.code, verdict.reason) == (403, "Forbidden")


def test_an_allowed_mutation_carries_a_base64_json_patch() -> None:
    patch = [{"op": "add", "path": pointer("metadata", "labels", "phalanx.dev/gang"), "value": "g"}]
    answer = response("u1", allow(patch, ["note"]))
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    body = answer["response"]
    assert (body["uid"], body["allowed"], body["patchType"], body["warnings"]) == (
        "u1",
        True,
        "JSONPatch",
        ["note"],
    )
    assert json.loads(base64.b64decode(body["patch"])) == [
        {"op": "add", "path": "/metadata/labels/phalanx.dev~1gang", "value": "g"}
    ]
