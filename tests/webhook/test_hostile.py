"""Hostile input to the webhook's rules: huge gangs, huge templates, deep queue trees,
unicode and overlong names, shapes no API server would pass. Each is refused with a
reason at a field, or handled; none raises."""

from __future__ import annotations

import copy
import re

import pytest

from controller.engine.state import ClusterState
from controller.webhook import gangjob, pods
from controller.webhook import queue as queue_rules
from controller.webhook.cluster import Cluster
from controller.webhook.queue import MAX_DEPTH
from emulator.patch import json_patch
from tests.webhook.cluster import gang_job, pod, queue, request, small_cluster


def test_ten_thousand_pods_in_one_pod_set_are_refused_by_the_replica_bound() -> None:
    job = gang_job("huge", [("worker", 10_000)])
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text == "spec.podSets[0].replicas: Invalid value: must be <= 4096 (got 10000)"


def test_ten_thousand_pods_across_pod_sets_are_judged_and_refused_as_never_fitting() -> None:
    job = gang_job("huge", [("a", 3334), ("b", 3334), ("c", 3334)], cpu="1m")
    verdict = gangjob.validate(request(job), small_cluster(queue("big", cpu="100")), {})
    assert not verdict.allowed
    assert "can never fit" in verdict.text


def test_a_one_mebibyte_template_is_judged_like_any_other() -> None:
    job = gang_job("fat", [("worker", 2)])
    container = job["spec"]["podSets"][0]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "BLOB", "value": "x" * (1 << 20)}]
    assert gangjob.validate(request(job), small_cluster(), {}).allowed


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("queueName", "队列", "spec.queueName: Invalid value: must be a DNS subdomain"),
        ("queueName", "q" * 300, "spec.queueName: Invalid value: must be a DNS subdomain"),
        ("podSets", "all of them", "spec.podSets: Invalid value: must be a list"),
    ],
)
def test_unicode_overlong_and_malformed_fields_are_refused_at_their_field(
    field: str, value: object, message: str
) -> None:
    job = gang_job("train", [("worker", 2)])
    job["spec"][field] = value
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text.startswith(message)


def test_a_unicode_job_name_is_refused_at_metadata_name() -> None:
    job = gang_job("train", [("worker", 2)])
    job["metadata"]["name"] = "тренировка"
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text.startswith("metadata.name: Invalid value:")


def test_a_quantity_that_is_not_one_is_refused_at_its_field() -> None:
    job = gang_job("train", [("worker", 2)], cpu="lots")
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.errors[0].field.startswith("spec.podSets[0].template.spec.containers[0]")


def chain(length: int) -> dict[str, dict[str, object]]:
    queues = {"level-1": queue("level-1")}
    for i in range(2, length + 1):
        queues[f"level-{i}"] = queue(f"level-{i}")
        queues[f"level-{i}"]["spec"]["parent"] = f"level-{i - 1}"
    return queues  # type: ignore[return-value]


def test_a_queue_under_a_ten_thousand_level_chain_is_refused_without_walking_it_all() -> None:
    queues = chain(10_000)
    cluster = Cluster(ClusterState(), queues, {})
    leaf = queue("leaf")
    leaf["spec"]["parent"] = "level-10000"
    verdict = queue_rules.validate(request(leaf), cluster)
    assert verdict.text == (
        f'spec.parent: Invalid value: "level-10000": the queue tree would be more than '
        f"{MAX_DEPTH} levels deep; at most {MAX_DEPTH} are allowed"
    )


def test_a_queue_cycle_of_ten_thousand_is_reported_not_followed_for_ever() -> None:
    queues = chain(10_000)
    queues["level-1"]["spec"]["parent"] = "level-10000"  # type: ignore[index]
    cluster = Cluster(ClusterState(), queues, {})
    leaf = queue("leaf")
    leaf["spec"]["parent"] = "level-5"
    verdict = queue_rules.validate(request(leaf), cluster)
    assert not verdict.allowed


def test_pods_with_overlong_unicode_names_get_a_valid_gang_label() -> None:
    name = "поезд-" * 50
    verdict = pods.mutate(request(pod(name, gpus=1)), small_cluster(), {})
    after = json_patch(pod(name, gpus=1), list(verdict.patch))
    gang = after["metadata"]["labels"]["phalanx.dev/gang"]
    assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", gang)


def test_a_pod_of_shapes_the_api_server_would_never_pass_is_not_a_crash() -> None:
    odd = pod("odd", gpus=1)
    broken = copy.deepcopy(odd)
    broken["spec"]["containers"] = ["not a container", {"resources": ["nor", "this"]}]
    assert pods.needs_devices(broken) is False
    assert pods.mutate(request(broken), small_cluster(), {}).allowed
