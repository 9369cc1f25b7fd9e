"""Size limits (object sizes, a claim's reservedFor) and custom resource names as a real
API server enforces them.

None of these is in the recordings: the wording is the Kubernetes source's (see
emulator/GAPS.md, "Size limits" and "Custom resource names")."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest

from emulator.api import ETCD_MAX_REQUEST_BYTES
from emulator.dra import RESERVED_FOR_MAX
from emulator.http import MAX_REQUEST_BODY
from emulator.validation import DATA_MAX_BYTES, SUBDOMAIN_MSG
from tests.kube.client import MERGE, Client, Obj, allocation, claim, configmap, namespace, running
from tests.kube.controller_env import load_crds

pytestmark = pytest.mark.looptime

CMS = "/api/v1/namespaces/s/configmaps"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/s/resourceclaims"
SECRETS = "/api/v1/namespaces/s/secrets"
QUEUES = "/apis/phalanx.dev/v1alpha1/queues"
TOO_LONG = f"Too long: must have at most {DATA_MAX_BYTES} bytes"


@pytest.fixture
async def kube() -> AsyncIterator[Client]:
    async with running() as client:
        await client.ok("POST", "/api/v1/namespaces", namespace("s"))
        await load_crds(client.emulator)
        yield client


def data_of(size: int, keys: int = 1) -> dict[str, str]:
    """`keys` values of `size` bytes together."""
    each, rest = divmod(size, keys)
    return {f"k{i}": "x" * (each + (rest if i == 0 else 0)) for i in range(keys)}


def queue(name: str = "", **metadata: str) -> Obj:
    meta = {"name": name, **metadata} if name else dict(metadata)
    return {"apiVersion": "phalanx.dev/v1alpha1", "kind": "Queue", "metadata": meta, "spec": {}}


# --- ConfigMap and Secret data: 1 MiB ------------------------------------------------------


async def test_configmap_data_of_exactly_one_mebibyte_is_stored(kube: Client) -> None:
    await kube.ok("POST", CMS, {**configmap("full"), "data": data_of(DATA_MAX_BYTES, keys=4)})


async def test_configmap_data_over_one_mebibyte_is_refused_on_the_path_brackets(
    kube: Client,
) -> None:
    body = {**configmap("big"), "data": data_of(DATA_MAX_BYTES + 1, keys=4)}
    status, answer = await kube.call("POST", CMS, body)
    assert (status, answer["reason"]) == (422, "Invalid")
    assert answer["message"] == f'ConfigMap "big" is invalid: []: {TOO_LONG}'
    assert answer["details"]["causes"] == [
        {"reason": "FieldValueTooLong", "message": TOO_LONG, "field": "[]"}
    ]


async def test_configmap_limit_counts_values_not_keys(kube: Client) -> None:
    data = {"k" * 200: "x" * (DATA_MAX_BYTES - 1), "j" * 200: "y"}
    await kube.ok("POST", CMS, {**configmap("keys"), "data": data})


async def test_configmap_limit_counts_binary_data_decoded(kube: Client) -> None:
    binary = {"b": base64.b64encode(b"\0" * (DATA_MAX_BYTES // 2)).decode()}
    body = {**configmap("mixed"), "data": data_of(DATA_MAX_BYTES // 2 + 1), "binaryData": binary}
    status, answer = await kube.call("POST", CMS, body)
    assert (status, answer["details"]["causes"][0]["field"]) == (422, "[]")


async def test_configmap_update_over_the_limit_is_refused(kube: Client) -> None:
    await kube.ok("POST", CMS, {**configmap("grows"), "data": {"a": "x"}})
    patch = {"data": data_of(DATA_MAX_BYTES)}
    status, answer = await kube.call(
        "PATCH", f"{CMS}/grows", patch, content_type="application/merge-patch+json"
    )
    assert (status, answer["details"]["causes"][0]["message"]) == (422, TOO_LONG)


async def test_secret_data_over_one_mebibyte_decoded_is_refused_on_data(kube: Client) -> None:
    value = base64.b64encode(b"\1" * (DATA_MAX_BYTES + 1)).decode()
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"v": value}}
    status, answer = await kube.call("POST", SECRETS, body)
    assert status == 422
    assert answer["message"] == f'Secret "s" is invalid: data: {TOO_LONG}'


# --- request bodies: 3 MiB -----------------------------------------------------------------


async def test_request_body_over_three_mebibytes_is_refused_with_413(kube: Client) -> None:
    body = {**configmap("huge"), "data": data_of(MAX_REQUEST_BODY)}
    status, answer = await kube.call("POST", CMS, body)
    assert (status, answer["reason"], answer["code"]) == (413, "RequestEntityTooLarge", 413)
    assert answer["message"] == f"Request entity too large: limit is {MAX_REQUEST_BODY}"


# --- etcd: 1.5 MiB a write -----------------------------------------------------------------


def owned_configmap(name: str, stored_bytes: int) -> Obj:
    """A ConfigMap of 1 MiB of data and as many ownerReferences as bring it to about
    `stored_bytes` as JSON (the stored object adds a few hundred bytes of metadata)."""
    body = {**configmap(name), "data": data_of(DATA_MAX_BYTES)}
    owners = body["metadata"]["ownerReferences"] = []
    size = len(json.dumps(body, separators=(",", ":")))
    while size < stored_bytes:
        i = len(owners)
        owners.append({"apiVersion": "v1", "kind": "Pod", "name": f"p-{i}", "uid": f"uid-{i:032d}"})
        size += len(json.dumps(owners[-1], separators=(",", ":"))) + 1
    return body


async def test_object_over_etcds_request_limit_fails_with_500(kube: Client) -> None:
    """Under the 3 MiB body limit and the 1 MiB data limit, but over etcd's 1.5 MiB: the
    API server passes etcd's error on, without a reason."""
    body = owned_configmap("heavy", ETCD_MAX_REQUEST_BYTES + 20_000)
    status, answer = await kube.call("POST", CMS, body)
    assert (status, answer["message"], answer["code"]) == (
        500,
        "etcdserver: request is too large",
        500,
    )
    assert "reason" not in answer


