"""Specification of the GangJob API model: what a manifest may say and how mistakes read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from controller.api.errors import format_validation_error
from controller.api.gangjob import GangJob, PodSpec
from tests.manifests import REMOVE, edited

PYTORCH_JOB = yaml.safe_load(
    """
apiVersion: phalanx.dev/v1alpha1
kind: GangJob
metadata:
  name: llama-finetune
  namespace: research
  labels:
    team: nlp
spec:
  queueName: team-a
  priorityClassName: training-high
  failurePolicy:
    maxRestarts: 3
  readyTimeoutSeconds: 600
  runtimeEstimateSeconds: 7200
  minRuntimeSeconds: 600
  checkpointIntervalSeconds: 1800.5
  topology:
    mode: preferred
    key: gpu.example.com/nvlinkDomain
    source: deviceAttribute
  podSets:
  - name: master
    replicas: 1
    template:
      metadata:
        labels:
          role: master
      spec:
        containers:
        - name: trainer
          image: ghcr.io/example/llama-train:1.4
          command: [torchrun, --nproc-per-node=8, train.py]
          ports:
          - containerPort: 29500
          resources:
            requests: {cpu: "16", memory: 128Gi}
            limits: {memory: 128Gi}
            claims:
            - name: gpus
        resourceClaims:
        - name: gpus
          resourceClaimTemplateName: eight-gpus
        tolerations:
        - key: nvidia.com/gpu
          operator: Exists
          effect: NoSchedule
        nodeSelector:
          node.kubernetes.io/instance-type: gpu-8x
  - name: worker
    replicas: 3
    template:
      spec:
        schedulerName: phalanx
        containers:
        - name: trainer
          image: ghcr.io/example/llama-train:1.4
          env:
          - name: NCCL_DEBUG
            value: INFO
          resources:
            requests: {cpu: 15500m, memory: 128Gi, ephemeral-storage: 100Gi}
            claims:
            - name: gpus
        resourceClaims:
        - name: gpus
          resourceClaimTemplateName: eight-gpus
        volumes:
        - name: shm
          emptyDir: {medium: Memory}
"""
)

ADMITTED_STATUS = yaml.safe_load(
    """
phase: Running
restarts: 1
conditions:
- type: Admitted
  status: "True"
  reason: QuotaReserved
  message: all 4 pods placed
  lastTransitionTime: "2025-03-01T12:00:00Z"
  observedGeneration: 2
admission:
  admissionId: llama-finetune-7f3a
  queue: team-a
  podSets:
  - name: master
    pods:
    - index: 0
      node: gpu-node-1
      claims:
      - name: gpus
        devices:
        - {request: gpu, driver: gpu.example.com, pool: gpu-node-1, device: gpu-0}
        - {request: gpu, driver: gpu.example.com, pool: gpu-node-1, device: gpu-1}
  quotaCharged: {cpu: "62", memory: 512Gi, devices/gpu.example.com: 32}
  borrowed: {devices/gpu.example.com: 8}
