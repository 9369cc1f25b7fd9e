"""GangJob admission rules, without HTTP: what the CRD schema cannot say."""

from __future__ import annotations

import copy

from controller.engine.model import Gang
from controller.kube import translate
from controller.webhook import gangjob
from tests.webhook.cluster import (
    cluster_of,
    gang_job,
    namespace,
    one_gpu_template,
    one_slot_node,
    queue,
    request,
    small_cluster,
)


def job_in(ns: str, name: str = "train", **kwargs: object) -> dict[str, object]:
    job = gang_job(name, [("worker", 2)], **kwargs)  # type: ignore[arg-type]
    job["metadata"]["namespace"] = ns
    return job


def test_a_job_that_fits_its_queue_and_the_cluster_is_allowed() -> None:
    verdict = gangjob.validate(request(gang_job("train", [("w", 2)])), small_cluster(), {})
    assert verdict.allowed


def test_a_job_naming_no_existing_queue_is_refused_with_the_queues_it_could_use() -> None:
    job = gang_job("train", [("w", 2)], queue_name="nope")
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert (verdict.allowed, verdict.code, verdict.reason) == (False, 422, "Invalid")
    assert verdict.text == (
        'spec.queueName: Not found: "nope": no Queue named nope; '
        "queues that take jobs from namespace default: q"
    )


def test_a_job_naming_an_inner_queue_is_refused_because_only_leaves_take_jobs() -> None:
    job = gang_job("train", [("w", 2)], queue_name="teams")
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text.startswith(
        'spec.queueName: Invalid value: "teams": queue teams is not a leaf queue'
    )


def test_team_a_submitting_to_team_b_s_queue_is_forbidden() -> None:
    verdict = gangjob.validate(
        request(job_in("team-a", queue_name="team-b")), small_cluster(), {"team": "a"}
    )
    assert (verdict.allowed, verdict.code, verdict.reason) == (False, 403, "Forbidden")
    assert verdict.text == (
        "spec.queueName: Forbidden: queue team-b does not take GangJobs from namespace "
        "team-a (its namespaceSelector does not match the namespace's labels); queues that "
        "take jobs from namespace team-a: q, team-a"
    )


def test_team_a_submitting_to_its_own_queue_is_allowed() -> None:
    verdict = gangjob.validate(
        request(job_in("team-a", queue_name="team-a")), small_cluster(), {"team": "a"}
    )
    assert verdict.allowed


def test_a_claim_template_that_does_not_exist_is_named_at_its_field() -> None:
    job = gang_job("train", [("w", 2)], gpu=True)
    job["spec"]["podSets"][0]["template"]["spec"]["resourceClaims"][0][
        "resourceClaimTemplateName"
    ] = "two-gpus"
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text == (
        "spec.podSets[0].template.spec.resourceClaims[0].resourceClaimTemplateName: "
        'Not found: "two-gpus": no ResourceClaimTemplate two-gpus in namespace default; '
        "create it before the GangJob"
    )


def test_a_claim_template_asking_for_a_missing_device_class_is_refused() -> None:
    template = one_gpu_template()
    template["metadata"]["name"] = "tpu"
    template["spec"]["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] = "tpu"
    job = gang_job("train", [("w", 2)], gpu=True)
    job["spec"]["podSets"][0]["template"]["spec"]["resourceClaims"][0][
        "resourceClaimTemplateName"
    ] = "tpu"
    verdict = gangjob.validate(request(job), small_cluster(template), {})
    assert verdict.text == (
        "spec.podSets[0].template.spec.resourceClaims[0].resourceClaimTemplateName: "
        'Invalid value: "tpu": ResourceClaimTemplate tpu asks for DeviceClass tpu, which '
        "does not exist (existing: gpu)"
    )


def test_a_job_above_what_its_queue_may_ever_borrow_can_never_fit() -> None:
    capped = queue("capped", cpu="2")
    capped["spec"]["quota"][0]["borrowingLimit"] = "1"
    capped["spec"]["parent"] = "teams"
    job = gang_job("train", [("w", 4)], cpu="1", queue_name="capped")
    verdict = gangjob.validate(request(job), small_cluster(capped), {})
    assert verdict.text == (
        "spec.podSets: Invalid value: can never fit: needs 4 cpu; queue capped may use at "
        "most 3 (nominal 2 + borrowing limit 1); the job would wait for ever, so it is "
        "refused now: ask for less, or for more quota or nodes"
    )


def test_a_job_wanting_more_gpus_than_the_cluster_has_can_never_fit() -> None:
    job = gang_job("train", [("w", 9)], gpu=True)
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert "can never fit: needs 9 devices/gpu; the cluster has 8" in verdict.text


def test_one_pod_larger_than_every_node_is_refused_on_its_pod_set() -> None:
    job = gang_job("train", [("small", 1), ("huge", 1)])
    job["spec"]["podSets"][1]["template"] = copy.deepcopy(job["spec"]["podSets"][1]["template"])
    job["spec"]["podSets"][1]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "9"}
    }
    cluster = small_cluster(queue("big", cpu="100"))
    job["spec"]["queueName"] = "big"
    verdict = gangjob.validate(request(job), cluster, {})
    assert verdict.text.startswith(
        "spec.podSets[1]: Invalid value: can never fit: one pod needs cpu 9 "
        "but the largest node has 8"
    )


