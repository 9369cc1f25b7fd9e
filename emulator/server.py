"""`Emulator`: start the API emulator on 127.0.0.1 (ephemeral port), write a kubeconfig,
and expose the test hooks as Python methods (never as HTTP routes)."""

from __future__ import annotations

import base64
import secrets
import ssl
import tempfile
from pathlib import Path

import yaml
from aiohttp import web

from emulator import audit
from emulator.api import Api
from emulator.claims import ResourceClaims
from emulator.controllers import ControllerManager, ServiceAccounts, bootstrap
from emulator.faults import Fault, Faults
from emulator.garbage import GarbageCollector
from emulator.http import make_server
from emulator.namespaces import Namespaces
from emulator.nodes import NodeLifecycle
from emulator.podgroups import PodGroupProtection
from emulator.resources import Registry
from emulator.store import Store
from emulator.tls import ServerCert, make_cert
from emulator.uids import OrderedUids


class Emulator:
    """One in-process API server. `async with Emulator() as emu:` starts and stops it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        token: str | None = None,
        workdir: Path | None = None,
        service_account_admission: bool = True,
        controllers: bool = False,
        window_seconds: float = 75.0,
        ordered_uids: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.token = token if token is not None else secrets.token_hex(16)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="phalanx-emulator-"))
        self.store = Store(window_seconds=window_seconds)
        self.registry = Registry()
        self.faults = Faults()
        self.api = Api(
            self.store,
            self.registry,
            self.faults,
            service_account_admission=service_account_admission,
        )
        if ordered_uids:  # creation order breaks ties of equal creationTimestamps
            self.api.new_uid = OrderedUids()
        self.controllers: ControllerManager | None = None
        """The controller-manager's controllers (with `controllers=True`); they run while
        the server does. `await emu.controllers.idle()` waits until they have caught up."""
        if controllers:
            ServiceAccounts(self.api)
            self.controllers = ControllerManager(self.api)
            for controller in (
                ResourceClaims,
                GarbageCollector,
                Namespaces,
                PodGroupProtection,
                NodeLifecycle,
            ):
                self.controllers.add(controller)
            bootstrap(self.api)
        self._cert: ServerCert | None = make_cert(host) if tls else None
        self._runner: web.ServerRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig"

    async def start(self) -> Emulator:
        self._runner = web.ServerRunner(
            make_server(self.api, self.token), handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        context = None
        if self._cert is not None:
            cert_file, key_file = self.workdir / "server.crt", self.workdir / "server.key"
            cert_file.write_bytes(self._cert.cert_pem)
            key_file.write_bytes(self._cert.key_pem)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert_file, key_file)
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.write_kubeconfig()
        if self.controllers is not None:
            self.controllers.start()
        return self

    async def stop(self) -> None:
        if self.controllers is not None:
            await self.controllers.stop()
        await self.api.admission.close()
        self.store.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def load(self, manifest: Path) -> list[str]:
        """Create the objects of a YAML manifest (e.g. our crds/*.yaml); returns their names."""
        names = []
        for doc in yaml.safe_load_all(manifest.read_text()):
            if not doc:
                continue
            group = doc["apiVersion"].rpartition("/")[0]
            rt = self.registry.by_kind(group, doc["kind"])
            if rt is None:
                raise ValueError(
                    f"{manifest}: kind {doc['kind']!r} of {doc['apiVersion']!r} is not served"
                )
            namespace = doc.get("metadata", {}).get("namespace", "default") if rt.namespaced else ""
            created = await self.api.create(rt, namespace, doc, {}, "phalanx-emulator", [])
            names.append(created["metadata"]["name"])
        return names

    def write_kubeconfig(self) -> Path:
        cluster: dict[str, object] = {"server": self.url}
        if self._cert is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self._cert.ca_pem).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "emulator", "user": {"token": self.token}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}
            ],
            "current-context": "emulator",
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config))
        return self.kubeconfig_path

    # --- test hooks ----------------------------------------------------------------------

    def route_service(self, namespace: str, name: str, port: int, address: tuple[str, int]) -> None:
        """Where a webhook's service reference (namespace, name, port) reaches its server:
        what kube-proxy and the Service's endpoints do in a cluster."""
        self.api.admission.services[(namespace, name, port)] = address

    def inject_fault(self, fault: Fault) -> Fault:
        """Make matching requests fail (status code), wait (delay) or drop watches."""
        return self.faults.inject(fault)

    def fail_after_writes(self, count: int) -> None:
        """Fail-stop: the next `count` writes succeed, every later one gets 503."""
        self.faults.fail_after_writes(count)

    def start_audit(self) -> list[audit.Request]:
        """Keep every request's authorization attributes from now on (audit.py); the list
        returned grows as requests come."""
        if self.api.audit is None:
            self.api.audit = []
        return self.api.audit

    def clear_faults(self) -> None:
        self.faults.clear()

    def forget_watch_window(self, up_to: int | None = None) -> None:
        """Evict the watch window (up to a resourceVersion): older watches get ERROR 410."""
        self.store.forget_window(up_to)

    def compact(self, up_to: int | None = None) -> None:
        """etcd compaction: Exact lists at older resourceVersions get 410."""
        self.store.compact(up_to)

    async def restart(self) -> None:
        """Stop and start on the same port: watches end, data stays, the window starts anew."""
        await self.stop()
        self.store.forget_window()
        await self.start()
