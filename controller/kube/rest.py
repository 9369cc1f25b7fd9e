"""JSON over the Kubernetes API through kubernetes-asyncio, as plain dicts.

Why plain dicts and not the client's generated models: the controller reads custom
resources (dicts in kubernetes-asyncio anyway), new API fields the pinned client may not
know yet (resource.k8s.io/v1, `spec.schedulingGroup`) are kept instead of dropped, one
shape serves every resource (one informer, one translator), and deserializing thousands
of pods into models costs CPU the admission loop needs. Requests still go through
the client's own authentication (`update_params_for_auth`: bearer-token refresh, exec
plugins) and its REST client's session and settings (connection pool, TLS, proxy);
what is skipped is `call_api`'s walk over every body, header and query value to
serialise its models (ours are plain JSON already: that walk was a tenth of the
controller's CPU under load), and its REST client's `request`, which re-encodes the
body with the standard library's json: bodies are encoded and answers decoded with
orjson (`controller.jsonio`).

Watch streams are split into lines here rather than with aiohttp's `readline`, which
refuses lines over 128 KiB (a large GangJob status is bigger).

A request's timeout is `asyncio.timeout`'s, not aiohttp's: aiohttp's timer turns a
cancellation that arrives as it fires into a TimeoutError (aio-libs/aiohttp#5979), so a
worker that retries on errors would outlive the controller that cancelled it.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio.client import ApiClient
from yarl import URL

from controller import jsonio
from controller.kube.ratelimit import TokenBucket

Obj = dict[str, Any]

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
AUTH_SETTINGS = ["BearerToken"]
"""The client's name for its kubeconfig / service-account credentials."""


