"""The resourceclaim controller, as kube-controller-manager runs it (resource.k8s.io/v1).

For a pod's `spec.resourceClaims[].resourceClaimTemplateName` it creates a claim from the
template, named `<pod>-<claim>-<5 random>` (both parts shortened in proportion when the
base would pass 57 characters), owned by the pod (controller, blockOwnerDeletion) and
annotated `resource.kubernetes.io/pod-claim-name`, then records it in the pod's
`status.resourceClaimStatuses`. A missing template is a `FailedResourceClaimCreation`
event; the pod is retried when the template appears.

For claims: a `reservedFor` entry whose pod is gone, replaced (other uid) or done
(Succeeded, Failed, or deleted before being scheduled) is dropped; when the last one goes,
the claim is deallocated and the `resource.kubernetes.io/delete-protection` finalizer
removed. A deleted claim nothing reserves is deallocated and released the same way. A
generated claim whose pod is done is deleted.
"""

from __future__ import annotations

from typing import Any

from emulator.api import MERGE
from emulator.controllers import Controller, builtin, removed
from emulator.dra import RESERVED_FOR_MAX
from emulator.jsontree import clone
from emulator.resources import ResourceType
from emulator.store import Obj

FINALIZER = "resource.kubernetes.io/delete-protection"
POD_CLAIM_ANNOTATION = "resource.kubernetes.io/pod-claim-name"
_CLAIMS = "resourceclaims.resource.k8s.io"
_TEMPLATES = "resourceclaimtemplates.resource.k8s.io"
_MAX_BASE = 57


