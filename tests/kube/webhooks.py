"""A scripted admission webhook over TLS, for testing how the emulator calls webhooks.

`Scripted` answers every AdmissionReview with what its `answer` function returns (by
default: allowed), records the reviews it got, and can be made to hang. Its certificate
is made by the emulator's own throwaway CA maker, for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from emulator.tls import make_cert

Obj = dict[str, Any]
Answer = Callable[[Obj], Obj]


def allowed(request: Obj) -> Obj:
    return {"allowed": True}


class Scripted:
    """`async with Scripted(answer) as hook:`; `hook.url`, `hook.ca_bundle`, `hook.reviews`."""

    def __init__(
        self, answer: Answer = allowed, *, hang: bool = False, host: str = "127.0.0.1"
    ) -> None:
        self.answer = answer
        self.hang = hang
        self.reviews: list[Obj] = []
        self.cert = make_cert(host)
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.cert.ca_pem).decode()

    async def _handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review["request"])
        if self.hang:
            await asyncio.sleep(3600)
        answer = {"uid": review["request"]["uid"], **self.answer(review["request"])}
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}
        )

    async def __aenter__(self) -> Scripted:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as workdir:
            crt, key = Path(workdir) / "c.crt", Path(workdir) / "c.key"
            crt.write_bytes(self.cert.cert_pem)
            key.write_bytes(self.cert.key_pem)
            context.load_cert_chain(crt, key)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def patch_of(operations: list[Obj]) -> Obj:
    """An allowing answer carrying a JSONPatch."""
    raw = base64.b64encode(json.dumps(operations).encode()).decode()
    return {"allowed": True, "patchType": "JSONPatch", "patch": raw}


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port that refuses connections while the context lasts: bound and never
    listening, so no other process (tests run side by side) can listen on it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def webhook(
    name: str,
    url: str,
    ca_bundle: str = "",
    *,
    operations: tuple[str, ...] = ("CREATE",),
    resources: tuple[str, ...] = ("configmaps",),
    group: str = "",
    **fields: Any,
) -> Obj:
    """One webhook entry of a configuration, calling `url`."""
    config: Obj = {"url": url}
    if ca_bundle:
        config["caBundle"] = ca_bundle
    return {
        "name": name,
        "clientConfig": config,
        "rules": [
            {
                "operations": list(operations),
                "apiGroups": [group],
                "apiVersions": ["*"],
                "resources": list(resources),
            }
        ],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        **fields,
    }


def configuration(kind: str, name: str, *hooks: Obj) -> Obj:
    """A Validating- or MutatingWebhookConfiguration (`kind` names which)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": f"{kind}WebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": list(hooks),
    }