class KubeError(Exception):
    """A non-2xx answer (or an ERROR watch event): HTTP status, reason and message."""

    def __init__(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        *,
        retry_after: float | None = None,
        body: Obj | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.body = body or {}

    @staticmethod
    def from_status(status: Obj, http_status: int | None = None) -> KubeError:
        """From a metav1.Status body (an error answer or an ERROR watch event)."""
        code = status.get("code") or http_status or 500
        return KubeError(
            int(code), str(status.get("reason", "")), str(status.get("message", "")), body=status
        )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _query(query: Mapping[str, object] | None) -> list[tuple[str, str]]:
    """Booleans as `true`/`false` (what kubectl sends), None values left out."""
    out: list[tuple[str, str]] = []
    for key, value in (query or {}).items():
        if value is None:
            continue
        out.append((key, ("true" if value else "false") if isinstance(value, bool) else str(value)))
    return out


@functools.lru_cache(maxsize=16)
def _timeout(seconds: float | aiohttp.ClientTimeout | None) -> aiohttp.ClientTimeout:
    """`seconds` in all, or the timeout given, or none (aiohttp's default); one object
    per value, not one per request."""
    if isinstance(seconds, aiohttp.ClientTimeout):
        return seconds
    return aiohttp.ClientTimeout(total=seconds) if seconds else aiohttp.ClientTimeout()


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> URL:
    """The parsed URL (what aiohttp would parse from the text on every request): most
    requests go to a few collection paths (creations, watches), parsed once each."""
    return URL(text)


def settle_environment(api_client: ApiClient) -> None:
    """Read the proxy variables once, not on every request.

    kubernetes-asyncio opens its aiohttp session with `trust_env=True`, so aiohttp reads
    `~/.netrc` and the proxy variables in a worker thread on every request: two thread
    hops per request, a fifth of the controller's CPU under load. The session is swapped
    for one on the same connector (TLS settings and pool kept) with the environment's
    proxy for the API server resolved here, once. netrc credentials are not looked up:
    the API server authenticates with tokens or client certificates, never netrc; nor
    are cookies kept (it sets none, and client-go keeps none), which spares filtering
    a cookie jar on every request."""
    rest_client = api_client.rest_client
    old: aiohttp.ClientSession = rest_client.pool_manager
    proxy: URL | None = None
    proxy_auth: aiohttp.BasicAuth | None = None
    if not rest_client.proxy:
        with suppress(LookupError):
            proxy, proxy_auth = get_env_proxy_for_url(URL(str(api_client.configuration.host)))
    rest_client.pool_manager = aiohttp.ClientSession(
        connector=old.connector,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        proxy=proxy,
        proxy_auth=proxy_auth,
        read_bufsize=2**21,  # kubernetes-asyncio's: an object can be 1.5 MiB (etcd)
    )
    old.detach()


ErrorHook = Callable[[str, int], None]
"""Told of every failed request: (verb, HTTP status), status 0 when nothing answered; the
verb is the HTTP method, or WATCH."""


class Rest:
    """The few verbs the controller needs, on any resource path."""

    def __init__(
        self,
        api_client: ApiClient,
        limiter: TokenBucket | None = None,
        *,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.api_client = api_client
        self.limiter = limiter
        """Paces every request but watches (client-go likewise exempts long-running ones)."""
        self.on_error = on_error

    async def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, object] | None,
        body: object,
        content_type: str,
        timeout: float | aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        verb = "WATCH" if query and query.get("watch") else method
        try:
            client = self.api_client
            rest_client = client.rest_client
            headers = {**client.default_headers, "Accept": JSON, "Content-Type": content_type}
            params = _query(query)
            await client.update_params_for_auth(headers, params, AUTH_SETTINGS)
            url = f"{client.configuration.host}{path}"
            if params:
                url = f"{url}?{urlencode(params)}"
            options: dict[str, Any] = {}
            if rest_client.proxy:
                options["proxy"] = rest_client.proxy
            if rest_client.proxy_headers:
                options["proxy_headers"] = rest_client.proxy_headers
            if rest_client.server_hostname:
                options["server_hostname"] = rest_client.server_hostname
            # the client's own session, TLS and proxy settings, as its REST client would
            # send it, with the body encoded here (orjson) rather than by it (json)
            response: aiohttp.ClientResponse = await rest_client.pool_manager.request(
                method,
                _url(url),
                headers=headers,
                data=None if body is None or isinstance(body, bytes) else jsonio.dumps(body),
                timeout=_timeout(timeout),
                **options,
            )
        except (aiohttp.ClientError, OSError, TimeoutError):
            if self.on_error is not None:
                self.on_error(verb, 0)
            raise
        if response.status >= 400:
            if self.on_error is not None:
                self.on_error(verb, response.status)
            try:
                text = await response.text()
            finally:
                response.release()
            try:
                status = json.loads(text)
            except json.JSONDecodeError:
                status = {"message": text[:200]}
            error = KubeError.from_status(
                status if isinstance(status, dict) else {}, response.status
            )
            error.status = response.status
            error.retry_after = _retry_after(response.headers)
            raise error
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        body: object = None,
        content_type: str = JSON,
        timeout: float | None = 60.0,
    ) -> Obj:
        """One request; the answer's JSON body, or KubeError (TimeoutError after
        `timeout` seconds)."""
        if self.limiter is not None:
            await self.limiter.acquire()  # before the timeout starts: a wait for our turn
        try:
            async with asyncio.timeout(timeout):
                response = await self._send(method, path, query, body, content_type, None)
                try:
                    data = await response.read()
                finally:
                    response.release()
        except TimeoutError:
            if self.on_error is not None:
                self.on_error(method, 0)
            raise
        parsed = jsonio.loads(data) if data else {}
        return parsed if isinstance(parsed, dict) else {"items": parsed}

    async def get(self, path: str, query: Mapping[str, object] | None = None) -> Obj:
        return await self.request("GET", path, query=query)

    @asynccontextmanager
    async def watch(
        self, path: str, query: Mapping[str, object]
    ) -> AsyncIterator[AsyncIterator[Obj]]:
        """A watch stream: yields its events (`{type, object}`) until the server ends it."""
        response = await self._send(
            "GET",
            path,
            {**query, "watch": True},
            None,
            JSON,
            aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        try:
            yield _events(response)
        finally:
            response.close()


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[Obj]:
    pending: list[bytes] = []
    async for chunk in response.content.iter_any():
        *complete, rest = chunk.split(b"\n")
        for i, piece in enumerate(complete):
            line = b"".join([*pending, piece]) if i == 0 and pending else piece
            if line.strip():
                yield jsonio.loads(line)
        if complete:
            pending.clear()
        if rest:
            pending.append(rest)
    tail = b"".join(pending)
    if tail.strip():
        yield jsonio.loads(tail)
