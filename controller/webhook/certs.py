"""The webhook's TLS: a self-signed CA and a serving certificate in a Secret, renewed
before they expire, and the CA bundle patched into the webhook configurations.

The Secret (`phalanx-webhook-tls` in the controller's namespace) holds `tls.crt` and
`tls.key` (the serving pair), `ca.crt` (the CA bundle the API server must trust) and
`ca.key` (to issue the next serving certificate). Every replica runs the same
reconcile; writes carry the resourceVersion they read, so two replicas never both win,
and the loser adopts what the winner wrote.

Renewal, chosen so that no moment exists where the API server distrusts what is served:
- the serving certificate (1 year by default) is issued again by the current CA when
  fewer than `renew_before` days are left, when it does not name every service host,
  or when no CA in the bundle signed it; the CA bundle does not change, so nothing has
  to be re-trusted;
- the CA (10 years) is replaced when fewer than `ca_renew_before` days are left: the new
  CA goes first in `ca.crt`, the old one stays after it until it expires, and the
  serving certificate, still signed by the old CA and still trusted, is kept until its
  own renewal (months later, when the new CA has long been in every caBundle).
The reconcile writes the Secret first, then patches `caBundle` of every webhook in both
configurations from the Secret it wrote (or found). With cert-manager managing the
Secret and its CA injector the bundles, none of this runs: the server only reads the
Secret (server.py).

A Secret that cert-manager manages (its `cert-manager.io/certificate-name` or
`cert-manager.io/issuer-name` annotation, its `controller.cert-manager.io/fao` label, or
a Certificate owner) is never written in the built-in mode either: writing it would
fight cert-manager, which issues it again, and throw away its CA. The reconcile says so
in a warning (how to switch modes), serves the Secret's certificate as it is, and patches
the caBundles with the Secret's `ca.crt` (none if it has none: the issuer's CA is then
unknown, as with ACME, and the caBundles are left as they are).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import anyio
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.kube.resources import Resource
from controller.kube.rest import KubeError, Obj, Rest

log = structlog.get_logger("phalanx.webhook.certs")

SECRETS = Resource("", "v1", "secrets", "Secret", True)
VALIDATING = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    False,
)
MUTATING = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    False,
)
KEYS = ("tls.crt", "tls.key", "ca.crt", "ca.key")
CERT_MANAGER_ANNOTATIONS = ("cert-manager.io/certificate-name", "cert-manager.io/issuer-name")
CERT_MANAGER_LABEL = "controller.cert-manager.io/fao"
"""Labels every Secret of a Certificate's `spec.secretName` (cert-manager 1.12 and on)."""
Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def service_hosts(service: str, namespace: str, extra: Sequence[str] = ()) -> list[str]:
    """Every name the API server may use for the webhook Service, then `extra`."""
    base = [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]
    return base + [h for h in extra if h not in base]


@dataclass(frozen=True)
class Bundle:
    """The Secret's four PEM blobs."""

    tls_crt: bytes
    tls_key: bytes
    ca_crt: bytes
    ca_key: bytes

    @classmethod
    def from_secret(cls, secret: Obj) -> Bundle | None:
        """The bundle of a Secret, None if a key is missing or not base64."""
        data = secret.get("data") or {}
        try:
            blobs = [base64.b64decode(str(data[k]), validate=True) for k in KEYS[:3]]
            ca_key = base64.b64decode(str(data.get("ca.key", "")), validate=True)
        except (KeyError, ValueError):
            return None
        return cls(blobs[0], blobs[1], blobs[2], ca_key)

    def data(self) -> dict[str, str]:
        blobs = (self.tls_crt, self.tls_key, self.ca_crt, self.ca_key)
        return {k: base64.b64encode(v).decode() for k, v in zip(KEYS, blobs, strict=True)}

    def serving(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.tls_crt)

    def cas(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.ca_crt)


def managed_by_cert_manager(secret: Obj) -> str | None:
    """Who in cert-manager manages a Secret (`Certificate <name>`, `Issuer <name>`,
    `cert-manager`), or None if it does not."""
    meta = secret.get("metadata") or {}
    annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
    for key in CERT_MANAGER_ANNOTATIONS:
        if annotations.get(key):
            kind = "Certificate" if key.endswith("certificate-name") else "issuer"
            return f"{kind} {annotations[key]}"
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == "Certificate" and str(ref.get("apiVersion", "")).startswith(
            "cert-manager.io/"
        ):
            return f"Certificate {ref.get('name')}"
    if str(labels.get(CERT_MANAGER_LABEL, "")).lower() == "true":
        return "cert-manager"
    return None


def issued_bundle(secret: Obj) -> Bundle | None:
    """The bundle of a Secret someone else issues: `tls.crt` and `tls.key`, `ca.crt` if
    there is one, never a CA key. None if the pair is missing or not base64."""
    data = secret.get("data") or {}
    try:
        blobs = [base64.b64decode(str(data.get(k, "")), validate=True) for k in KEYS[:3]]
    except ValueError:
        return None
    if not blobs[0] or not blobs[1]:
        return None
    return Bundle(blobs[0], blobs[1], blobs[2], b"")


