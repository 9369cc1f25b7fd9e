"""Pod mutation and bypass rules, without HTTP: GPU pods in managed namespaces are
Phalanx's, and stay in their gang."""

from __future__ import annotations

import copy

from controller.kube.foreign import Group, gang_size, group_of
from controller.webhook import pods
from controller.webhook.review import Verdict
from emulator.patch import json_patch
from tests.webhook.cluster import cluster_of, namespace, pod, queue, request, small_cluster

Obj = dict[str, object]


def mutated(obj: Obj, verdict: Verdict) -> Obj:
    """The pod as the API server stores it after applying the webhook's patch."""
    assert verdict.allowed
    return json_patch(obj, list(verdict.patch))  # type: ignore[no-any-return]


def test_a_gpu_pod_becomes_a_one_pod_gang_charged_to_the_namespace_s_queue() -> None:
    gpu_pod = pod("trainer", "team-a", gpus=1)
    verdict = pods.mutate(request(gpu_pod), small_cluster(), {"team": "a"})
    after = mutated(gpu_pod, verdict)
    assert after["spec"]["schedulerName"] == "phalanx"  # type: ignore[index]
    assert after["metadata"]["labels"] == {  # type: ignore[index]
        "phalanx.dev/gang": "pod.trainer",
        "phalanx.dev/queue": "team-a",
    }
    assert after["metadata"]["annotations"] == {"phalanx.dev/gang-size": "1"}  # type: ignore[index]
    assert verdict.warnings == ("scheduled by Phalanx as a one-pod gang, charged to queue team-a",)


def test_the_mutated_pod_is_what_the_foreign_gang_code_admits_as_a_gang_of_one() -> None:
    after = mutated(
        pod("trainer", "team-a", claim=True),
        pods.mutate(request(pod("trainer", "team-a", claim=True)), small_cluster(), {"team": "a"}),
    )
    group = group_of(after)
    assert group == Group("team-a", "gang", "pod.trainer")
    assert gang_size(group, [after], None) == 1


def test_a_pod_with_a_dra_claim_is_mutated_like_a_gpu_pod() -> None:
    verdict = pods.mutate(request(pod(claim=True)), small_cluster(), {})
    assert {"op": "add", "path": "/spec/schedulerName", "value": "phalanx"} in verdict.patch


def test_a_pod_without_gpus_is_left_to_the_default_scheduler() -> None:
    verdict = pods.mutate(request(pod()), small_cluster(), {})
    assert verdict.allowed and not verdict.patch


def test_a_gpu_pod_in_a_namespace_no_queue_takes_is_left_alone() -> None:
    only_team_a = queue("team-a", cpu="8")
    only_team_a["spec"]["namespaceSelector"] = {"matchLabels": {"team": "a"}}
    cluster = cluster_of(namespace("other"), only_team_a)
    verdict = pods.mutate(request(pod(namespace="other", gpus=1)), cluster, {})
    assert verdict.allowed and not verdict.patch
    assert pods.validate(request(pod(namespace="other", gpus=1)), cluster, {}).allowed


def test_a_pod_already_in_a_gang_keeps_its_gang_and_gets_only_the_queue() -> None:
    member = pod(
        "w-0",
        "team-a",
        gpus=1,
        scheduler="phalanx",
        labels={"phalanx.dev/gang": "job"},
        annotations={"phalanx.dev/gang-size": "4"},
    )
    verdict = pods.mutate(request(member), small_cluster(), {"team": "a"})
    assert list(verdict.patch) == [
        {"op": "add", "path": "/metadata/labels/phalanx.dev~1queue", "value": "team-a"}
    ]


def test_a_long_pod_name_gives_a_valid_gang_label() -> None:
    name = "x" * 200
    gang = pods.gang_name({"metadata": {"name": name}}, "uid-1")
    assert len(gang) <= 63 and gang.startswith("pod.xxx")
    assert gang != pods.gang_name({"metadata": {"name": name + "y"}}, "uid-1")


def test_a_generate_name_pod_gets_a_gang_label_from_its_request() -> None:
    first = pods.gang_name({"metadata": {"generateName": "worker-"}}, "uid-1")
    second = pods.gang_name({"metadata": {"generateName": "worker-"}}, "uid-2")
    assert first.startswith("pod.worker-") and first != second


def test_a_namespace_served_by_two_queues_needs_the_pod_to_choose() -> None:
    twin = queue("team-a-2", cpu="4")
    twin["spec"] |= {"parent": "teams", "namespaceSelector": {"matchLabels": {"team": "a"}}}
    cluster = small_cluster(twin)
    gpu_pod = pod("trainer", "team-a", gpus=1)
    after = mutated(gpu_pod, pods.mutate(request(gpu_pod), cluster, {"team": "a"}))
    verdict = pods.validate(request(after), cluster, {"team": "a"})
    assert verdict.text == (
        "metadata.labels[phalanx.dev/queue]: Required value: queues q, team-a, team-a-2 take "
        "pods from namespace team-a: label the pod phalanx.dev/queue=<one of them>"
    )


