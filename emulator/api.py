"""What each verb does to the store: the API server's request semantics without HTTP.

http.py parses requests into calls of `Api`; tests and the emulator's own controllers
could call it directly. Every write goes through `_commit_*`, which is where fault
injection and fail-stop (faults.py) act.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller import jsonio
from emulator import apply as ssa
from emulator import defaults, dra, schema, validation, webhookconfig
from emulator.admission import Admission, Attributes
from emulator.clock import now_time
from emulator.conversion import from_storage, to_storage
from emulator.errors import (
    ApiError,
    already_exists,
    bad_request,
    cause,
    conflict,
    decode_error,
    error,
    forbidden,
    internal,
    invalid,
    namespace_not_found,
    not_found,
    precondition_conflict,
)
from emulator.faults import Faults
from emulator.jsontree import clone
from emulator.patch import json_patch, merge_patch, strategic_merge_patch
from emulator.resources import Registry, ResourceType
from emulator.selection import combine, field_matcher, label_matcher
from emulator.store import Obj, Store, TooOld, obj_key

if TYPE_CHECKING:
    from emulator.audit import Request
from emulator.timefmt import MicroTimeError, parse_microtime
from emulator.uids import random_uid

_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_GENERATED_PREFIX_MAX = 58
"""apiserver's SimpleNameGenerator: a generateName longer than 63 - 5 characters is cut
to 58 before the 5 random ones are added."""

ETCD_MAX_REQUEST_BYTES = 1536 * 1024
"""etcd's default `--max-request-bytes` (1.5 MiB): a write whose key and stored object
are larger fails in etcd, and the API server passes the error on as a 500."""


def generated_name(prefix: str) -> str:
    """A name made from a generateName, as the API server makes it."""
    return prefix[:_GENERATED_PREFIX_MAX] + "".join(random.choices(_SUFFIX_CHARS, k=5))


def _check_stored_size(rt: ResourceType, obj: Obj) -> None:
    if stored_size(rt, obj) > ETCD_MAX_REQUEST_BYTES:
        raise internal("etcdserver: request is too large")


def stored_size(rt: ResourceType, obj: Obj) -> int:
    """The bytes a write puts to etcd: the key and the object as compact JSON (what a
    custom resource is stored as; built-in types are stored as protobuf, somewhat
    smaller, so this errs on the large side for them)."""
    meta = obj["metadata"]
    group = f"{rt.group}/" if rt.group else ""
    key = f"/registry/{group}{rt.plural}/{meta.get('namespace', '')}/{meta['name']}"
    return len(key) + len(jsonio.dumps(obj))


_NS = ResourceType("", "v1", "Namespace", "namespaces", False)
_SA_KEY = "serviceaccounts"
_CRD_KEY = "customresourcedefinitions.apiextensions.k8s.io"

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

_STRICT_SPEC_FIELDS: dict[tuple[str, str], frozenset[str]] = {
    ("scheduling.k8s.io", "PodGroup"): frozenset(
        {
            "podGroupTemplateRef",
            "schedulingPolicy",
            "schedulingConstraints",
            "resourceClaims",
            "disruptionMode",
            "priorityClassName",
            "priority",
        }
    ),
}


_PROPAGATION_FINALIZERS = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}
"""The finalizer the API server adds for a propagationPolicy; the garbage collector acts on it."""


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


class Api:
    """The verbs. `service_account_admission` mimics the ServiceAccount admission plugin."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        faults: Faults,
        *,
        service_account_admission: bool = True,
        forbidden_delay: float = 1.5,
        too_new_wait: float = 3.0,
    ) -> None:
        self.store = store
        self.registry = registry
        self.faults = faults
        self.audit: list[Request] | None = None
        """Every request's authorization attributes while a test audits (audit.py)."""
        self.service_account_admission = service_account_admission
        self.forbidden_delay = forbidden_delay
        self.too_new_wait = too_new_wait
        self.crds: dict[str, Obj] = {}
        self.on_write: list[Callable[[ResourceType, str, Obj], None]] = []
        self.new_uid: Callable[[], str] = random_uid
        """Makes each created object's uid (`uids.OrderedUids` for creation order)."""
        self.admission = Admission(store, self._namespace_labels)
        """Calls the admission webhooks of the stored webhook configurations (admission.py)."""

    def _namespace_labels(self, name: str) -> dict[str, str]:
        ns = self.store.peek("namespaces", ("", name))
        return dict(((ns or {}).get("metadata") or {}).get("labels") or {})

    # --- presentation ----------------------------------------------------------------------

    def present(self, rt: ResourceType, stored: Obj) -> Obj:
        """The stored object as this API version shows it (a copy the caller may change)."""
        obj = from_storage(rt.group, rt.kind, stored)
        if obj is stored:
            obj = clone(stored)
            obj["apiVersion"] = rt.api_version
            obj["kind"] = rt.kind
            obj = {"kind": obj.pop("kind"), "apiVersion": obj.pop("apiVersion"), **obj}
        return obj

    def view(self, rt: ResourceType, stored: Obj) -> Obj:
        """The same as `present`, sharing the stored object's values: read it, never change
        it (serialisation and patch functions, which copy what they change)."""
        obj = from_storage(rt.group, rt.kind, stored)
        if obj is stored:
            obj = {"kind": rt.kind, "apiVersion": rt.api_version}
            obj.update((k, v) for k, v in stored.items() if k not in ("kind", "apiVersion"))
        return obj

    # --- helpers ---------------------------------------------------------------------------

    def _namespace_checks(self, rt: ResourceType, namespace: str, name: str) -> None:
        if not rt.namespaced:
            return
        ns = self.store.peek("namespaces", ("", namespace))
        if ns is None:
            raise namespace_not_found(namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                rt,
                name,
                f"unable to create new content in namespace {namespace} "
                "because it is being terminated",
                [
                    cause(
                        "NamespaceTerminating",
                        f"namespace {namespace} is being terminated",
                        "metadata.namespace",
                    )
                ],
            )

    def _existing(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        """A copy of the stored object (404 if there is none)."""
        obj = self.store.get(rt.key, (namespace if rt.namespaced else "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def existing(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        """The stored object itself, read only (404 if there is none)."""
        obj = self.store.peek(rt.key, (namespace if rt.namespaced else "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _decode(
        self,
        rt: ResourceType,
        body: Any,
        query: dict[str, str],
        warnings: list[str],
        *,
        fresh: bool = False,
    ) -> Obj:
        """The body as it will be stored: copied, unless `fresh` (nobody else holds it,
        as a body just parsed from a request)."""
        if not isinstance(body, dict):
            raise bad_request(f"Object '{rt.kind}' is invalid: not a JSON object")
        if not fresh:
            body = clone(body)
        body.setdefault("metadata", {})
        strict = query.get("fieldValidation") == "Strict"
        if rt.custom:
            crd_schema = self._schema(rt)
            body, unknown = schema.prune_object(body, crd_schema)
            if unknown and strict:
                listed = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise decode_error(rt, rt.version, f"strict decoding error: {listed}")
            if unknown and query.get("fieldValidation") != "Ignore":
                warnings.extend(f'unknown field "{u}"' for u in unknown)
        else:
            known = _STRICT_SPEC_FIELDS.get((rt.group, rt.kind))
            if known is not None and strict:
                extra = sorted(k for k in (body.get("spec") or {}) if k not in known)
                if extra:
                    listed = ", ".join(f'unknown field "spec.{k}"' for k in extra)
                    raise decode_error(rt, rt.version, f"strict decoding error: {listed}")
            self._microtimes(rt, body)
            if rt.kind == "Secret" and not rt.group:
                problem = webhookconfig.secret_data_problem(body)
                if problem:
                    raise decode_error(rt, rt.version, problem)
        return to_storage(rt.group, rt.kind, body)

    def _microtimes(self, rt: ResourceType, body: Obj) -> None:
        fields: list[tuple[dict[str, Any], str]] = []
        if rt.kind == "Lease":
            spec = body.get("spec") or {}
            fields = [(spec, "acquireTime"), (spec, "renewTime")]
        elif rt.kind == "Event":
            fields = [(body, "eventTime")]
        for holder, name in fields:
            value = holder.get(name)
            if isinstance(value, str):
                try:
                    holder[name] = parse_microtime(value)
                except MicroTimeError as exc:
                    raise decode_error(rt, rt.version, str(exc)) from exc

    def _schema(self, rt: ResourceType) -> schema.Schema:
        crd = self.crds.get(f"{rt.plural}.{rt.group}")
        return schema.version_schema(crd, rt.version) if crd else {}

    def _validate(
        self, rt: ResourceType, obj: Obj, old: Obj | None, namespace: str, subresource: str = ""
    ) -> None:
        causes = self._causes(rt, obj, old, namespace, subresource)
        if causes:
            name = obj["metadata"].get("name", "")
            if rt.kind == "Event":
                raise invalid(None, name, causes, kind="Event", group="")
            raise invalid(rt, name, causes)

    def _causes(
        self, rt: ResourceType, obj: Obj, old: Obj | None, namespace: str, subresource: str
    ) -> list[dict[str, str]]:
        kind = (rt.group, rt.kind)
        if rt.custom:
            only = "status" if subresource == "status" else None
            named = validation.object_name(obj["metadata"]) if old is None else []
            return named + schema.validate(obj, old, self._schema(rt), only)
        if old is not None and subresource == "status":
            if kind == ("resource.k8s.io", "ResourceClaim"):
                return dra.claim_status(obj, old)
            return []
        if kind == ("", "Pod"):
            return validation.pod(obj) if old is None else validation.pod_update(obj, old)
        if kind == ("", "Event") or kind == ("events.k8s.io", "Event"):
            return validation.event(obj, namespace, strict=bool(rt.group)) if old is None else []
        if kind == ("coordination.k8s.io", "Lease"):
            return validation.lease(obj)
        if kind == ("scheduling.k8s.io", "PodGroup"):
            return (
                validation.pod_group(obj) if old is None else validation.pod_group_update(obj, old)
            )
        if kind == ("scheduling.k8s.io", "Workload"):
            return validation.workload(obj)
        if kind == ("resource.k8s.io", "DeviceClass"):
            return dra.device_class(obj)
        if kind == ("resource.k8s.io", "ResourceSlice"):
            return dra.resource_slice(obj)
        if kind == ("resource.k8s.io", "ResourceClaim"):
            return dra.claim(obj) if old is None else dra.claim_update(obj, old)
        if kind == ("resource.k8s.io", "ResourceClaimTemplate"):
            return dra.claim_template(obj)
        if kind == ("", "Secret"):
            return webhookconfig.secret(obj, old)
        if rt.group == webhookconfig.GROUP:
            return webhookconfig.configuration(obj, mutating=rt.kind.startswith("Mutating"))
        causes = validation.metadata(obj)
        if kind == ("", "ConfigMap"):
            causes += validation.config_map(obj)
        if old is not None:
            causes += validation.finalizers_update(obj, old, repeat=1)
        return causes

    def _defaults(
        self, rt: ResourceType, obj: Obj, creating: bool, only: str | None = None
    ) -> None:
        if rt.custom:
            schema.default_object(obj, self._schema(rt), only)
        elif rt.kind == "Secret" and not rt.group:
            webhookconfig.secret_defaults(obj)
        elif rt.group == webhookconfig.GROUP:
            webhookconfig.configuration_defaults(obj, mutating=rt.kind.startswith("Mutating"))
        else:
            defaults.apply_defaults(rt.group, rt.kind, obj, creating)

    async def _mutate(
        self,
        rt: ResourceType,
        operation: str,
        namespace: str,
        name: str,
        obj: Obj,
        old: Obj | None,
        subresource: str,
        warnings: list[str],
    ) -> Obj:
        """The object after the mutating webhooks, defaulted again if one changed it."""
        attrs = Attributes(rt, operation, namespace, name, subresource, obj, old)
        mutated = await self.admission.mutate(attrs, warnings)
        if mutated is obj or mutated is None:
            return obj
        if rt.custom:
            mutated, _ = schema.prune_object(mutated, self._schema(rt))
        self._defaults(rt, mutated, creating=old is None)
        return mutated

    # --- create ----------------------------------------------------------------------------

    async def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        query: dict[str, str],
        manager: str,
        warnings: list[str],
        *,
        read_only: bool = False,
        fresh: bool = False,
    ) -> Obj:
        """The created object, presented; `read_only`: a view the caller only serialises;
        `fresh`: the body is the caller's to give away (just parsed), and is stored
        without a copy."""
        obj = self._decode(rt, body, query, warnings, fresh=fresh)
        meta = obj["metadata"]
        name = meta.get("name") or ""
        if meta.get("resourceVersion"):
            raise internal("resourceVersion should not be set on objects to be created")
        if rt.namespaced:
            self._namespace_checks(rt, namespace, name)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if name:
            meta["name"] = name
        if rt.kind == "Pod" and not rt.group and self.service_account_admission:
            account = (obj.get("spec") or {}).get("serviceAccountName") or "default"
            if self.store.peek(_SA_KEY, (namespace, account)) is None:
                await asyncio.sleep(self.forbidden_delay)
                raise forbidden(
                    rt,
                    name,
                    f"error looking up service account {namespace}/{account}: "
                    f'serviceaccount "{account}" not found',
                )
        if rt.custom and rt.has_status:
            obj.pop("status", None)
        self._defaults(rt, obj, creating=True)
        obj = await self._mutate(rt, "CREATE", namespace, name, obj, None, "", warnings)
        meta = obj["metadata"]
        if not name and meta.get("generateName"):
            name = generated_name(meta["generateName"])
        meta["name"] = name
        self._validate(rt, obj, None, namespace)
        await self.admission.validate(
            Attributes(rt, "CREATE", namespace, name, "", obj, None), warnings
        )
        if self.store.peek(rt.key, obj_key(obj)) is not None:
            raise already_exists(rt, name)
        meta["uid"] = self.new_uid()
        meta["creationTimestamp"] = now_time()
        if rt.has_generation:
            meta["generation"] = 1
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        ssa.record_update(obj, None, manager, rt.api_version)
        created = self._commit_create(rt, obj)
        if rt.key == _CRD_KEY:
            self._establish(created)
        return self.view(rt, created) if read_only else self.present(rt, created)

    def _commit_create(self, rt: ResourceType, obj: Obj) -> Obj:
        self.faults.before_write("create", rt)
        _check_stored_size(rt, obj)
        created = self.store.create(rt.key, obj)
        self._notify(rt, "create", created)
        return created

    def _commit_update(self, rt: ResourceType, obj: Obj, verb: str = "update") -> Obj:
        self.faults.before_write(verb, rt)
        _check_stored_size(rt, obj)
        updated = self.store.update(rt.key, obj)
        self._notify(rt, verb, updated)
        return updated

    def _commit_delete(self, rt: ResourceType, key: tuple[str, str]) -> Obj:
        self.faults.before_write("delete", rt)
        gone = self.store.delete(rt.key, key)
        self._notify(rt, "delete", gone)
        if rt.key == _CRD_KEY:
            self._unregister(gone)
        return gone

    def finish_deletion(self, rt: ResourceType, key: tuple[str, str]) -> Obj:
        """Remove an object whose deletion is complete (its last finalizer is gone)."""
        return self._commit_delete(rt, key)

    def _notify(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        for hook in self.on_write:
            hook(rt, verb, obj)

    # --- CRDs ------------------------------------------------------------------------------

    def _establish(self, crd: Obj) -> None:
        """What the apiextensions controllers do right after a CRD is created."""
        established = clone(crd)
        names = established["spec"]["names"]
        established["status"] = {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "lastTransitionTime": now_time(),
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "lastTransitionTime": now_time(),
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                },
            ],
            "acceptedNames": clone(names),
            "storedVersions": crd["status"]["storedVersions"],
        }
        stored = self.store.update(_CRD_KEY, established)
        self.register_crd(stored)

    def register_crd(self, crd: Obj) -> None:
        self.crds[crd["metadata"]["name"]] = crd
        for version in crd["spec"].get("versions", []):
            if version.get("served", True):
                self.registry.add(schema.resource_type(crd, version))

    def _unregister(self, crd: Obj) -> None:
        self.crds.pop(crd["metadata"]["name"], None)
        spec = crd["spec"]
        for version in spec.get("versions", []):
            self.registry.remove(spec["group"], version["name"], spec["names"]["plural"])

    # --- read ------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        return self.present(rt, self._existing(rt, namespace, name))

    async def list_objects(
        self, rt: ResourceType, namespace: str | None, query: dict[str, str]
    ) -> tuple[list[Obj], dict[str, Any]]:
        """Items (presented) and the list metadata, after selectors, rv semantics and paging."""
        stored, meta = await self.list_stored(rt, namespace, query)
        return [self.present(rt, o) for o in stored], meta

    async def list_stored(
        self, rt: ResourceType, namespace: str | None, query: dict[str, str]
    ) -> tuple[list[Obj], dict[str, Any]]:
        """`list_objects` with the stored objects themselves (not copies: read only)."""
        match = self.matcher(rt, query)
        rv_text = query.get("resourceVersion", "")
        rv_match = query.get("resourceVersionMatch", "")
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        start = ""
        list_rv = self.store.rv
        if token:
            list_rv, start = _parse_continue(token)
        if rv_text and rv_text != "0":
            wanted = _parse_rv(rv_text)
            if rv_match == "Exact":
                try:
                    source = self.store.items_at(rt.key, wanted, namespace)
                except TooOld as exc:
                    raise error(
                        410, "The resourceVersion for the provided list is too old.", "Expired"
                    ) from exc
                list_rv = wanted
            else:
                if wanted > self.store.rv:
                    await asyncio.sleep(self.too_new_wait)
                    if wanted > self.store.rv:
                        raise error(
                            504,
                            f"Timeout: Too large resource version: {wanted}, "
                            f"current: {self.store.rv}",
                            "Timeout",
                            {
                                "causes": [
                                    {
                                        "reason": "ResourceVersionTooLarge",
                                        "message": "Too large resource version",
                                    }
                                ],
                                "retryAfterSeconds": 1,
                            },
                        )
                source = list(self.store.items(rt.key, namespace))
        else:
            source = list(self.store.items(rt.key, namespace))
        if rv_text == "0":
            limit = 0
        items = [o for o in source if match(o) and (not start or _sort_key(o) > start)]
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            meta["continue"] = _make_continue(list_rv, _sort_key(items[-1]))
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                meta["remainingItemCount"] = rest
        return items, meta

    def matcher(self, rt: ResourceType, query: dict[str, str]) -> Callable[[Obj], bool]:
        supported = () if rt.custom else rt.field_selectors
        return combine(
            label_matcher(query.get("labelSelector")),
            field_matcher(query.get("fieldSelector"), supported),
        )

    # --- update and patch ------------------------------------------------------------------

    async def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        query: dict[str, str],
        subresource: str,
        manager: str,
        warnings: list[str],
    ) -> Obj:
        old = self._existing(rt, namespace, name)
        new = self._decode(rt, _kept(rt, body, subresource), query, warnings)
        return await self._write(
            rt, namespace, old, new, subresource, manager, "update", warnings=warnings
        )

    async def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        body: Any,
        query: dict[str, str],
        subresource: str,
        manager: str | None,
        warnings: list[str],
        *,
        read_only: bool = False,
    ) -> tuple[int, Obj]:
        """(status, the object as written); `read_only`: a view the caller only serialises."""
        if rt.custom and patch_type == STRATEGIC:
            raise error(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                f"{JSON_PATCH}, {MERGE}, {APPLY}",
                "UnsupportedMediaType",
            )
        if patch_type == APPLY:
            return await self._apply(rt, namespace, name, body, query, manager)
        old = self.existing(rt, namespace, name)  # read only: patches copy what they change
        current = self.view(rt, old)
        if patch_type == MERGE:
            patched = merge_patch(current, body)
        elif patch_type == JSON_PATCH:
            patched = json_patch(current, body)
        elif patch_type == STRATEGIC:
            patched = strategic_merge_patch(current, body)
        else:
            raise error(
                415,
                "the body of the request was in an unknown format - accepted media types "
                f"include: {JSON_PATCH}, {MERGE}, {APPLY}, {STRATEGIC}",
                "UnsupportedMediaType",
            )
        new = self._decode(rt, _kept(rt, patched, subresource), query, warnings)
        written = await self._write(
            rt,
            namespace,
            old,
            new,
            subresource,
            manager or "unknown",
            "patch",
            read_only=read_only,
            warnings=warnings,
        )
        return 200, written

    async def _apply(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        query: dict[str, str],
        manager: str | None,
    ) -> tuple[int, Obj]:
        if not manager:
            raise error(
                422,
                'PatchOptions.meta.k8s.io "" is invalid: '
                "fieldManager: Required value: is required for apply patch",
                "Invalid",
                {
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        cause(
                            "FieldValueRequired",
                            "Required value: is required for apply patch",
                            "fieldManager",
                        )
                    ],
                },
            )
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            config = body if isinstance(body, dict) else {}
            group_version = str(config.get("apiVersion", ""))
            group, _, version = group_version.rpartition("/")
            raise bad_request(
                f"invalid object type: {group}/{version}, Kind={config.get('kind', '')}"
            )
        key = (namespace if rt.namespaced else "", name)
        live = self.store.get(rt.key, key)
        force = truthy(query.get("force"))
        merged = ssa.apply(live, body, manager, force, rt.api_version)
        merged["apiVersion"], merged["kind"] = rt.api_version, rt.kind
        merged["metadata"]["name"] = name
        if live is None:
            warnings_: list[str] = []
            merged["metadata"].pop("resourceVersion", None)
            managed = merged["metadata"].pop("managedFields")
            created = await self.create(rt, namespace, merged, query, manager, warnings_)
            stored = self.store.peek(rt.key, key)
            assert stored is not None
            stored["metadata"]["managedFields"] = managed
            created["metadata"]["managedFields"] = clone(managed)
            return 201, created
        new = self._decode(rt, merged, query, [])
        return 200, await self._write(rt, namespace, live, new, "", manager, "apply", track=False)

    async def _write(
        self,
        rt: ResourceType,
        namespace: str,
        old: Obj,
        new: Obj,
        subresource: str,
        manager: str,
        verb: str,
        *,
        track: bool = True,
        read_only: bool = False,
        warnings: list[str] | None = None,
    ) -> Obj:
        """The shared update path: conflicts, status split, defaults, admission webhooks,
        validation, no-ops. `old` is only read; the result is presented (a view if
        `read_only`)."""
        present = self.view if read_only else self.present
        warnings = warnings if warnings is not None else []
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != old_meta["resourceVersion"]:
            raise conflict(rt, old_meta["name"])
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match "
                f"the name on the URL ({old_meta['name']})"
            )
        if subresource == "status":
            new = self._status_write(rt, old, new)
            meta = new["metadata"]
        elif rt.has_status and rt.key != "namespaces":
            if "status" in old:
                new["status"] = clone(old["status"])
            else:
                new.pop("status", None)
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        for key in ("finalizers", "ownerReferences"):
            if meta.get(key) == []:
                del meta[key]  # omitempty
        if "managedFields" in old_meta and "managedFields" not in meta:
            meta["managedFields"] = old_meta["managedFields"]
        self._defaults(rt, new, creating=False, only="status" if subresource == "status" else None)
        name = old_meta["name"]
        view = self.view(rt, old)
        new = await self._mutate(rt, "UPDATE", namespace, name, new, view, subresource, warnings)
        meta = new["metadata"]
        if not rt.custom:
            _omit_empty_lists(new.get("spec"))
        self._validate(rt, new, old, namespace, subresource)
        await self.admission.validate(
            Attributes(rt, "UPDATE", namespace, name, subresource, new, view), warnings
        )
        if track:
            ssa.record_update(new, old, manager, rt.api_version, subresource)
        if _same(new, old):
            return present(rt, old)
        if rt.has_generation and _spec_changed(new, old):
            meta["generation"] = old_meta.get("generation", 1) + 1
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not meta.get("deletionGracePeriodSeconds")
        ):
            self._commit_delete(rt, obj_key(new))
            return present(rt, new)
        return present(rt, self._commit_update(rt, new, verb))

    def _status_write(self, rt: ResourceType, old: Obj, new: Obj) -> Obj:
        result = clone(old)
        if "status" in new:
            result["status"] = new["status"]
        else:
            result.pop("status", None)
        if rt.status_keeps_metadata:
            for key in ("labels", "annotations"):
                if key in new["metadata"]:
                    result["metadata"][key] = new["metadata"][key]
                else:
                    result["metadata"].pop(key, None)
        if new["metadata"].get("resourceVersion"):
            result["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"]
        return result

    # --- delete ----------------------------------------------------------------------------

    async def delete(
        self, rt: ResourceType, namespace: str, name: str, options: Obj, query: dict[str, str]
    ) -> Obj:
        old = self._existing(rt, namespace, name)
        meta = old["metadata"]
        attrs = Attributes(rt, "DELETE", namespace, name, "", None, self.view(rt, old))
        await self.admission.mutate(attrs, [])
        await self.admission.validate(attrs, [])
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise precondition_conflict(
                rt,
                name,
                f"the UID in the precondition ({preconditions['uid']}) does not match the UID "
                f"in record ({meta['uid']}). The object might have been deleted and then recreated",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != meta["resourceVersion"]
        ):
            raise precondition_conflict(
                rt,
                name,
                f"the ResourceVersion in the precondition ({preconditions['resourceVersion']}) "
                f"does not match the ResourceVersion in record ({meta['resourceVersion']}). "
                "The object might have been modified",
            )
        grace = self._grace(rt, old, options, query)
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        kept_by = _PROPAGATION_FINALIZERS.get(policy or "")
        if (
            kept_by
            and kept_by not in (meta.get("finalizers") or [])
            and not meta.get("deletionTimestamp")
            and rt.key != "namespaces"
        ):
            meta["finalizers"] = [*(meta.get("finalizers") or []), kept_by]
        finalizers = bool(meta.get("finalizers"))
        if rt.key == "namespaces":
            return self._delete_namespace(rt, old)
        if meta.get("deletionTimestamp"):
            current = meta.get("deletionGracePeriodSeconds", 0)
            if grace is None or grace >= current:
                return self.present(rt, old)
            return self._mark_deleting(rt, old, grace, finalizers)
        if grace is None and not finalizers:
            gone = self._commit_delete(rt, obj_key(old))
            return self._delete_result(rt, gone)
        return self._mark_deleting(rt, old, grace or 0, finalizers)

    def _grace(self, rt: ResourceType, obj: Obj, options: Obj, query: dict[str, str]) -> int | None:
        """Pods are deleted gracefully; None means the type has no graceful deletion."""
        if rt.kind != "Pod" or rt.group:
            return None
        requested = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        grace = (
            int(requested)
            if requested is not None
            else int(spec.get("terminationGracePeriodSeconds", 30))
        )
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            grace = 0
        return max(grace, 0)

    def _mark_deleting(self, rt: ResourceType, old: Obj, grace: int, finalizers: bool) -> Obj:
        marked = clone(old)
        meta = marked["metadata"]
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now_time()
            if rt.has_generation:
                meta["generation"] = meta.get("generation", 1) + 1
        meta["deletionGracePeriodSeconds"] = grace
        updated = self._commit_update(rt, marked, "delete")
        if grace == 0 and not finalizers:
            gone = self._commit_delete(rt, obj_key(updated))
            return self._delete_result(rt, gone)
        return self.present(rt, updated)

    def _delete_namespace(self, rt: ResourceType, old: Obj) -> Obj:
        marked = clone(old)
        marked["metadata"]["deletionTimestamp"] = now_time()
        marked.setdefault("status", {})["phase"] = "Terminating"
        return self.present(rt, self._commit_update(rt, marked, "delete"))

    def _delete_result(self, rt: ResourceType, gone: Obj) -> Obj:
        if rt.delete_returns_object:
            return self.present(rt, gone)
        details: dict[str, Any] = {"name": gone["metadata"]["name"]}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = gone["metadata"]["uid"]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    # --- binding ---------------------------------------------------------------------------

    async def bind(self, rt: ResourceType, namespace: str, name: str, body: Any) -> Obj:
        target = (body or {}).get("target") or {}
        stored = self.existing(rt, namespace, name)
        # a binding changes spec.nodeName and the conditions: copy just those levels
        pod = {**stored, "metadata": dict(stored["metadata"])}
        pod["spec"], pod["status"] = (
            dict(stored.get("spec") or {}),
            dict(stored.get("status") or {}),
        )
        if not target.get("name"):
            raise internal("target.name: Required value")
        binding = body if isinstance(body, dict) else {}
        attrs = Attributes(
            rt, "CREATE", namespace, name, "binding", binding, None, ("", "v1", "Binding")
        )
        await self.admission.mutate(attrs, [])
        await self.admission.validate(attrs, [])

        def refuse(why: str) -> ApiError:
            return error(
                409,
                f'Operation cannot be fulfilled on pods/binding "{name}": {why}',
                "Conflict",
                {"name": name, "kind": "pods/binding"},
            )

        spec = pod["spec"]
        if pod["metadata"].get("deletionTimestamp"):
            raise refuse(f"pod {name} is being deleted, cannot be assigned to a host")
        if spec.get("nodeName"):
            raise refuse(f'pod {name} is already assigned to node "{spec["nodeName"]}"')
        if spec.get("schedulingGates"):
            raise refuse(f"pod {name} has non-empty .spec.schedulingGates")
        spec["nodeName"] = target["name"]
        status = pod["status"]
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.insert(
            0,
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_time(),
            },
        )
        status["conditions"] = conditions
        self._commit_update(rt, pod, "bind")
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    # --- watch -----------------------------------------------------------------------------

    def watch_since(self, query: dict[str, str]) -> tuple[int | None, bool]:
        """(rv to replay from, whether to send initial ADDED events)."""
        rv_text = query.get("resourceVersion", "")
        initial = truthy(query.get("sendInitialEvents")) or rv_text in ("", "0")
        if initial:
            return None, True
        return _parse_rv(rv_text), False


def _kept(rt: ResourceType, body: Any, subresource: str) -> Any:
    """What a write to a custom resource with a status subresource keeps of its body:
    the status through /status, everything else through the main resource (the rest is
    the stored object's); only that is decoded (pruned, defaulted, validated)."""
    if not (rt.custom and rt.has_status and isinstance(body, dict)):
        return body
    if subresource == "status":
        return {k: v for k, v in body.items() if k in ("apiVersion", "kind", "metadata", "status")}
    return {k: v for k, v in body.items() if k != "status"}


def _omit_empty_lists(value: Any) -> None:
    """Built-in types serialise empty lists as absent (Go's omitempty)."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v == []]:
            del value[key]
        for item in value.values():
            _omit_empty_lists(item)
    elif isinstance(value, list):
        for item in value:
            _omit_empty_lists(item)


def _same(new: Obj, old: Obj) -> bool:
    def strip(obj: Obj) -> Obj:
        copy_ = dict(obj)
        meta = dict(copy_.get("metadata") or {})
        meta.pop("resourceVersion", None)
        fields = meta.pop("managedFields", None)
        if fields:
            meta["managedFields"] = [{k: v for k, v in e.items() if k != "time"} for e in fields]
        copy_["metadata"] = meta
        return copy_

    return strip(new) == strip(old)


def _spec_changed(new: Obj, old: Obj) -> bool:
    ignore = ("metadata", "status", "apiVersion", "kind")
    return {k: v for k, v in new.items() if k not in ignore} != {
        k: v for k, v in old.items() if k not in ignore
    }


def _sort_key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _parse_rv(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise bad_request(f"invalid resource version: {text}") from exc


def _make_continue(rv: int, start: str) -> str:
    raw = json.dumps(
        {"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _go_char(byte: int) -> str:
    char = chr(byte)
    if char == "'":
        return "'\\''"
    if char.isprintable() and byte < 0x80:
        return f"'{char}'"
    return f"'\\x{byte:02x}'"


def _parse_continue(token: str) -> tuple[int, str]:
    def fail(why: str) -> ApiError:
        return bad_request(f"invalid continue token: {why}")

    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise fail(f"illegal base64 data at input byte {len(token)}") from exc
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        first = next((b for b in raw if b not in b" \t\r\n"), None)
        what = (
            "unexpected end of JSON input"
            if first is None
            else f"invalid character {_go_char(first)} looking for beginning of value"
        )
        raise fail(f"continue key is not valid: {what}") from exc
    if not isinstance(data, dict) or data.get("v") != "meta.k8s.io/v1":
        raise fail(
            "continue key is not valid: "
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        )
    return int(data.get("rv", 0)), str(data.get("start", "")).rstrip("\x00")