# ---- making certificates -------------------------------------------------------------------
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(now: datetime.datetime, days: float) -> tuple[bytes, bytes]:
    """(certificate, key) of a new self-signed CA valid for `days`."""
    key = _key()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"phalanx-webhook-ca@{int(now.timestamp())}")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert), _pem_key(key)


def make_serving(
    ca_crt: bytes, ca_key: bytes, hosts: Sequence[str], now: datetime.datetime, days: float
) -> tuple[bytes, bytes]:
    """(certificate, key) for `hosts` (DNS names or IP addresses), signed by the CA."""
    ca = x509.load_pem_x509_certificate(ca_crt)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = _key()
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    return _pem(cert), _pem_key(key)


# ---- judging them ----------------------------------------------------------------------------
def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def _pair_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError):
        return False
    return cert.public_key() == key.public_key()


@dataclass(frozen=True)
class Policy:
    """How long certificates live and when they are renewed (days)."""

    hosts: tuple[str, ...]
    cert_days: float = 365.0
    renew_before_days: float = 30.0
    ca_days: float = 3650.0
    ca_renew_before_days: float = 730.0


def ca_problem(bundle: Bundle | None, now: datetime.datetime, policy: Policy) -> str | None:
    """Why the CA must be replaced, or None."""
    if bundle is None:
        return "no certificate Secret"
    try:
        cas = bundle.cas()
    except ValueError as exc:
        return f"ca.crt does not parse: {exc}"
    if not cas or not bundle.ca_key or not _pair_matches(_pem(cas[0]), bundle.ca_key):
        return "ca.key is missing or does not match the first certificate of ca.crt"
    left = cas[0].not_valid_after_utc - now
    if left < datetime.timedelta(days=policy.ca_renew_before_days):
        return f"the CA expires in {left.days} days"
    return None


def serving_problem(bundle: Bundle, now: datetime.datetime, policy: Policy) -> str | None:
    """Why the serving certificate must be issued again, or None."""
    try:
        cert = bundle.serving()
        cas = bundle.cas()
    except ValueError as exc:
        return f"a certificate does not parse: {exc}"
    if not _pair_matches(bundle.tls_crt, bundle.tls_key):
        return "tls.key does not match tls.crt"
    if not any(_signed_by(cert, ca) and ca.not_valid_after_utc > now for ca in cas):
        return "no unexpired CA of ca.crt signed tls.crt"
    missing = set(policy.hosts) - _names(cert)
    if missing:
        return f"tls.crt does not name {', '.join(sorted(missing))}"
    left = cert.not_valid_after_utc - now
    if left < datetime.timedelta(days=policy.renew_before_days):
        return f"tls.crt expires in {max(left.days, 0)} days"
    return None


def renewed(
    bundle: Bundle | None, now: datetime.datetime, policy: Policy
) -> tuple[Bundle, list[str]] | None:
    """The bundle to write and why, or None if `bundle` is fine as it is."""
    why: list[str] = []
    ca_crt = bundle.ca_crt if bundle else b""
    ca_key = bundle.ca_key if bundle else b""
    problem = ca_problem(bundle, now, policy)
    if problem is not None:
        why.append(problem)
        new_ca, ca_key = make_ca(now, policy.ca_days)
        try:
            kept = [c for c in (bundle.cas() if bundle else []) if c.not_valid_after_utc > now]
        except ValueError:
            kept = []
        ca_crt = new_ca + b"".join(_pem(c) for c in kept)
    else:
        assert bundle is not None
        live = [c for c in bundle.cas() if c.not_valid_after_utc > now]
        pruned = b"".join(_pem(c) for c in live)
        if pruned != bundle.ca_crt:
            why.append("ca.crt holds an expired CA")
            ca_crt = pruned
    current = Bundle(
        bundle.tls_crt if bundle else b"", bundle.tls_key if bundle else b"", ca_crt, ca_key
    )
    problem = serving_problem(current, now, policy) if bundle else "no serving certificate"
    if problem is not None:
        why.append(problem)
        tls_crt, tls_key = make_serving(ca_crt, ca_key, policy.hosts, now, policy.cert_days)
        current = Bundle(tls_crt, tls_key, ca_crt, ca_key)
    return (current, why) if why else None


