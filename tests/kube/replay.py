"""Replays a recorded transcript against a fresh emulator and compares every step.

Comparison after the transcripts' own normalisation: a placeholder (`<rv:N>`, `<uid:N>`,
`<continue:N>`, `<suffix:N>`) stands for one value that is bound on first sight and must
then stay the same, and two placeholders of a kind never bind the same value; `<time>`,
`<microtime>` and `<age>` match their formats. Watch events compare type, apiVersion, kind
and metadata exactly and, beyond that, only the fields the recording kept (BOOKMARK and
ERROR objects are complete). managedFields are dropped except in server-side-apply.json.

What the recording did not capture but the steps rely on (the namespace made first,
objects made between steps, the real server's own writes while a watch ran, the watch
cache evicting and etcd compacting) is replayed from `SETUP`, each entry saying why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import looptime

from emulator import Emulator
from emulator.clock import now_microtime, now_time
from tests.kube.shared import shared_path

_PLACEHOLDER = re.compile(r"<(rv|uid|continue|suffix):(\d+)>|<(time|microtime|age)>")
_FORMATS = {
    "rv": r"(\d+)",
    "uid": r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
    "continue": r"([A-Za-z0-9_\-=]+)",
    "suffix": r"([a-z0-9]{5})",
    "time": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
    "microtime": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z",
    "age": r"\d+[smhd]",
}


class Bindings:
    """Placeholder <-> value, one-to-one per kind."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}
        self.names: dict[tuple[str, str], str] = {}

    def bind(self, kind: str, number: str, value: str) -> str | None:
        """None if consistent, else why not."""
        bound = self.values.get((kind, number))
        if bound is not None:
            return None if bound == value else f"<{kind}:{number}> is {bound}, got {value}"
        other = self.names.get((kind, value))
        if other is not None:
            return f"<{kind}:{number}> got {value}, already <{kind}:{other}>"
        self.values[(kind, number)] = value
        self.names[(kind, value)] = number
        return None

    def match(self, expected: str, actual: str) -> str | None:
        pieces, kinds, last = [], [], 0
        for found in _PLACEHOLDER.finditer(expected):
            pieces.append(re.escape(expected[last : found.start()]))
            if found.group(1):
                pieces.append(_FORMATS[found.group(1)])
                kinds.append((found.group(1), found.group(2)))
            else:
                pieces.append(_FORMATS[found.group(3)])
            last = found.end()
        if not pieces:
            return None if expected == actual else f"{expected!r} != {actual!r}"
        pieces.append(re.escape(expected[last:]))
        hit = re.fullmatch("".join(pieces), actual, re.S)
        if hit is None:
            return f"{expected!r} does not match {actual!r}"
        for (kind, number), value in zip(kinds, hit.groups(), strict=True):
            problem = self.bind(kind, number, value)
            if problem:
                return problem
        return None


def compare(
    expected: Any, actual: Any, b: Bindings, path: str = "", subset: bool = False
) -> list[str]:
    if isinstance(expected, str) and isinstance(actual, str):
        problem = b.match(expected, actual)
        return [f"{path}: {problem}"] if problem else []
    if isinstance(expected, dict) and isinstance(actual, dict):
        diffs: list[str] = []
        keys = list(expected) if subset else list(dict.fromkeys([*expected, *actual]))
        for key in keys:
            if key not in actual:
                diffs.append(f"{path}.{key}: missing (expected {json.dumps(expected[key])[:200]})")
            elif key not in expected:
                diffs.append(f"{path}.{key}: unexpected {json.dumps(actual[key])[:200]}")
            else:
                deeper = subset and key not in ("metadata",)
                diffs += compare(expected[key], actual[key], b, f"{path}.{key}", deeper)
        return diffs
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [
                f"{path}: {len(expected)} items expected, got {len(actual)}: "
                f"{json.dumps(actual)[:600]}"
            ]
        diffs = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            diffs += compare(e, a, b, f"{path}[{i}]", subset)
        return diffs
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: expected {json.dumps(expected)[:300]}, got {json.dumps(actual)[:300]}"]
    return []


def drop_managed_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_managed_fields(v) for k, v in value.items() if k != "managedFields"}
    if isinstance(value, list):
        return [drop_managed_fields(v) for v in value]
    return value


