"""The aiohttp application: discovery, routing, auth, bodies in and out, watch streams.

Everything behavioural lives in api.py; this module maps HTTP onto it the way the API
server does (paths, content types, query parameters, status codes, the Warning header,
newline-delimited watch events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from controller import jsonio
from emulator import audit
from emulator.api import APPLY, Api, truthy
from emulator.errors import ApiError, error, no_route, status_body
from emulator.faults import fault_error
from emulator.resources import ALL_VERBS, ResourceType
from emulator.store import Event, TooOld

Obj = dict[str, Any]

VERSION_INFO = {
    "major": "1",
    "minor": "36",
    "emulationMajor": "1",
    "emulationMinor": "36",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "35",
    "gitVersion": "v1.36.2",
    "gitCommit": "phalanx-emulator",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name automatically. "
    "Name is primarily intended for creation idempotence and configuration definition. Cannot be "
    "updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
DEFAULT_WATCH_TIMEOUT = 1800.0
BOOKMARK_INTERVAL = 60.0
DUE = 1e-3
"""A wait's end counts as reached this close to it: the loop may fire a timer a hair
early, and on a fake clock (looptime) that moves only when idle, waiting out the hair
again would spin forever."""


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(
        body=jsonio.dumps(body),
        status=status,
        content_type="application/json",
    )
    for warning in warnings or []:
        response.headers.add("Warning", "299 - " + json.dumps(warning))
    return response


class Routes:
    """Resolves a request path to discovery or to (resource type, namespace, name, subresource)."""

    def __init__(self, api: Api, token: str | None) -> None:
        self.api = api
        self.token = token
        self.registry = api.registry
        self._lines = _RecentLines()

    # --- discovery -------------------------------------------------------------------------

    def _resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for rt in sorted(self.registry.in_group_version(group, version), key=lambda r: r.plural):
            entry: Obj = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(ALL_VERBS),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.storage_hash:
                entry["storageVersionHash"] = rt.storage_hash
            resources.append(entry)
            for sub in rt.subresources:
                verbs = ["create"] if sub == "binding" else ["get", "patch", "update"]
                kind = "Binding" if sub == "binding" else rt.kind
                resources.append(
                    {
                        "name": f"{rt.plural}/{sub}",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": kind,
                        "verbs": verbs,
                    }
                )
        group_version = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    def _groups(self) -> Obj:
        groups = []
        for group, versions in sorted(self.registry.group_versions().items()):
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def discovery(self, parts: list[str]) -> Obj | None:
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                ],
            }
        if parts == ["api", "v1"]:
            return self._resource_list("", "v1")
        if parts == ["apis"]:
            return self._groups()
        if len(parts) == 2 and parts[0] == "apis":
            versions = self.registry.group_versions().get(parts[1])
            if versions:
                entries = [{"groupVersion": f"{parts[1]}/{v}", "version": v} for v in versions]
                return {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    "name": parts[1],
                    "versions": entries,
                    "preferredVersion": entries[0],
                }
        if (
            len(parts) == 3
            and parts[0] == "apis"
            and self.registry.in_group_version(parts[1], parts[2])
        ):
            return self._resource_list(parts[1], parts[2])
        if parts == ["version"]:
            return VERSION_INFO
        return None

    def _openapi_v3(self, rest: list[str]) -> Obj | None:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself.

        kubectl looks for a PATCH operation tagged with the kind that takes `fieldValidation`;
        finding it, it leaves validation to the server instead of downloading full schemas.
        """
        versions = [("", "v1")] + [
            (g, v) for g, vs in self.registry.group_versions().items() for v in vs
        ]

        def prefix(group: str, version: str) -> str:
            return f"api/{version}" if not group else f"apis/{group}/{version}"

        if not rest:
            return {
                "paths": {
                    prefix(g, v): {"serverRelativeURL": f"/openapi/v3/{prefix(g, v)}?hash=emulator"}
                    for g, v in versions
                }
            }
        wanted = "/".join(rest)
        for group, version in versions:
            if prefix(group, version) != wanted:
                continue
            paths: Obj = {}
            for rt in self.registry.in_group_version(group, version):
                scope = "/namespaces/{namespace}" if rt.namespaced else ""
                paths[f"/{wanted}{scope}/{rt.plural}/{{name}}"] = {
                    "patch": {
                        "x-kubernetes-group-version-kind": {
                            "group": group,
                            "version": version,
                            "kind": rt.kind,
                        },
                        "parameters": [
                            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                        ],
                        "responses": {},
                    }
                }
            return {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.36.2"},
                "paths": paths,
                "components": {"schemas": {}},
            }
        return None

    def resolve(self, parts: list[str]) -> tuple[ResourceType, str | None, str, str]:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise no_route()
        namespace: str | None = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise no_route()
        rt = self.registry.lookup(group, version, rest[0])
        if rt is None:
            raise no_route()
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if rt.namespaced and namespace is None and name:
            raise no_route()
        if not rt.namespaced and namespace is not None:
            raise no_route()
        if sub and sub not in rt.subresources:
            raise no_route()
        return rt, namespace, name, sub

    # --- the handler -----------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            if (
                self.token is not None
                and request.headers.get("Authorization") != f"Bearer {self.token}"
            ):
                return _json(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": "Unauthorized",
                        "reason": "Unauthorized",
                        "code": 401,
                    },
                    401,
                )
            parts = [p for p in request.path.split("/") if p]
            if self.api.audit is not None:
                await self._audit(request, parts)
            if request.method == "GET":
                found = self.discovery(parts)
                if found is not None:
                    return _json(found)
                if parts and parts[0] in ("healthz", "livez", "readyz"):
                    return web.Response(text="ok")
                if parts[:2] == ["openapi", "v3"]:
                    found = self._openapi_v3(parts[2:])
                    if found is not None:
                        return _json(found)
            rt, namespace, name, sub = self.resolve(parts)
            return await self._dispatch(request, rt, namespace, name, sub)
        except ApiError as exc:
            response = _json(exc.body, exc.code)
            response.headers.update(exc.headers)
            return response

    async def _audit(self, request: web.BaseRequest, parts: list[str]) -> None:
        """Record the request's authorization attributes (audit.py)."""
        assert self.api.audit is not None
        agent = request.headers.get("User-Agent", "")
        try:
            rt, namespace, name, sub = self.resolve(parts)
        except ApiError:
            self.api.audit.append(audit.Request(agent, request.method.lower(), path=request.path))
            return
        query = {k: request.query.getone(k) for k in request.query}
        seen = audit.resource_request(agent, request.method, query, rt, namespace, name, sub)
        self.api.audit.append(seen)
        if seen.verb == "create" and request.body_exists:
            try:
                body = json.loads(await request.read())
            except ValueError:
                return
            self.api.audit.extend(audit.owner_checks(agent, seen, body, self.registry))

    async def _dispatch(
        self, request: web.BaseRequest, rt: ResourceType, namespace: str | None, name: str, sub: str
    ) -> web.StreamResponse:
        query = {k: request.query.getone(k) for k in request.query}
        method = request.method
        warnings: list[str] = []
        manager = (
            query.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
        )
        verb = _verb(method, name, sub, query)
        fault = self.api.faults.take(verb, rt, request.headers.get("User-Agent", ""))
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.code and not (verb == "watch" and fault.drop_watch_after is not None):
                raise fault_error(fault)
        if method == "GET" and not name:
            if truthy(query.get("watch")):
                return await self._watch(
                    request, rt, namespace, query, fault.drop_watch_after if fault else None
                )
            stored, meta = await self.api.list_stored(rt, namespace, query)
            items = [self.api.view(rt, o) for o in stored]
            if "as=Table" in request.headers.get("Accept", ""):
                return _json(self._table(rt, items, meta))
            return _json(
                {
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version,
                    "metadata": meta,
                    "items": [_strip_type(o) for o in items],
                }
            )
        if method == "GET":
            obj = self.api.view(rt, self.api.existing(rt, namespace or "", name))
            if "as=Table" in request.headers.get("Accept", ""):
                return _json(
                    self._table(rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]})
                )
            return _json(obj)
        body = await self._body(request)
        if method == "POST" and not name:
            created = await self.api.create(
                rt, namespace or "", body, query, manager, warnings, read_only=True, fresh=True
            )
            return _json(created, 201, warnings)
        if method == "POST" and sub == "binding":
            return _json(await self.api.bind(rt, namespace or "", name, body), 201)
        if method == "PUT" and name:
            return _json(
                await self.api.update(
                    rt, namespace or "", name, body, query, sub, manager, warnings
                ),
                200,
                warnings,
            )
        if method == "PATCH" and name:
            patch_type = request.content_type
            status, obj = await self.api.patch(
                rt,
                namespace or "",
                name,
                patch_type,
                body,
                query,
                sub,
                query.get("fieldManager") or (None if patch_type == APPLY else manager),
                warnings,
                read_only=True,
            )
            return _json(obj, status, warnings)
        if method == "DELETE" and name:
            options = body if isinstance(body, dict) else {}
            return _json(await self.api.delete(rt, namespace or "", name, options, query))
        raise error(
            405,
            "the server does not allow this method on the requested resource",
            "MethodNotAllowed",
            {},
        )

    async def _body(self, request: web.BaseRequest) -> Any:
        if not request.body_exists:  # (read() keeps the body: the audit may have read it)
            return None
        raw = await request.read()
        if not raw:
            return None
        if len(raw) > MAX_REQUEST_BODY:
            raise error(
                413,
                f"Request entity too large: limit is {MAX_REQUEST_BODY}",
                "RequestEntityTooLarge",
            )
        try:
            if request.content_type == APPLY:
                return yaml.safe_load(raw)
            return jsonio.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise error(400, f"error decoding request body: {exc}", "BadRequest") from exc

    def _table(self, rt: ResourceType, items: list[Obj], meta: Obj) -> Obj:
        columns = [
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": _NAME_DESCRIPTION,
                "priority": 0,
            }
        ]
        extra: list[Obj] = []
        if rt.custom:
            crd = self.api.crds.get(f"{rt.plural}.{rt.group}")
            from emulator.schema import printer_columns

            extra = printer_columns(crd, rt.version) if crd else []
        if not extra:
            extra = [
                {
                    "name": "Age",
                    "type": "date",
                    "jsonPath": ".metadata.creationTimestamp",
                    "description": "",
                    "builtin": True,
                }
            ]
        for column in extra:
            description = (
                column.get("description")
                or f"Custom resource definition column (in JSONPath format): {column['jsonPath']}"
            )
            if column.get("builtin"):
                description = (
                    "CreationTimestamp is a timestamp representing the server time "
                    "when this object was created."
                )
            columns.append(
                {
                    "name": column["name"],
                    "type": column["type"],
                    "format": column.get("format", ""),
                    "description": description,
                    "priority": column.get("priority", 0),
                }
            )
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for column in extra:
                value = _json_path(obj, column["jsonPath"])
                if column["type"] == "date" and isinstance(value, str):
                    value = _age(value)
                cells.append(value)
            partial = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"},
            }
            rows.append({"cells": cells, "object": partial})
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "columnDefinitions": columns,
            "rows": rows,
        }

    async def _watch(
        self,
        request: web.BaseRequest,
        rt: ResourceType,
        namespace: str | None,
        query: dict[str, str],
        drop_after: int | None,
    ) -> web.StreamResponse:
        if (
            truthy(query.get("sendInitialEvents"))
            and query.get("resourceVersionMatch") != "NotOlderThan"
        ):
            message = (
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
            )
            raise error(
                422,
                f'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: {message}',
                "Invalid",
                {
                    "group": "meta.k8s.io",
                    "kind": "ListOptions",
                    "causes": [
                        {
                            "reason": "FieldValueForbidden",
                            "message": message,
                            "field": "resourceVersionMatch",
                        }
                    ],
                },
            )
        match = self.api.matcher(rt, query)
        store = self.api.store
        since, initial = self.api.watch_since(query)
        bookmarks = truthy(query.get("allowWatchBookmarks"))
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        sent = 0

        async def send(kind: str, obj: Obj) -> bool:
            """Write one event; False once a drop-watch fault says the stream ends here."""
            nonlocal sent
            await response.write(_line(kind, obj))
            sent += kind != "BOOKMARK"
            return drop_after is None or sent < drop_after

        def encode(item: tuple[str, Obj, Event | None]) -> bytes:
            kind, obj, event = item
            if event is None:
                return _line(kind, self.api.view(rt, obj))
            return self._lines.line(event, kind, rt, lambda: _line(kind, self.api.view(rt, obj)))

        try:
            watcher = store.watch(
                rt.key, namespace, match, min(since, store.rv) if since is not None else None
            )
        except TooOld as exc:
            await response.prepare(request)
            await send(
                "ERROR",
                status_body(
                    410, f"too old resource version: {exc.requested} ({exc.oldest})", "Expired"
                ),
            )
            await response.write_eof()
            return response
        await response.prepare(request)
        floor = since if since is not None else 0
        try:
            if initial:
                for obj in list(store.items(rt.key, namespace)):
                    if match(obj) and not await send("ADDED", self.api.view(rt, obj)):
                        deadline = loop.time()
                        break
                if bookmarks and loop.time() < deadline:
                    await send("BOOKMARK", self._bookmark(rt, store.rv, initial_end=True))
            next_bookmark = loop.time() + BOOKMARK_INTERVAL
            while True:
                now = loop.time()
                if now >= deadline - DUE:
                    break
                wait = min(deadline, next_bookmark) - now if bookmarks else deadline - now
                try:
                    if watcher.queue.empty():
                        async with asyncio.timeout(wait):  # no task per event, as wait_for makes
                            item = await watcher.queue.get()
                    else:
                        item = watcher.queue.get_nowait()
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark - DUE:
                        await send("BOOKMARK", self._bookmark(rt, store.rv, initial_end=False))
                        next_bookmark = loop.time() + BOOKMARK_INTERVAL
                    continue
                batch = [item]
                while not watcher.queue.empty() and batch[-1] is not None:
                    batch.append(watcher.queue.get_nowait())
                ended = batch[-1] is None
                lines = []
                for queued in batch:
                    if queued is None or int(queued[1]["metadata"]["resourceVersion"]) <= floor:
                        continue
                    lines.append(encode(queued))
                    sent += 1
                    if drop_after is not None and sent >= drop_after:
                        ended = True
                        break
                if lines:
                    await response.write(b"".join(lines))
                if ended:
                    break
        except ConnectionResetError:  # the client left: its watch ends, nothing failed
            store.unwatch(watcher)
            return response
        except asyncio.CancelledError:
            store.unwatch(watcher)
            raise
        store.unwatch(watcher)
        with contextlib.suppress(ConnectionResetError):  # the client left first
            await response.write_eof()
        return response

    def _bookmark(self, rt: ResourceType, rv: int, *, initial_end: bool) -> Obj:
        metadata: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": metadata, **rt.empty}