def test_schema_problems_are_reported_with_their_field_paths() -> None:
    job = gang_job("train", [("w", 2)])
    job["spec"]["podSets"][0]["replicas"] = 0
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text == "spec.podSets[0].replicas: Invalid value: must be >= 1 (got 0)"


def test_several_problems_are_listed_together() -> None:
    job = gang_job("train", [("w", 2)], gpu=True, queue_name="nope")
    job["spec"]["podSets"][0]["template"]["spec"]["resourceClaims"][0][
        "resourceClaimTemplateName"
    ] = "missing"
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text.startswith('[spec.queueName: Not found: "nope"')
    assert ", spec.podSets[0].template.spec.resourceClaims[0].resourceClaimTemplateName:" in (
        verdict.text
    )
    assert len(verdict.errors) == 2


def test_a_priority_class_that_does_not_exist_is_named() -> None:
    job = gang_job("train", [("w", 2)], priorityClassName="urgent")
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text == (
        "spec.priorityClassName: Invalid value: PriorityClass 'urgent' does not exist"
    )


def test_an_update_that_keeps_the_spec_passes_even_if_the_queue_is_gone() -> None:
    job = gang_job("train", [("w", 2)], queue_name="gone")
    labelled = copy.deepcopy(job)
    labelled["metadata"]["finalizers"] = ["phalanx.dev/admission"]
    verdict = gangjob.validate(request(labelled, "UPDATE", job), small_cluster(), {})
    assert verdict.allowed


def test_an_update_moving_the_job_to_another_tenant_s_queue_is_forbidden() -> None:
    old = job_in("team-a", queue_name="team-a")
    new = job_in("team-a", queue_name="team-b")
    verdict = gangjob.validate(request(new, "UPDATE", old), small_cluster(), {"team": "a"})
    assert verdict.code == 403


def test_a_job_being_deleted_is_never_held_up() -> None:
    old = gang_job("train", [("w", 2)], queue_name="gone")
    new = copy.deepcopy(old)
    new["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    new["spec"]["queueName"] = "also-gone"
    verdict = gangjob.validate(request(new, "UPDATE", old), small_cluster(), {})
    assert verdict.allowed


def test_a_generate_name_job_is_judged_before_it_has_a_name() -> None:
    job = gang_job("x", [("w", 2)], queue_name="nope")
    del job["metadata"]["name"]
    job["metadata"]["generateName"] = "train-"
    verdict = gangjob.validate(request(job), small_cluster(), {})
    assert verdict.text.startswith('spec.queueName: Not found: "nope"')


def test_a_job_whose_admission_record_would_not_fit_in_etcd_is_refused() -> None:
    nodes = [one_slot_node(f"node-{i:05d}", pods=110) for i in range(3)]
    cluster = cluster_of(namespace("default"), *nodes, queue("q"))
    job = gang_job("wide", [(f"set{i}", 4096) for i in range(16)], cpu="1m")
    verdict = gangjob.validate(request(job), cluster, {})
    assert verdict.errors[0].field == "spec.podSets"
    assert verdict.text.startswith("spec.podSets: Too many: 65536: pods in one GangJob")
    assert "over the 1 MiB that keeps the GangJob under etcd's 1.5 MiB" in verdict.text


def test_the_record_estimate_grows_with_devices_per_pod() -> None:
    cluster = small_cluster()

    def gang(**kwargs: object) -> Gang:
        job = gang_job("a", [("w", 100)], **kwargs)  # type: ignore[arg-type]
        job["metadata"]["uid"] = "u1"
        return translate.gang(job, cluster.templates, {})

    plain, with_gpu = gang(), gang(gpu=True)
    assert gangjob.record_bytes(with_gpu, cluster) > gangjob.record_bytes(plain, cluster) > 0


def test_suspending_or_resuming_a_job_passes_even_if_it_no_longer_fits() -> None:
    old = gang_job("train", [("w", 2)], queue_name="gone")
    suspended = copy.deepcopy(old)
    suspended["spec"]["suspend"] = True
    assert gangjob.validate(request(suspended, "UPDATE", old), small_cluster(), {}).allowed
    assert gangjob.validate(request(old, "UPDATE", suspended), small_cluster(), {}).allowed
