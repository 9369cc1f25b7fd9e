"""The controller's largest writes fit what a real API server stores (emulator/GAPS.md,
"Size limits"): a ConfigMap's data at most 1 MiB, a request body at most 3 MiB, an object
at most etcd's 1.5 MiB. The commit point of a gang is one write, so a record that does not
fit would leave a big gang never admitted, its commit failing on every try.

The gangs are those of `tests/kube/big_records.py` (pods of one claim each, each pod on a
node of its own, names of real lengths). The largest GangJob the API allows is what the
CRD's bounds (16 pod sets of 4,096) and the webhook's record estimate let through; a
foreign gang is bounded by the controller's own estimate (controller/kube/record_size.py),
which refuses it before anything is reserved."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator

import pytest

from controller.kube import foreign as f
from controller.kube.commit import write_admission
from controller.kube.foreign_commit import write_record
from controller.kube.resources import GANG_JOBS
from controller.kube.rest import KubeError, Rest
from controller.kube.translate import admission_record
from emulator import Emulator
from tests.kube import big_records as big
from tests.kube.controller_env import load_crds, rest_client

pytestmark = pytest.mark.looptime


@pytest.fixture
async def rest() -> AsyncIterator[Rest]:
    """The controller's client, on an emulator serving our CRDs (no controllers: the
    record's owners need not exist)."""
    async with Emulator() as emulator, rest_client(emulator) as kube:
        await load_crds(emulator)
        namespace = {"apiVersion": "v1", "kind": "Namespace"}
        body = {**namespace, "metadata": {"name": big.NAMESPACE}}
        await kube.request("POST", "/api/v1/namespaces", body=body)
        yield kube


async def created_job(rest: Rest, pods: int, devices: int) -> big.Obj:
    return await rest.request(
        "POST", GANG_JOBS.path(big.NAMESPACE), body=big.gang_job(pods, devices)
    )


# --- GangJob status.admission --------------------------------------------------------------


@pytest.mark.parametrize("devices", [1, 8])
async def test_the_admission_of_a_2048_pod_gang_job_is_stored(rest: Rest, devices: int) -> None:
    job = await created_job(rest, 2048, devices)
    record = big.gang_job_record(2048, devices)
    written = await write_admission(rest, job, record, {"phase": "Admitted"})
    assert written["status"]["admission"] == record


@pytest.mark.parametrize("devices", [1, 8])
async def test_the_admission_of_the_largest_gang_job_the_api_allows_is_stored(
    rest: Rest, devices: int
) -> None:
    """The largest: the CRD's 16 pod sets of 4,096 pods, cut down by the webhook to what
    its estimate of the record keeps within `RECORD_BUDGET` (4,903 one-GPU pods, 3,021
    eight-GPU pods with these names)."""
    pods = big.largest_gang_job(devices)
    assert pods > 2048
    job = await created_job(rest, pods, devices)
    record = big.gang_job_record(pods, devices)
    written = await write_admission(rest, job, record, {"phase": "Admitted"})
    assert sum(len(ps["pods"]) for ps in written["status"]["admission"]["podSets"]) == pods


async def test_the_admission_of_2048_eight_gpu_pods_in_full_would_not_fit_in_etcd(
    rest: Rest,
) -> None:
    """Why the written record gives a claim's shared device fields once."""
    job = await created_job(rest, 2048, 8)
    full = admission_record(big.reservation(2048, 8), "a" * 16)
    with pytest.raises(KubeError) as refused:
        await write_admission(rest, job, full)
    assert (refused.value.status, refused.value.message) == (
        500,
        "etcdserver: request is too large",
    )


# --- foreign gangs: the record ConfigMap ---------------------------------------------------


@pytest.mark.parametrize(("pods", "devices"), [(2048, 1), (2048, 8), (4096, 8)])
async def test_the_record_of_a_big_foreign_gang_is_stored_and_read_back(
    rest: Rest, pods: int, devices: int
) -> None:
    written, manifest = big.foreign_record(pods, devices)
    stored = await write_record(rest, manifest, replacing=False)
    assert f.read_record(stored) == written


async def test_the_record_of_2048_eight_gpu_pods_as_plain_json_would_not_fit_a_config_map(
    rest: Rest,
) -> None:
    """Why the record is packed."""
    written, manifest = big.foreign_record(2048, 8)
    manifest["data"] = {f.RECORD_KEY: json.dumps(written, sort_keys=True)}
    with pytest.raises(KubeError) as refused:
        await write_record(rest, manifest, replacing=False)
    assert refused.value.status == 422
    assert refused.value.message.endswith("[]: Too long: must have at most 1048576 bytes")


@functools.cache
def largest_foreign_gang() -> int:
    """The most eight-GPU pods a foreign gang may have on a cluster of 5,000 such nodes
    before the controller refuses it as too large to record."""
    return big.largest_foreign_gang(8, big.foreign_cluster(5000))


async def test_the_record_of_the_largest_foreign_gang_the_controller_accepts_is_stored(
    rest: Rest,
) -> None:
    pods = largest_foreign_gang()
    assert pods > 4096
    written, manifest = big.foreign_record(pods, 8)
    stored = await write_record(rest, manifest, replacing=False)
    assert f.read_record(stored) == written


async def test_the_record_of_a_foreign_gang_a_percent_larger_would_not_be_stored(
    rest: Rest,
) -> None:
    """The controller's refusal costs no gang the API server would store but the largest
    one percent."""
    _, manifest = big.foreign_record(largest_foreign_gang() * 101 // 100, 8)
    with pytest.raises(KubeError) as refused:
        await write_record(rest, manifest, replacing=False)
    assert (refused.value.status, refused.value.message) == (
        500,
        "etcdserver: request is too large",
    )