def _verb(method: str, name: str, sub: str, query: dict[str, str]) -> str:
    if sub == "binding":
        return "bind"
    if method == "GET":
        return "get" if name else ("watch" if truthy(query.get("watch")) else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


class _RecentLines:
    """The watch lines of recent events: every watcher of an event shares one serialisation,
    and only the latest `size` are kept (watchers read events soon after they happen)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lines: OrderedDict[tuple[int, str, str], tuple[Event, bytes]] = OrderedDict()

    def line(self, event: Event, kind: str, rt: ResourceType, make: Callable[[], bytes]) -> bytes:
        key = (id(event), kind, rt.api_version)
        found = self._lines.get(key)
        if found is not None and found[0] is event:
            return found[1]
        line = make()
        self._lines[key] = (event, line)
        if len(self._lines) > self.size:
            self._lines.popitem(last=False)
        return line


def _line(kind: str, obj: Obj) -> bytes:
    return jsonio.dumps_line({"type": kind, "object": obj})


def _strip_type(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _json_path(obj: Obj, path: str) -> Any:
    value: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _age(stamp: str) -> str:
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(int((datetime.now(UTC) - created).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def make_server(api: Api, token: str | None) -> web.Server:
    """aiohttp's low-level server with one handler: every path is ours to route (an
    Application's router and middleware chain would only hand each request on, at a
    cost per request)."""
    routes = Routes(api, token)
    loop = asyncio.get_running_loop()

    def make_request(
        message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY
        )

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if hdrs.EXPECT in request.headers:
            refused = await _expect(request)
            if refused is not None:
                return refused
        return await routes.handle(request)

    return web.Server(handle, request_factory=make_request, access_log=None)


MAX_BODY = 64 * 1024 * 1024
"""The largest request body read (well above the API server's own limit, 3 MiB)."""
MAX_REQUEST_BODY = 3 * 1024 * 1024
"""The API server's `MaxRequestBodyBytes`: a larger create, update or patch body is
refused (413) before it is decoded."""


async def _expect(request: web.BaseRequest) -> web.StreamResponse | None:
    """An `Expect: 100-continue` request is told to go on (as Go's server does when the
    handler reads the body); any other expectation fails (417)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return web.Response(status=417, text=f"Unknown Expect: {expect}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0
    return None
