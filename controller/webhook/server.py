"""The admission webhook over HTTPS (aiohttp), with certificates reloaded in place.

One `WebhookServer` serves the four paths of configs.py on port 9443. It starts
listening once it has a certificate and from then on takes new ones without a restart:
`load` puts the new pair into the live TLS context, so the next handshake presents it
while open connections finish on the old one. The certificate comes from the Secret,
watched by `SecretWatch` (whoever writes it: our CertManager, or cert-manager).

A request is answered from the cluster the caches hold. Until they have synced the
answer is HTTP 503, so the API server applies the webhook's failurePolicy rather than
taking a verdict made on an empty cluster. A body that is not an AdmissionReview is 400;
a rule that fails unexpectedly is logged and answered 500 (the same policy applies):
neither ever stops the server, and a hostile object costs one request, not the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import structlog
from aiohttp import web
from cryptography import x509

from controller.kube.informer import DELETED, Informer
from controller.kube.resources import NAMESPACES
from controller.kube.rest import KubeError, Obj, Rest
from controller.webhook import configs, gangjob, pods, queue
from controller.webhook.certs import SECRETS, Bundle, issued_bundle
from controller.webhook.cluster import CacheView, Cluster
from controller.webhook.review import Request, ReviewError, Verdict, parse, response

log = structlog.get_logger("phalanx.webhook")

MAX_BODY = 32 * 1024 * 1024
"""The API server sends objects of up to 3 MiB, twice for an update; room to spare."""
Rule = Callable[[Request, Cluster, Mapping[str, str] | None], Verdict]


def _queue_rule(request: Request, cluster: Cluster, labels: Mapping[str, str] | None) -> Verdict:
    return queue.validate(request, cluster)


RULES: dict[str, tuple[str, Rule]] = {
    configs.GANGJOB_PATH: ("gangjob", gangjob.validate),
    configs.QUEUE_PATH: ("queue", _queue_rule),
    configs.MUTATE_POD_PATH: ("mutate-pod", pods.mutate),
    configs.VALIDATE_POD_PATH: ("validate-pod", pods.validate),
}


class WebhookServer:
    """`run()` serves until cancelled; `serving` is set once listening (`port` is then real)."""

    def __init__(
        self,
        view: CacheView,
        rest: Rest | None = None,
        *,
        host: str = "0.0.0.0",
        port: int = 9443,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.view = view
        self.rest = rest
        self.host = host
        self.port = port
        self.observe = observe
        """Called with (webhook, outcome, seconds) after each review (metrics)."""
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.loaded = anyio.Event()
        self.serving = anyio.Event()
        self.serial: int | None = None
        """Serial number of the certificate served now."""
        self.reviews = 0

    # ---- certificates -------------------------------------------------------------------
    def load(self, bundle: Bundle) -> bool:
        """Serve this certificate from the next handshake on; False if it is the one
        served already or does not load (the current one stays)."""
        try:
            serial = x509.load_pem_x509_certificate(bundle.tls_crt).serial_number
        except ValueError as exc:
            log.warning("webhook certificate does not parse", error=str(exc))
            return False
        if serial == self.serial:
            return False
        try:
            with _pem_file(bundle.tls_crt) as cert_file, _pem_file(bundle.tls_key) as key_file:
                self.context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError) as exc:
            log.warning("webhook certificate does not load", error=str(exc))
            return False
        self.serial = serial
        self.loaded.set()
        log.info("webhook certificate loaded", serial=f"{serial:x}")
        return True

    # ---- serving ------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        for path, (name, rule) in RULES.items():
            app.router.add_post(path, self._handler(name, rule))
        return app

    async def run(self) -> None:
        await self.loaded.wait()
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.context)
            await site.start()
            self.port = runner.addresses[0][1]
            self.serving.set()
            log.info("webhook serving", port=self.port)
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await runner.cleanup()

    def _handler(self, name: str, rule: Rule) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(http: web.Request) -> web.Response:
            started = time.perf_counter()
            answer, outcome = await self._review(http, rule)
            if self.observe is not None:
                self.observe(name, outcome, time.perf_counter() - started)
            return answer

        return handle

    async def _review(self, http: web.Request, rule: Rule) -> tuple[web.Response, str]:
        try:
            body: Any = json.loads(await http.read())
            request = parse(body)
        except (ValueError, RecursionError, ReviewError) as exc:
            what = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)
            return web.Response(status=400, text=f"not an AdmissionReview: {what}\n"), "bad-request"
        if not self.view.ready:
            return (
                web.Response(status=503, text="caches not synced yet; retry in a moment\n"),
                "unavailable",
            )
        try:
            labels = await self.namespace_labels(request.namespace)
            verdict = rule(request, self.view.cluster(), labels)
        except Exception:
            log.exception("webhook rule failed", uid=request.uid, kind=request.kind)
            return web.Response(status=500, text="internal error; see the webhook's log\n"), "error"
        self.reviews += 1
        outcome = "allowed" if verdict.allowed else "denied"
        if verdict.allowed and verdict.patch:
            outcome = "mutated"
        return web.json_response(response(request.uid, verdict, request)), outcome

    async def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """From the cache, else from the API server (a namespace made a moment ago)."""
        if not name:
            return None
        labels = self.view.namespace_labels(name)
        if labels is not None or self.rest is None:
            return labels
        try:
            found = await self.rest.get(NAMESPACES.path(name=name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return (found.get("metadata") or {}).get("labels") or {}


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A path to `data` for `load_cert_chain`, which reads only files: an in-memory file
    (the key never touches a disk, and a read-only root filesystem is fine), else a
    private temporary file."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fd = os.memfd_create("phalanx-webhook-pem", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="phalanx-webhook-") as workdir:
        path = Path(workdir) / "pem"
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        yield str(path)


class SecretWatch:
    """Watches the certificate Secret and loads each new bundle into the server."""

    def __init__(self, rest: Rest, server: WebhookServer, namespace: str, name: str) -> None:
        self.server = server
        self.informer = Informer(
            rest, SECRETS, namespace=namespace, field_selector=f"metadata.name={name}"
        )
        self.informer.add_handler(self._on_secret)

    def _on_secret(self, kind: str, old: Obj | None, new: Obj) -> None:
        if kind == DELETED:
            return  # keep serving what we have; the CertManager writes a new one
        bundle = issued_bundle(new)  # the serving pair is all it needs (no ca.crt with ACME)
        if bundle is not None:
            self.server.load(bundle)

    async def run(self) -> None:
        await self.informer.run()