"""
)


def job_with(path: str, value: Any) -> dict[str, Any]:
    """The fixture with one field, named by a dotted path, replaced (or removed)."""
    return edited(PYTORCH_JOB, path, value)


def problems(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        GangJob.from_manifest(doc)
    return format_validation_error(caught.value, "job.yaml")


def test_pytorch_job_with_gpu_claim_template_parses() -> None:
    job = GangJob.from_manifest(PYTORCH_JOB)

    assert [(s.name, s.replicas) for s in job.spec.pod_sets] == [("master", 1), ("worker", 3)]
    worker = job.spec.pod_sets[1].template.spec
    assert worker.containers[0].resources.requests["cpu"] == "15500m"
    assert worker.resource_claims[0].resource_claim_template_name == "eight-gpus"
    assert job.spec.topology is not None and job.spec.topology.source == "deviceAttribute"


def test_defaults_fill_optional_fields() -> None:
    job = GangJob.from_manifest(job_with("spec.failurePolicy", REMOVE))

    assert job.spec.failure_policy.max_restarts == 0
    assert job.spec.suspend is False
    assert job.spec.priority is None
    assert job.status is None


def test_runtime_estimate_min_runtime_and_checkpoint_interval_parse() -> None:
    spec = GangJob.from_manifest(PYTORCH_JOB).spec

    assert (
        spec.runtime_estimate_seconds,
        spec.min_runtime_seconds,
        spec.checkpoint_interval_seconds,
    ) == (7200, 600, 1800.5)


def test_runtime_fields_are_optional() -> None:
    doc = PYTORCH_JOB
    for name in ("runtimeEstimateSeconds", "minRuntimeSeconds", "checkpointIntervalSeconds"):
        doc = edited(doc, f"spec.{name}", REMOVE)
    spec = GangJob.from_manifest(doc).spec

    assert spec.runtime_estimate_seconds is None
    assert spec.min_runtime_seconds is None
    assert spec.checkpoint_interval_seconds is None


def test_server_set_metadata_is_read_and_unknown_metadata_kept() -> None:
    doc = job_with("metadata.uid", "0b7c2f9e-5d1a-4c3e-9f7a-1e2d3c4b5a69")
    doc["metadata"].update(
        resourceVersion="48151",
        generation=2,
        creationTimestamp="2025-03-01T11:59:00Z",
        finalizers=["phalanx.dev/release"],
    )

    job = GangJob.from_manifest(doc)

    assert job.metadata.generation == 2
    assert job.metadata.creation_timestamp == datetime(2025, 3, 1, 11, 59, tzinfo=UTC)
    dumped = job.model_dump(by_alias=True, exclude_none=True)["metadata"]
    assert dumped["finalizers"] == ["phalanx.dev/release"]
    assert dumped["resourceVersion"] == "48151"


def test_pod_template_fields_phalanx_does_not_read_are_kept() -> None:
    job = GangJob.from_manifest(PYTORCH_JOB)
    dumped = job.model_dump(by_alias=True, exclude_none=True)

    worker = dumped["spec"]["podSets"][1]["template"]["spec"]
    assert worker["volumes"] == [{"name": "shm", "emptyDir": {"medium": "Memory"}}]
    assert worker["containers"][0]["env"] == [{"name": "NCCL_DEBUG", "value": "INFO"}]


@pytest.mark.parametrize("with_status", [False, True], ids=["spec-only", "admitted"])
def test_dump_and_parse_round_trip(with_status: bool) -> None:
    doc = job_with("status", ADMITTED_STATUS) if with_status else PYTORCH_JOB
    job = GangJob.from_manifest(doc)

    again = GangJob.from_manifest(job.model_dump(by_alias=True, exclude_none=True))

    assert again == job


def test_json_dump_uses_camel_case_and_round_trips() -> None:
    job = GangJob.from_manifest(job_with("status", ADMITTED_STATUS))

    text = job.model_dump_json(by_alias=True, exclude_none=True)

    assert '"podSets"' in text and '"pod_sets"' not in text
    assert GangJob.model_validate_json(text) == job


def test_python_code_may_use_snake_case_names() -> None:
    spec = PodSpec.model_validate(
        {"containers": [{"name": "c", "image": "busybox"}], "node_selector": {"zone": "a"}}
    )

    assert spec.node_selector == {"zone": "a"}


def test_manifest_with_snake_case_key_is_rejected() -> None:
    doc = job_with("spec.queueName", REMOVE)
    doc["spec"]["queue_name"] = "team-a"

    assert problems(doc).splitlines() == [
        "job.yaml: spec.queueName: is required",
        "job.yaml: spec.queue_name: unknown field (field names are camelCase; check the spelling)",
    ]


BAD_JOBS = [
    pytest.param(
        "spec.runtimeEstimateSeconds",
        -1,
        "spec.runtimeEstimateSeconds: must be >= 0 (got -1)",
        id="negative-runtime-estimate",
    ),
    pytest.param(
        "spec.minRuntimeSeconds",
        "10m",
        "spec.minRuntimeSeconds: must be a number (got '10m')",
        id="min-runtime-as-string",
    ),
    pytest.param(
        "spec.checkpointIntervalSeconds",
        0,
        "spec.checkpointIntervalSeconds: must be > 0 (got 0)",
        id="zero-checkpoint-interval",
    ),
    pytest.param(
        "spec.checkpointIntervalSeconds",
        float("inf"),
        "spec.checkpointIntervalSeconds: must be a finite number (got Infinity)",
        id="infinite-checkpoint-interval",
    ),
    pytest.param(
        "spec.podSets.0.replicas",
        -1,
        "spec.podSets[0].replicas: must be >= 1 (got -1)",
        id="negative-replicas",
    ),
    pytest.param(
        "spec.podSets.0.replicas",
        "3",
        "spec.podSets[0].replicas: must be an integer (got '3')",
        id="replicas-as-string",
    ),
    pytest.param(
        "spec.podSets",
        [],
        "spec.podSets: must have at least 1 item(s) (got 0)",
        id="empty-pod-sets",
    ),
    pytest.param(
        "spec.podSets.1.name",
        "master",
        "spec.podSets[1].name: duplicate pod set name 'master' (also at [0])",
        id="duplicate-pod-set-names",
    ),
    pytest.param(
        "spec.podSets.0.name",
        "Master",
        "spec.podSets[0].name: must be a DNS label: at most 63 lowercase letters, digits and "
        "'-', starting and ending with a letter or digit (got 'Master')",
        id="pod-set-name-not-dns-label",
    ),
    pytest.param(
        "spec.priority",
        100,
        "spec.priorityClassName: cannot be set together with priority; set one of them",
        id="priority-and-priority-class",
    ),
    pytest.param(
        "apiVersion",
        "phalanx.dev/v1",
        "apiVersion: must be 'phalanx.dev/v1alpha1' (got 'phalanx.dev/v1')",
        id="wrong-api-version",
    ),
    pytest.param(
        "kind",
        "Queue",
        "kind: must be 'GangJob' (got 'Queue')",
        id="wrong-kind",
    ),
    pytest.param(
        "spec.maxRestarts",
        3,
        "spec.maxRestarts: unknown field (field names are camelCase; check the spelling)",
        id="unknown-field-in-spec",
    ),
    pytest.param(
        "spec.queueName",
        REMOVE,
        "spec.queueName: is required",
        id="missing-queue-name",
    ),
    pytest.param(
        "spec.failurePolicy.maxRestarts",
        -1,
        "spec.failurePolicy.maxRestarts: must be >= 0 (got -1)",
        id="negative-max-restarts",
    ),
    pytest.param(
        "spec.readyTimeoutSeconds",
        0,
        "spec.readyTimeoutSeconds: must be >= 1 (got 0)",
        id="zero-ready-timeout",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.resourceClaims.0.resourceClaimName",
        "shared-gpus",
        "spec.podSets[0].template.spec.resourceClaims[0]: exactly one of resourceClaimName "
        "and resourceClaimTemplateName must be set",
        id="claim-with-template-and-claim-name",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.resourceClaims.0.resourceClaimTemplateName",
        REMOVE,
        "spec.podSets[0].template.spec.resourceClaims[0]: exactly one of resourceClaimName "
        "and resourceClaimTemplateName must be set",
        id="claim-with-neither-source",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.containers.0.resources.claims.0.name",
        "gpu",
        "spec.podSets[0].template.spec.containers[0].resources.claims[0].name: "
        "no pod resourceClaims entry named 'gpu'",
        id="container-uses-unknown-claim",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.containers",
        [],
        "spec.podSets[0].template.spec.containers: must have at least 1 item(s) (got 0)",
        id="no-containers",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.containers.0.resources.requests.cpu",
        0.5,
        "spec.podSets[0].template.spec.containers[0].resources.requests.cpu: must be an "
        "integer or a quantity string such as '500m' or '4Gi' (got 0.5); "
        "write it as a string, e.g. '0.5'",
        id="unquoted-decimal-quantity",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.containers.0.resources.requests.memory",
        "12 GB",
        "spec.podSets[0].template.spec.containers[0].resources.requests.memory: must be a "
        "Kubernetes quantity such as '2', '500m', '1.5' or '4Gi' (got '12 GB')",
        id="malformed-quantity",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.schedulerName",
        "default-scheduler",
        "spec.podSets[0].template.spec.schedulerName: must be 'phalanx' or left out "
        "(Phalanx sets it), got 'default-scheduler'",
        id="foreign-scheduler",
    ),
    pytest.param(
        "spec.topology.key",
        "nvlinkDomain",
        "spec.topology.key: must be a fully qualified device attribute 'domain/name', "
        "e.g. gpu.example.com/numa (got 'nvlinkDomain')",
        id="device-attribute-without-domain",
    ),
    pytest.param(
        "spec.topology.mode",
        "strict",
        "spec.topology.mode: must be 'required' or 'preferred' (got 'strict')",
        id="unknown-topology-mode",
    ),
    pytest.param(
        "metadata.name",
        "Llama_Finetune",
        "metadata.name: must be a DNS subdomain: at most 253 lowercase letters, digits, '-' "
        "and '.', starting and ending with a letter or digit (got 'Llama_Finetune')",
        id="name-not-dns-subdomain",
    ),
    pytest.param(
        "spec.podSets.0.replicas",
        4097,
        "spec.podSets[0].replicas: must be <= 4096 (got 4097)",
        id="more-replicas-than-status-can-list",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.tolerations",
        [{"key": "k", "operator": "Exists"}] * 65,
        "spec.podSets[0].template.spec.tolerations: must have at most 64 item(s) (got 65)",
        id="too-many-tolerations",
    ),
    pytest.param(
        "spec.podSets.0.template.spec.containers.0.image",
        "registry.example.com/" + "a" * 1024,
        "spec.podSets[0].template.spec.containers[0].image: must be at most 1024 characters long",
        id="image-longer-than-the-crd-allows",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD_JOBS)
def test_invalid_job_is_reported_by_field_path(path: str, value: Any, expected: str) -> None:
    assert problems(job_with(path, value)) == f"job.yaml: {expected}"


def test_every_problem_gets_its_own_line() -> None:
    doc = job_with("spec.podSets.0.replicas", 0)
    doc["spec"]["podSets"][1]["replicas"] = -2

    assert problems(doc).splitlines() == [
        "job.yaml: spec.podSets[0].replicas: must be >= 1 (got 0)",
        "job.yaml: spec.podSets[1].replicas: must be >= 1 (got -2)",
    ]