def _as_set(expected: dict[str, Any], actual: Any, b: Bindings) -> list[str]:
    """Schema causes come in random order on the real server: compare them as a multiset."""
    if not isinstance(actual, dict):
        return ["body: not an object"]
    causes = (actual.get("details") or {}).get("causes") or []
    want = sorted(json.dumps(c, sort_keys=True) for c in expected["details"]["causes"])
    got = sorted(json.dumps(c, sort_keys=True) for c in causes)
    diffs = [] if want == got else [f"causes differ: {got}"]
    prefix = expected["message"].split("[", 1)[0]
    joined = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    if actual.get("message") != f"{prefix}[{joined}]":
        diffs.append(f"message {actual.get('message')!r}")
    rest_e = {k: v for k, v in expected.items() if k not in ("message", "details")}
    rest_a = {k: v for k, v in actual.items() if k not in ("message", "details")}
    return diffs + compare(rest_e, rest_a, b, "")


# --- what the recording left out ------------------------------------------------------------

Action = Callable[["Replay"], Awaitable[None]]


def _pod(
    name: str,
    labels: dict[str, str] | None = None,
    node: str | None = None,
    finalizers: list[str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    if finalizers:
        meta["finalizers"] = finalizers
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        "automountServiceAccountToken": False,
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def create(path: str, body: dict[str, Any]) -> Action:
    async def run(replay: Replay) -> None:
        status, answer = await replay.call("POST", path, body=body)
        assert status == 201, (path, status, answer)

    return run


def delete(path: str) -> Action:
    async def run(replay: Replay) -> None:
        status, answer = await replay.call("DELETE", path)
        assert status == 200, (path, status, answer)

    return run


def namespace(name: str, account: bool) -> list[Action]:
    steps = [
        create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    ]
    if account:
        steps.append(
            create(
                f"/api/v1/namespaces/{name}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
            )
        )
    return steps


def elsewhere() -> Action:
    """A write the real server made on its own (its lease renewals) while a watch ran."""

    async def run(replay: Replay) -> None:
        replay.emulator.store.next_rv()

    return run


def evict_window_before(placeholder: str) -> Action:
    """The watch cache dropped everything up to this resourceVersion (>75 s and many writes)."""

    async def run(replay: Replay) -> None:
        replay.emulator.forget_watch_window(int(replay.bindings.values[("rv", placeholder)]))

    return run


def remember_rv(placeholder: str) -> Action:
    """The recorder read the current resourceVersion here (an unrecorded list)."""

    async def run(replay: Replay) -> None:
        replay.bindings.bind("rv", placeholder, str(replay.emulator.store.rv))

    return run


def patch_status(path: str, body: dict[str, Any]) -> Action:
    async def run(replay: Replay) -> None:
        status, answer = await replay.call(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )
        assert status == 200, (path, status, answer)

    return run


def compact() -> Action:
    async def run(replay: Replay) -> None:
        replay.emulator.compact()

    return run


CORRECTIONS: dict[tuple[str, str], tuple[str, str, str]] = {
    # The recording has lease-takeover-stale and lease-takeover send the very same body
    # (resourceVersion <rv:2>) and get 409 then 200. Its note says the stale attempt used
    # lease-get's resourceVersion, which is <rv:1>; that is what is replayed.
    ("lease.json", "lease-takeover-stale"): ("metadata", "resourceVersion", "<rv:1>"),
}

SETUP: dict[str, dict[str, list[Action]]] = {
    "binding.json": {
        "": [
            *namespace("tx-binding", True),
            create(
                "/api/v1/nodes",
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "tx-binding-n1"}},
            ),
            create("/api/v1/namespaces/tx-binding/pods", _pod("p2")),
            create("/api/v1/namespaces/tx-binding/pods", _pod("p3", node="tx-binding-n1")),
            create(
                "/api/v1/namespaces/tx-binding/pods", _pod("p5", finalizers=["example.com/hold"])
            ),
            delete("/api/v1/namespaces/tx-binding/pods/p5"),
            create("/api/v1/namespaces/tx-binding/pods", _pod("p6")),
        ],
    },
    "core-crud.json": {
        "list-label-eq": [
            create(
                "/api/v1/namespaces/tx-core/pods",
                _pod("sel-a", {"app": "web", "sel": "yes", "tier": "fe"}, node="tx-core-n1"),
            ),
            create(
                "/api/v1/namespaces/tx-core/pods",
                _pod("sel-b", {"app": "web", "sel": "yes"}, node="tx-core-n2"),
            ),
            create("/api/v1/namespaces/tx-core/pods", _pod("sel-c", {"app": "db", "sel": "yes"})),
        ],
        "ns-delete": namespace("tx-core-doomed", False),
    },
    "crd.json": {"": namespace("tx-crd", False)},
    "dra.json": {
        "": namespace("tx-dra", True),
        "status-missing-driver": [
            create(
                "/apis/resource.k8s.io/v1/namespaces/tx-dra/resourceclaims",
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceClaim",
                    "metadata": {"name": "c-bad-alloc"},
                    "spec": {
                        "devices": {
                            "requests": [
                                {"name": "r", "exactly": {"deviceClassName": "tx-gpu.example.com"}}
                            ]
                        }
                    },
                },
            ),
        ],
        "status-double-allocation": [
            patch_status(
                "/apis/resource.k8s.io/v1/namespaces/tx-dra/resourceclaims/c-noclass/status",
                {
                    "status": {
                        "allocation": {
                            "devices": {
                                "results": [
                                    {
                                        "request": "x",
                                        "driver": "gpu.example.com",
                                        "pool": "tx-dra-n1",
                                        "device": "gpu-0",
                                    }
                                ]
                            },
                            "nodeSelector": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchFields": [
                                            {
                                                "key": "metadata.name",
                                                "operator": "In",
                                                "values": ["tx-dra-n1"],
                                            }
                                        ]
                                    }
                                ]
                            },
                        }
                    }
                },
            ),
        ],
        "claim-list-after-template": [elsewhere()],
    },
    "events.json": {"": namespace("tx-events", False)},
    "lease.json": {"": namespace("tx-lease", False)},
    "podgroup.json": {"": namespace("tx-gang", True)},
    "server-side-apply.json": {"": namespace("tx-ssa", False)},
    "status-subresource.json": {"": namespace("tx-status", True)},
    "watches.json": {
        "": [
            *namespace("tx-watch", True),
            create("/api/v1/namespaces/tx-watch/pods", _pod("w-a", {"app": "web"})),
        ],
        "watch-bookmarks-idle": [elsewhere()],
        "watch-initial-events": [elsewhere()],
        "watch-rv0-bookmarks": [elsewhere()],
        "w2-stop-matching": [elsewhere()],
        "w3-bind": [create("/api/v1/namespaces/tx-watch/pods", _pod("w-d")), elsewhere()],
        "w4-change": [elsewhere(), remember_rv("19")],
        "list-too-new": [elsewhere()],
        "list-exact-compacted": [compact()],
        "watch-too-old": [evict_window_before("15")],
        "list-rv-old-notolderthan": [elsewhere()],
    },
}