# ---- the Secret and the configurations -----------------------------------------------------
class CertManager:
    """Keeps the Secret valid and the configurations' caBundle in step with it."""

    def __init__(
        self,
        rest: Rest,
        *,
        namespace: str,
        secret: str,
        configurations: tuple[str, str],
        policy: Policy,
        clock: Clock = utc_now,
        on_bundle: Callable[[Bundle], object] | None = None,
    ) -> None:
        self.rest = rest
        self.namespace = namespace
        self.secret = secret
        self.validating, self.mutating = configurations
        self.policy = policy
        self.clock = clock
        self.on_bundle = on_bundle
        self.rotations = 0
        self._adopted: str | None = None
        self._no_ca: str | None = None
        self.settled = anyio.Event()
        """Set once a reconcile has completed: the Secret is valid and the caBundles agree."""

    async def reconcile(self) -> Bundle:
        """Make the Secret valid (creating or renewing it), patch the caBundles, and
        return the bundle now in the Secret."""
        for _ in range(5):
            found = await self._read()
            manager = None if found is None else managed_by_cert_manager(found)
            if found is not None and manager is not None:
                return await self._adopt(found, manager)
            bundle = Bundle.from_secret(found) if found is not None else None
            change = renewed(bundle, self.clock(), self.policy)
            if change is None:
                assert bundle is not None
                break
            bundle, why = change
            try:
                await self._write(found, bundle)
            except KubeError as exc:
                if exc.status == 409:
                    continue  # another replica wrote first: adopt what it wrote
                raise
            self.rotations += 1
            log.info("webhook certificate written", secret=self.secret, why="; ".join(why))
            break
        else:
            raise RuntimeError(f"could not settle Secret {self.namespace}/{self.secret}")
        if self.on_bundle is not None:
            self.on_bundle(bundle)
        await self.patch_ca_bundles(bundle.ca_crt)
        self.settled.set()
        return bundle

    async def _adopt(self, found: Obj, manager: str) -> Bundle:
        """A Secret cert-manager manages: left alone, its certificate served and its CA
        put in the caBundles (see the module docstring)."""
        where = f"Secret {self.namespace}/{self.secret}"
        bundle = issued_bundle(found)
        if manager != self._adopted:
            self._adopted = manager
            log.warning(
                "webhook Secret is managed by cert-manager: not writing it",
                secret=where,
                managed_by=manager,
                fix="install with overlays/cert-manager or the chart's "
                "webhook.certManager.enabled=true (PHALANX_WEBHOOK_CERTIFICATES=cert-manager)",
            )
        if bundle is None:
            raise RuntimeError(f"{where} (managed by cert-manager) has no tls.crt and tls.key yet")
        if self.on_bundle is not None:
            self.on_bundle(bundle)
        if bundle.ca_crt:
            await self.patch_ca_bundles(bundle.ca_crt)
        elif manager != self._no_ca:
            self._no_ca = manager
            log.warning(
                "cert-manager Secret has no ca.crt: caBundles left as they are", secret=where
            )
        self.settled.set()
        return bundle

    async def _read(self) -> Obj | None:
        try:
            return await self.rest.get(SECRETS.path(self.namespace, self.secret))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def _write(self, found: Obj | None, bundle: Bundle) -> None:
        meta: Obj = {
            "name": self.secret,
            "namespace": self.namespace,
            "labels": {
                "app.kubernetes.io/name": "phalanx",
                "app.kubernetes.io/component": "webhook",
            },
        }
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": "kubernetes.io/tls",
            "data": bundle.data(),
        }
        if found is None:
            await self.rest.request("POST", SECRETS.path(self.namespace), body=body)
            return
        meta["resourceVersion"] = (found.get("metadata") or {}).get("resourceVersion")
        meta["labels"] = {**((found.get("metadata") or {}).get("labels") or {}), **meta["labels"]}
        body["type"] = found.get("type") or "kubernetes.io/tls"
        await self.rest.request(
            "PUT", SECRETS.path(self.namespace, self.secret), body={**found, **body}
        )

    async def patch_ca_bundles(self, ca_crt: bytes) -> list[str]:
        """Set `caBundle` of every webhook of both configurations; returns the names of
        the configurations changed (a missing one is skipped: not installed yet)."""
        wanted = base64.b64encode(ca_crt).decode()
        changed = []
        for resource, name in ((VALIDATING, self.validating), (MUTATING, self.mutating)):
            for _ in range(5):
                try:
                    config = await self.rest.get(resource.path(name=name))
                except KubeError as exc:
                    if exc.status == 404:
                        break
                    raise
                hooks = config.get("webhooks") or []
                stale = [
                    h for h in hooks if (h.get("clientConfig") or {}).get("caBundle") != wanted
                ]
                if not stale:
                    break
                for hook in stale:
                    hook.setdefault("clientConfig", {})["caBundle"] = wanted
                try:
                    await self.rest.request("PUT", resource.path(name=name), body=config)
                except KubeError as exc:
                    if exc.status == 409:
                        continue
                    raise
                changed.append(name)
                log.info("caBundle patched", configuration=name, webhooks=len(stale))
                break
        return changed

    async def run(self, every: float) -> None:
        """Reconcile now and every `every` seconds (sooner after a failure)."""
        delay = 1.0
        while True:
            try:
                await self.reconcile()
                delay = 1.0
                await anyio.sleep(every)
            except (KubeError, aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as exc:
                log.warning("webhook certificate reconcile failed", error=str(exc))
                await anyio.sleep(delay)
                delay = min(delay * 2, every)
