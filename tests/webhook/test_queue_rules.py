"""Queue admission rules, without HTTP: the queues stay a tree."""

from __future__ import annotations

import copy

from controller.webhook import queue as rules
from controller.webhook.queue import MAX_DEPTH
from tests.webhook.cluster import cluster_of, namespace, queue, request, small_cluster


def child(name: str, parent: str, **quota: str) -> dict[str, object]:
    q = queue(name, **quota)
    q["spec"]["parent"] = parent
    return q


def test_a_queue_under_an_existing_parent_is_allowed() -> None:
    verdict = rules.validate(request(child("team-c", "teams", cpu="2")), small_cluster())
    assert verdict.allowed


def test_a_queue_whose_parent_does_not_exist_is_refused() -> None:
    verdict = rules.validate(request(child("team-c", "nowhere")), small_cluster())
    assert verdict.text == ('spec.parent: Not found: "nowhere": create the parent queue first')


def test_moving_a_queue_under_its_own_descendant_would_close_a_cycle() -> None:
    cluster = small_cluster()
    old = cluster.queues["teams"]
    moved = copy.deepcopy(old)
    moved["spec"]["parent"] = "team-a"
    verdict = rules.validate(request(moved, "UPDATE", old), cluster)
    assert verdict.text == (
        'spec.parent: Invalid value: "team-a": would close a queue cycle: teams -> team-a -> teams'
    )


def test_a_queue_under_parents_that_already_form_a_cycle_is_refused() -> None:
    cluster = cluster_of(namespace("default"), child("a", "b"), child("b", "a"))
    verdict = rules.validate(request(child("c", "a")), cluster)
    assert verdict.text == (
        'spec.parent: Invalid value: "a": its ancestors form a queue cycle: a -> b -> a'
    )


def test_an_unknown_quota_resource_is_refused_with_what_is_allowed() -> None:
    verdict = rules.validate(request(queue("q2", **{"gpus": "4"})), small_cluster())
    assert verdict.text.startswith(
        "spec.quota[0].resource: Invalid value: unknown quota resource: use cpu, memory, "
        "pods, ephemeral-storage, an extended resource with a domain such as nvidia.com/gpu, "
        "or devices/<deviceClassName>"
    )


def test_a_kubernetes_io_resource_is_not_an_extended_resource() -> None:
    verdict = rules.validate(request(queue("q2", **{"kubernetes.io__gpu": "4"})), small_cluster())
    assert "the kubernetes.io domain is Kubernetes' own" in verdict.text


def test_extended_and_device_quota_resources_are_allowed() -> None:
    q = queue("q2", **{"nvidia.com__gpu": "4", "devices__gpu": "8", "cpu": "1"})
    verdict = rules.validate(request(q), small_cluster())
    assert verdict.allowed and not verdict.warnings


def test_quota_for_a_device_class_that_does_not_exist_yet_is_allowed_with_a_warning() -> None:
    verdict = rules.validate(request(queue("q2", **{"devices__tpu": "8"})), small_cluster())
    assert verdict.allowed
    assert verdict.warnings == (
        "spec.quota[0].resource: DeviceClass tpu does not exist (yet); "
        "this quota limits nothing until it does",
    )


def test_deleting_a_queue_with_children_is_forbidden() -> None:
    cluster = small_cluster()
    verdict = rules.validate(request(None, "DELETE", cluster.queues["teams"]), cluster)
    assert (verdict.code, verdict.text) == (
        403,
        "Forbidden: queue teams is the parent of team-a, team-b: deleting it would orphan "
        "them; delete them or set another spec.parent first",
    )


def test_deleting_a_leaf_queue_is_allowed() -> None:
    cluster = small_cluster()
    verdict = rules.validate(request(None, "DELETE", cluster.queues["team-a"]), cluster)
    assert verdict.allowed


def test_a_status_or_metadata_update_passes_even_in_a_broken_tree() -> None:
    cluster = cluster_of(namespace("default"), child("a", "b"), child("b", "a"))
    old = cluster.queues["a"]
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"x": "y"}
    assert rules.validate(request(new, "UPDATE", old), cluster).allowed


def test_a_tree_deeper_than_the_limit_is_refused() -> None:
    chain = [queue("level-1")] + [child(f"level-{i}", f"level-{i - 1}") for i in range(2, 17)]
    cluster = cluster_of(namespace("default"), *chain)
    verdict = rules.validate(request(child("level-17", "level-16")), cluster)
    assert verdict.text == (
        f'spec.parent: Invalid value: "level-16": the queue tree would be 17 levels deep; '
        f"at most {MAX_DEPTH} are allowed"
    )


def test_moving_a_deep_subtree_under_another_queue_counts_its_height() -> None:
    chain = [queue("level-1")] + [child(f"level-{i}", f"level-{i - 1}") for i in range(2, 14)]
    other = [queue("top"), child("mid", "top"), child("low", "mid"), child("lower", "low")]
    cluster = cluster_of(namespace("default"), *chain, *other)
    old = cluster.queues["level-1"]
    moved = copy.deepcopy(old)
    moved["spec"]["parent"] = "lower"
    verdict = rules.validate(request(moved, "UPDATE", old), cluster)
    assert verdict.text.startswith(
        'spec.parent: Invalid value: "lower": the queue tree would be 17 levels deep'
    )