# --- the replay ---------------------------------------------------------------------------------


@dataclass
class Replay:
    name: str
    emulator: Emulator
    session: aiohttp.ClientSession
    bindings: Bindings = field(default_factory=Bindings)
    results: dict[str, list[str]] = field(default_factory=dict)

    def substitute(self, value: Any) -> Any:
        if isinstance(value, str):

            def replace(found: re.Match[str]) -> str:
                kind = found.group(1) or found.group(3)
                if kind == "time":
                    return now_time()
                if kind == "microtime":
                    return now_microtime()
                key = (kind, found.group(2))
                if key not in self.bindings.values and kind == "rv":
                    self.bindings.bind("rv", found.group(2), str(self.emulator.store.rv))
                return self.bindings.values[key]

            return _PLACEHOLDER.sub(replace, value)
        if isinstance(value, dict):
            return {k: self.substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v) for v in value]
        return value

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str | None = None,
    ) -> tuple[int, Any]:
        status, answer, _ = await self.request(
            method, path, query=query, body=body, content_type=content_type, accept=accept
        )
        return status, answer

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = "application/json",
        accept: str | None = None,
    ) -> tuple[int, Any, list[str]]:
        headers = {}
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            headers["Content-Type"] = content_type or "application/json"
        if accept:
            headers["Accept"] = accept
        async with self.session.request(
            method, self.emulator.url + path, params=query or {}, data=data, headers=headers
        ) as response:
            text = await response.text()
            try:
                answer = json.loads(text)
            except ValueError:
                answer = text
            return response.status, answer, response.headers.getall("Warning", [])

    async def open_watch(self, watch: dict[str, Any]) -> aiohttp.ClientResponse:
        query = self.substitute(watch["query"])
        response = await self.session.get(
            self.emulator.url + watch["path"],
            params=query,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return response

    async def read_watch(
        self, response: aiohttp.ClientResponse
    ) -> tuple[int, list[dict[str, Any]]]:
        events = []
        async for line in response.content:
            if line.strip():
                events.append(json.loads(line))
        response.release()
        return response.status, events

    def check_request(
        self, step: dict[str, Any], status: int, answer: Any, warnings: list[str]
    ) -> list[str]:
        expected = step["response"]
        diffs = (
            []
            if status == expected["status"]
            else [f"status {status}, expected {expected['status']}"]
        )
        if self.name != "server-side-apply.json":
            answer = drop_managed_fields(answer)
        if "as a set" in step["note"] and isinstance(expected["body"], dict):
            diffs += _as_set(expected["body"], answer, self.bindings)
        else:
            diffs += compare(expected["body"], answer, self.bindings, "body")
        want_warnings = expected.get("warnings", [])
        if sorted(warnings) != sorted(want_warnings):
            diffs.append(f"warnings {warnings}, expected {want_warnings}")
        return diffs

    def check_watch(
        self, step: dict[str, Any], status: int, events: list[dict[str, Any]]
    ) -> list[str]:
        diffs = (
            []
            if status == step["httpStatus"]
            else [f"HTTP {status}, expected {step['httpStatus']}"]
        )
        got_types = [e["type"] for e in events]
        want_types = [e["type"] for e in step["events"]]
        if got_types != want_types:
            return [*diffs, f"event types {got_types}, expected {want_types}"]
        for i, (want, got) in enumerate(zip(step["events"], events, strict=True)):
            complete = want["type"] in ("BOOKMARK", "ERROR")
            obj = drop_managed_fields(got["object"])
            diffs += compare(
                want["object"], obj, self.bindings, f"events[{i}]", subset=not complete
            )
        return diffs


async def _run(name: str) -> dict[str, list[str]]:
    transcript = json.loads((transcripts() / name).read_text())
    steps = transcript["steps"]
    opener = {action: s for s in steps if "watch" in s for action in s.get("actions", [])}
    setup = SETUP.get(name, {})
    async with (
        Emulator() as emulator,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {emulator.token}"}) as session,
    ):
        replay = Replay(name, emulator, session)
        for action in setup.get("", []):
            await action(replay)
        open_watches: dict[str, aiohttp.ClientResponse] = {}
        for step in steps:
            sid = step["id"]
            try:
                for action in setup.get(sid, []):
                    await action(replay)
                if sid in opener and opener[sid]["id"] not in open_watches:
                    open_watches[opener[sid]["id"]] = await replay.open_watch(opener[sid]["watch"])
                if "watch" in step:
                    response = open_watches.pop(sid, None) or await replay.open_watch(step["watch"])
                    status, events = await replay.read_watch(response)
                    replay.results[sid] = replay.check_watch(step, status, events)
                    continue
                request = step["request"]
                body = request.get("body")
                fix = CORRECTIONS.get((name, sid))
                if fix is not None:
                    body = {**body, fix[0]: {**body[fix[0]], fix[1]: fix[2]}}
                status, answer, warnings = await replay.request(
                    request["method"],
                    replay.substitute(request["path"]),
                    query=replay.substitute(request.get("query") or {}),
                    body=replay.substitute(body),
                    content_type=request.get("contentType"),
                    accept=request.get("accept"),
                )
                replay.results[sid] = replay.check_request(
                    step, status, answer, [_warning_text(w) for w in warnings]
                )
            except Exception as exc:  # a broken step must not hide the others
                replay.results[sid] = [f"replay error: {type(exc).__name__}: {exc}"]
        return replay.results


def _warning_text(header: str) -> str:
    return header


_CACHE: dict[str, dict[str, list[str]]] = {}


def transcripts() -> Path:
    """The recorded transcripts in the maintainers' shared folder."""
    return shared_path("kube-transcripts")


def results(name: str) -> dict[str, list[str]]:
    """Run the file once (on a fake-time loop: watch timeouts and waits cost no wall time)."""
    if name not in _CACHE:
        loop = looptime.new_event_loop(start=0, noop_cycles=200)
        try:
            _CACHE[name] = loop.run_until_complete(_run(name))
        finally:
            loop.close()
    return _CACHE[name]


def step_ids() -> list[tuple[str, str]]:
    ids = []
    for path in sorted(transcripts().glob("*.json")):
        for step in json.loads(path.read_text())["steps"]:
            ids.append((path.name, step["id"]))
    return ids