async def test_object_under_etcds_request_limit_is_stored(kube: Client) -> None:
    await kube.ok("POST", CMS, owned_configmap("lighter", ETCD_MAX_REQUEST_BYTES - 20_000))


async def test_update_that_grows_an_object_over_etcds_limit_fails(kube: Client) -> None:
    body = owned_configmap("growing", ETCD_MAX_REQUEST_BYTES - 20_000)
    stored = await kube.ok("POST", CMS, body)
    stored["metadata"]["annotations"] = {"a": "x" * 40_000}
    status, answer = await kube.call("PUT", f"{CMS}/growing", stored)
    assert (status, answer["message"]) == (500, "etcdserver: request is too large")


# --- custom resource names -----------------------------------------------------------------


async def test_custom_resource_name_must_be_a_dns_subdomain(kube: Client) -> None:
    status, answer = await kube.call("POST", QUEUES, queue("Bad_Name"))
    assert (status, answer["reason"]) == (422, "Invalid")
    detail = f'Invalid value: "Bad_Name": {SUBDOMAIN_MSG}'
    assert answer["message"] == f'Queue.phalanx.dev "Bad_Name" is invalid: metadata.name: {detail}'
    assert answer["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": detail, "field": "metadata.name"}
    ]


async def test_custom_resource_name_over_253_characters_says_so(kube: Client) -> None:
    name = "q" * 254
    status, answer = await kube.call("POST", QUEUES, queue(name))
    assert status == 422
    assert [c["message"] for c in answer["details"]["causes"]] == [
        f'Invalid value: "{name}": must be no more than 253 characters'
    ]


async def test_custom_resource_needs_a_name_or_generate_name(kube: Client) -> None:
    status, answer = await kube.call("POST", QUEUES, queue())
    assert status == 422
    assert answer["message"] == (
        'Queue.phalanx.dev "" is invalid: '
        "metadata.name: Required value: name or generateName is required"
    )


async def test_custom_resource_generate_name_ending_in_a_dash_is_valid(kube: Client) -> None:
    created = await kube.ok("POST", QUEUES, queue(generateName="team-"))
    name = created["metadata"]["name"]
    assert name.startswith("team-") and len(name) == len("team-") + 5


async def test_invalid_generate_name_is_reported_with_the_name_made_from_it(
    kube: Client,
) -> None:
    status, answer = await kube.call("POST", QUEUES, queue(generateName="Team-"))
    assert status == 422
    assert [c["field"] for c in answer["details"]["causes"]] == [
        "metadata.generateName",
        "metadata.name",
    ]
    assert answer["details"]["causes"][0]["message"] == f'Invalid value: "Team-": {SUBDOMAIN_MSG}'


async def test_long_generate_name_is_cut_to_58_characters_before_the_suffix(
    kube: Client,
) -> None:
    created = await kube.ok("POST", QUEUES, queue(generateName="g" * 80))
    name = created["metadata"]["name"]
    assert len(name) == 63 and name.startswith("g" * 58)


def consumers(count: int) -> list[Obj]:
    return [
        {"resource": "pods", "name": f"p{i}", "uid": f"0a1b2c3d-0000-4000-8000-{i:012d}"}
        for i in range(count)
    ]


async def reserve(kube: Client, reserved: list[Obj]) -> tuple[int, Obj]:
    await kube.ok("POST", CLAIMS, claim("c1"))
    body = {"status": {"allocation": allocation("n1"), "reservedFor": reserved}}
    return await kube.call("PATCH", f"{CLAIMS}/c1/status", body, content_type=MERGE)


async def test_a_claim_may_be_reserved_for_256_consumers(kube: Client) -> None:
    status, answer = await reserve(kube, consumers(RESERVED_FOR_MAX))
    assert status == 200
    assert len(answer["status"]["reservedFor"]) == RESERVED_FOR_MAX


async def test_a_claim_reserved_for_257_consumers_is_invalid(kube: Client) -> None:
    status, answer = await reserve(kube, consumers(RESERVED_FOR_MAX + 1))
    assert (status, answer["reason"]) == (422, "Invalid")
    assert answer["details"]["causes"] == [
        {
            "reason": "FieldValueTooMany",
            "message": "Too many: 257: must have at most 256 items",
            "field": "status.reservedFor",
        }
    ]


async def test_a_consumer_named_twice_in_reserved_for_is_a_duplicate(kube: Client) -> None:
    twice = consumers(1) * 2
    status, answer = await reserve(kube, twice)
    assert status == 422
    assert answer["details"]["causes"] == [
        {
            "reason": "FieldValueDuplicate",
            "message": f'Duplicate value: "{twice[0]["uid"]}"',
            "field": "status.reservedFor[1]",
        }
    ]


async def test_a_consumer_without_a_uid_is_refused(kube: Client) -> None:
    status, answer = await reserve(kube, [{"resource": "pods", "name": "p0"}])
    assert status == 422
    assert "status.reservedFor[0].uid: Required value" in answer["message"]