def test_a_gpu_pod_that_names_its_node_is_refused_with_how_to_submit() -> None:
    bypass = pod("trainer", "team-a", gpus=1, nodeName="n0")
    cluster = small_cluster()
    assert not pods.mutate(request(bypass), cluster, {"team": "a"}).patch
    verdict = pods.validate(request(bypass), cluster, {"team": "a"})
    assert (verdict.code, verdict.reason) == (403, "Forbidden")
    assert verdict.text == (
        "spec.nodeName: Forbidden: a pod that requests GPUs or DRA devices in namespace "
        "team-a may not choose its node: Phalanx places it within its queue's quota; leave "
        "spec.schedulerName and spec.nodeName unset (use a nodeSelector to narrow placement) "
        "and Phalanx schedules the pod as a one-pod gang, or submit a GangJob"
    )


def test_a_gpu_pod_that_names_another_scheduler_is_refused() -> None:
    bypass = pod("trainer", "team-a", gpus=1, scheduler="volcano")
    verdict = pods.validate(request(bypass), small_cluster(), {"team": "a"})
    assert verdict.text.startswith(
        "spec.schedulerName: Forbidden: pods that request GPUs or DRA devices in namespace "
        "team-a are scheduled by phalanx, not volcano; leave spec.schedulerName"
    )


def test_a_phalanx_pod_naming_another_tenant_s_queue_is_forbidden() -> None:
    intruder = pod(
        "trainer",
        "team-a",
        gpus=1,
        scheduler="phalanx",
        labels={"phalanx.dev/gang": "g", "phalanx.dev/queue": "team-b"},
        annotations={"phalanx.dev/gang-size": "1"},
    )
    verdict = pods.validate(request(intruder), small_cluster(), {"team": "a"})
    assert verdict.text == (
        "metadata.labels[phalanx.dev/queue]: Forbidden: queue team-b does not take pods from "
        "namespace team-a (its namespaceSelector does not match); queues that do: q, team-a"
    )


def test_a_gang_pod_without_a_valid_size_is_refused() -> None:
    member = pod(
        "w-0",
        scheduler="phalanx",
        labels={"phalanx.dev/gang": "job", "phalanx.dev/queue": "q"},
        annotations={"phalanx.dev/gang-size": "four"},
    )
    verdict = pods.validate(request(member), small_cluster(), {})
    assert verdict.text == (
        'metadata.annotations[phalanx.dev/gang-size]: Invalid value: "four": must be a '
        "positive integer: the number of pods in the gang"
    )


def test_removing_the_gang_label_of_a_phalanx_pod_is_forbidden() -> None:
    old = pod(
        "w-0",
        scheduler="phalanx",
        labels={"phalanx.dev/gang": "pod.w-0", "phalanx.dev/queue": "q"},
        annotations={"phalanx.dev/gang-size": "1"},
    )
    new = copy.deepcopy(old)
    del new["metadata"]["labels"]["phalanx.dev/gang"]  # type: ignore[attr-defined]
    verdict = pods.validate(request(new, "UPDATE", old), small_cluster(), {})
    assert verdict.text == (
        "metadata.labels[phalanx.dev/gang]: Forbidden: the gang labels of a pod scheduled by "
        "Phalanx cannot change once it exists (it would leave its gang's quota while it "
        "runs); delete the pod and create it again"
    )


def test_other_label_changes_of_a_phalanx_pod_are_allowed() -> None:
    old = pod("w-0", scheduler="phalanx", labels={"phalanx.dev/gang": "g", "app": "a"})
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["app"] = "b"  # type: ignore[index]
    new["metadata"]["finalizers"] = []  # type: ignore[index]
    assert pods.validate(request(new, "UPDATE", old), small_cluster(), {}).allowed


def test_mirror_pods_of_static_pods_are_exempt() -> None:
    mirror = pod("etcd-n0", gpus=1, nodeName="n0", annotations={"kubernetes.io/config.mirror": "x"})
    assert pods.validate(request(mirror), small_cluster(), {}).allowed


def test_a_gangjob_s_pod_is_only_checked_for_its_scheduler() -> None:
    owned = pod("train-w-0", gpus=1, scheduler="default-scheduler")
    owned["metadata"]["ownerReferences"] = [  # type: ignore[index]
        {
            "apiVersion": "phalanx.dev/v1alpha1",
            "kind": "GangJob",
            "name": "t",
            "uid": "u",
            "controller": True,
        }
    ]
    assert not pods.mutate(request(owned), small_cluster(), {}).patch
    verdict = pods.validate(request(owned), small_cluster(), {})
    assert verdict.errors[0].field == "spec.schedulerName"