def generate_name(pod: str, claim: str) -> str:
    base = f"{pod}-{claim}-"
    if len(base) <= _MAX_BASE:
        return base
    return (
        pod[: len(pod) * _MAX_BASE // len(base)]
        + "-"
        + claim[: len(claim) * _MAX_BASE // len(base)]
    )


def pod_done(pod: Obj) -> bool:
    """No container of the pod runs or ever will."""
    phase = (pod.get("status") or {}).get("phase")
    deleted_unscheduled = bool(
        pod["metadata"].get("deletionTimestamp") and not (pod.get("spec") or {}).get("nodeName")
    )
    return phase in ("Succeeded", "Failed") or deleted_unscheduled


def owning_pod(claim: Obj) -> tuple[str, str] | None:
    for ref in claim["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("apiVersion") == "v1" and ref.get("kind") == "Pod":
            return ref["name"], ref["uid"]
    return None


class ResourceClaims(Controller):
    name = "resourceclaim-controller"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.by_pod_uid: dict[str, set[tuple[str, str]]] = {}
        """Claims that name a pod uid (as owner or in reservedFor)."""
        self.waiting: dict[tuple[str, str], set[tuple[str, str]]] = {}
        """(namespace, template) -> pods waiting for that template to exist."""

    # --- events ----------------------------------------------------------------------------

    def on_write(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if rt.key == "pods":
            gone = removed(self.api, rt, verb, obj)
            if not gone and (obj.get("spec") or {}).get("resourceClaims"):
                self.enqueue(("pod", *key))
            if gone or pod_done(obj):
                for claim in self.by_pod_uid.get(meta["uid"], ()):
                    self.enqueue(("claim", *claim))
        elif rt.key == _CLAIMS:
            uids = {r.get("uid") for r in (obj.get("status") or {}).get("reservedFor") or []}
            owner = owning_pod(obj)
            if owner:
                uids.add(owner[1])
            gone = removed(self.api, rt, verb, obj)
            for uid in uids:
                claims = self.by_pod_uid.setdefault(str(uid), set())
                if gone:
                    claims.discard(key)
                else:
                    claims.add(key)
            if not gone:
                self.enqueue(("claim", *key))
        elif rt.key == _TEMPLATES and verb == "create":
            for pod in self.waiting.pop(key, set()):
                self.enqueue(("pod", *pod))

    async def sync(self, key: tuple[str, str, str]) -> None:
        kind, namespace, name = key
        if kind == "pod":
            await self._sync_pod(namespace, name)
        else:
            await self._sync_claim(namespace, name)

    # --- pods ------------------------------------------------------------------------------

    async def _sync_pod(self, namespace: str, name: str) -> None:
        pod = self.api.store.peek("pods", (namespace, name))
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        recorded = {
            s["name"]: s.get("resourceClaimName")
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        created: dict[str, str] = {}
        for pod_claim in pod["spec"].get("resourceClaims") or []:
            template = pod_claim.get("resourceClaimTemplateName")
            if not template:
                continue
            claim_name = recorded.get(pod_claim["name"])
            if claim_name and self._owned(namespace, claim_name, pod):
                continue
            claim = self._orphan(pod, pod_claim["name"])
            if claim is None:
                claim = await self._create(pod, pod_claim["name"], template)
                if claim is None:
                    return
            created[pod_claim["name"]] = claim["metadata"]["name"]
        if created:
            statuses = [
                {"name": n, "resourceClaimName": c} for n, c in recorded.items() if n not in created
            ] + [{"name": n, "resourceClaimName": c} for n, c in created.items()]
            await self.api.patch(
                builtin(self.api, "", "pods"),
                namespace,
                name,
                MERGE,
                {"status": {"resourceClaimStatuses": statuses}},
                {},
                "status",
                self.name,
                [],
            )
        if pod["spec"].get("nodeName"):
            await self._reserve_for(pod)

    def _owned(self, namespace: str, claim_name: str, pod: Obj) -> bool:
        claim = self.api.store.peek(_CLAIMS, (namespace, claim_name))
        owner = owning_pod(claim) if claim else None
        return owner is not None and owner[1] == pod["metadata"]["uid"]

    def _orphan(self, pod: Obj, pod_claim: str) -> Obj | None:
        """A claim made for this pod claim before the pod status could record it."""
        for namespace, name in sorted(self.by_pod_uid.get(pod["metadata"]["uid"], ())):
            claim = self.api.store.peek(_CLAIMS, (namespace, name))
            owner = owning_pod(claim) if claim else None
            if (
                claim is not None
                and owner is not None
                and owner[1] == pod["metadata"]["uid"]
                and (claim["metadata"].get("annotations") or {}).get(POD_CLAIM_ANNOTATION)
                == pod_claim
            ):
                return claim
        return None

    async def _create(self, pod: Obj, pod_claim: str, template_name: str) -> Obj | None:
        meta = pod["metadata"]
        namespace = meta["namespace"]
        template = self.api.store.peek(_TEMPLATES, (namespace, template_name))
        if template is None:
            self.waiting.setdefault((namespace, template_name), set()).add(
                (namespace, meta["name"])
            )
            await self.record_event(
                pod,
                "Pod",
                "FailedResourceClaimCreation",
                f'PodResourceClaim {pod_claim}: resource claim template "{template_name}": '
                f'resourceclaimtemplate.resource.k8s.io "{template_name}" not found',
            )
            return None
        template_meta = template["spec"].get("metadata") or {}
        claim: Obj = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {
                "generateName": generate_name(meta["name"], pod_claim),
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "annotations": {
                    **(template_meta.get("annotations") or {}),
                    POD_CLAIM_ANNOTATION: pod_claim,
                },
            },
            "spec": clone(template["spec"].get("spec") or {}),
        }
        if template_meta.get("labels"):
            claim["metadata"]["labels"] = dict(template_meta["labels"])
        return await self.api.create(
            builtin(self.api, "resource.k8s.io", "resourceclaims"),
            namespace,
            claim,
            {},
            self.name,
            [],
        )

    async def _reserve_for(self, pod: Obj) -> None:
        """A scheduled pod's allocated claims get reserved for it (if someone forgot)."""
        meta = pod["metadata"]
        recorded = {
            s["name"]: s.get("resourceClaimName")
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        for pod_claim in pod["spec"].get("resourceClaims") or []:
            name = pod_claim.get("resourceClaimName") or recorded.get(pod_claim["name"])
            stored = self.api.store.peek(_CLAIMS, (meta["namespace"], name or ""))
            if stored is None:
                continue
            reserved = (stored.get("status") or {}).get("reservedFor") or []
            allocated = (stored.get("status") or {}).get("allocation")
            if not allocated or any(r.get("uid") == meta["uid"] for r in reserved):
                continue
            if len(reserved) >= RESERVED_FOR_MAX:
                continue
            claim = clone(stored)
            status = claim.setdefault("status", {})
            status["reservedFor"] = [
                *reserved,
                {"resource": "pods", "name": meta["name"], "uid": meta["uid"]},
            ]
            await self._update(claim, "status")

    # --- claims ----------------------------------------------------------------------------

    def _reservation_valid(self, namespace: str, entry: Obj) -> bool:
        if entry.get("apiGroup") or entry.get("resource") != "pods":
            return True
        pod = self.api.store.peek("pods", (namespace, entry.get("name", "")))
        return pod is not None and pod["metadata"]["uid"] == entry.get("uid") and not pod_done(pod)

    async def _sync_claim(self, namespace: str, name: str) -> None:
        claim = self.api.store.peek(_CLAIMS, (namespace, name))  # copied before changes
        if claim is None:
            return
        reserved = (claim.get("status") or {}).get("reservedFor") or []
        valid = [r for r in reserved if self._reservation_valid(namespace, r)]
        protected = FINALIZER in (claim["metadata"].get("finalizers") or [])
        deleted = claim["metadata"].get("deletionTimestamp")
        if len(valid) < len(reserved) or (protected and deleted and not valid):
            claim = clone(claim)
        status = claim.get("status") or {}
        if len(valid) < len(reserved):
            if valid:
                status["reservedFor"] = valid
            else:
                status.pop("reservedFor", None)
                if protected:
                    status.pop("allocation", None)
            claim = await self._update(claim, "status")
            if protected and not claim.get("status", {}).get("allocation"):
                claim = await self._release(claim)
        elif protected and deleted and not valid:
            if status.get("allocation"):
                status.pop("allocation")
                claim = await self._update(claim, "status")
            await self._release(claim)
            return
        if not valid:
            await self._delete_if_pod_done(claim)

    async def _release(self, claim: Obj) -> Obj:
        claim["metadata"]["finalizers"] = [
            f for f in claim["metadata"].get("finalizers") or [] if f != FINALIZER
        ]
        return await self._update(claim, "")

    async def _delete_if_pod_done(self, claim: Obj) -> None:
        owner = owning_pod(claim)
        if owner is None or claim["metadata"].get("deletionTimestamp"):
            return
        meta = claim["metadata"]
        pod = self.api.store.peek("pods", (meta["namespace"], owner[0]))
        if pod is not None and (pod["metadata"]["uid"] != owner[1] or pod_done(pod)):
            await self.api.delete(
                builtin(self.api, "resource.k8s.io", "resourceclaims"),
                meta["namespace"],
                meta["name"],
                {},
                {},
            )

    async def _update(self, claim: Obj, subresource: str) -> Obj:
        meta = claim["metadata"]
        return await self.api.update(
            builtin(self.api, "resource.k8s.io", "resourceclaims"),
            meta["namespace"],
            meta["name"],
            claim,
            {},
            subresource,
            self.name,
            [],
        )
