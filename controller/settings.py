"""Controller settings from the environment: which policies run, the search bound, and
how the controller talks to the cluster (kubeconfig, client QPS and burst, cycle pacing,
watch inactivity timeout).

Each policy is a name or a JSON `{name, params}` object:

    PHALANX_ORDERING=drf
    PHALANX_PREEMPTION='{"name": "priority", "params": {}}'
    PHALANX_PLACEMENT__NAME=spread            # or nested, params as JSON:
    PHALANX_PLACEMENT__PARAMS='{"x": 1}'

Names and parameters are checked against the policy registry when the settings are
loaded, so a typo stops the controller at start-up with the list of what exists,
instead of failing at the first admission cycle.
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from policies import registry, routing
from policies.registry import PolicyRef, UnknownPolicy
from policies.routing import PolicySelection

ENV_PREFIX = "PHALANX_"
RETRY_JITTER = 1.2
"""Leader election retries wait retry period x (1 + up to this): it must fit the deadline."""


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc} (got {text!r})") from None


def _policy_ref(value: Any) -> PolicyRef:
    """A name, a `{name, params}` map, or that map as JSON text (from an env var); from
    nested env vars (`PHALANX_ORDERING__PARAMS`) the params come as JSON text."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        value = _json(value)
    elif isinstance(value, dict) and isinstance(value.get("params"), str):
        value = {**value, "params": _json(value["params"])}
    try:
        return PolicyRef.parse(value, "")
    except UnknownPolicy as exc:
        raise ValueError(exc.what) from None


PolicyChoice = Annotated[PolicyRef, NoDecode, PlainValidator(_policy_ref)]


def _default(ref: PolicyRef | None) -> PolicyRef:
    assert ref is not None
    return ref


_SHORTER_THAN = {
    "renew_deadline_seconds": "lease_duration_seconds",
    "webhook_renew_before_days": "webhook_cert_days",
    "webhook_ca_renew_before_days": "webhook_ca_days",
}
"""Margins, and what each is taken from (so must be shorter than)."""


def _env(field: str) -> str:
    return ENV_PREFIX + field.upper()


class SettingsError(ValueError):
    """Settings that cannot be used; one line per problem, naming the env var."""


class Settings(BaseSettings):
    """Controller-wide settings; a Queue's `spec.policies` overrides the policies per queue."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__")

    ordering: PolicyChoice = _default(routing.DEFAULTS.ordering)
    preemption: PolicyChoice = _default(routing.DEFAULTS.preemption)
    placement: PolicyChoice = _default(routing.DEFAULTS.placement)
    search_bound: Annotated[
        int, Field(ge=1, description="Placements tried per gang and cycle before it waits.")
    ] = 8
    kubeconfig: Annotated[
        Path | None,
        Field(description="A kubeconfig file; unset: the in-cluster service account."),
    ] = None
    qps: Annotated[
        float,
        Field(gt=0, description="Client requests per second, sustained (kube-scheduler: 50)."),
    ] = 50.0
    burst: Annotated[
        int, Field(ge=1, description="Client requests above QPS in a burst (kube-scheduler: 100).")
    ] = 100
    workers: Annotated[int, Field(ge=1, description="GangJobs reconciled at once.")] = 8
    cycle_interval_seconds: Annotated[
        float,
        Field(ge=0, description="Least time between admission cycles; events in between coalesce."),
    ] = 0.0
    node_grace_seconds: Annotated[
        float,
        Field(
            ge=0,
            description="A node NotReady this long evicts the gangs on it (the node "
            "lifecycle controller's grace period is also 40 s).",
        ),
    ] = 40.0
    requeue_backoff_base_seconds: Annotated[
        float,
        Field(gt=0, description="Wait after a gang's first readiness timeout; doubles after each."),
    ] = 10.0
    requeue_backoff_max_seconds: Annotated[
        float, Field(gt=0, description="The longest wait after a readiness timeout.")
    ] = 600.0
    queue_status_interval_seconds: Annotated[
        float, Field(ge=0, description="Least time between Queue status writes; changes coalesce.")
    ] = 1.0
    default_queue: Annotated[
        str,
        Field(
            min_length=1,
            description="Queue of foreign gangs whose pods have no phalanx.dev/queue label.",
        ),
    ] = "default"
    watch_inactivity_seconds: Annotated[
        float, Field(gt=0, description="A watch silent this long is re-opened.")
    ] = 120.0

    # ---- operations: leader election, health and metrics server, logs ----
    leader_elect: Annotated[
        bool, Field(description="Campaign for the Lease; false runs as the only replica.")
    ] = True
    lease_name: str = "phalanx-controller"
    lease_namespace: str = "phalanx-system"
    lease_duration_seconds: Annotated[int, Field(ge=1)] = 15
    renew_deadline_seconds: Annotated[float, Field(gt=0)] = 10.0
    retry_period_seconds: Annotated[float, Field(gt=0)] = 2.0
    identity: Annotated[
        str, Field(min_length=1, description="This replica's name in the Lease.")
    ] = Field(default_factory=lambda: f"{socket.gethostname()}_{uuid.uuid4()}")
    health_host: Annotated[
        str, Field(description="Bind address of /metrics, /healthz, /readyz.")
    ] = "0.0.0.0"
    health_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # ---- admission webhook (controller/webhook) ----
    webhook_enabled: Annotated[
        bool, Field(description="Serve the admission webhook from the controller process.")
    ] = True
    webhook_host: Annotated[str, Field(description="Bind address of the webhook.")] = "0.0.0.0"
    webhook_port: Annotated[int, Field(ge=0, le=65535)] = 9443
    webhook_namespace: Annotated[
        str, Field(min_length=1, description="Namespace of the webhook Service and Secret.")
    ] = "phalanx-system"
    webhook_service: Annotated[str, Field(min_length=1)] = "phalanx-webhook"
    webhook_secret: Annotated[
        str, Field(min_length=1, description="Secret with tls.crt, tls.key, ca.crt (ca.key).")
    ] = "phalanx-webhook-tls"
    webhook_certificates: Annotated[
        Literal["self-signed", "cert-manager"],
        Field(
            description="self-signed: the controller makes, renews and injects them; "
            "cert-manager: it only reads the Secret."
        ),
    ] = "self-signed"
    webhook_cert_days: Annotated[float, Field(gt=0)] = 365.0
    webhook_renew_before_days: Annotated[float, Field(gt=0)] = 30.0
    webhook_ca_days: Annotated[float, Field(gt=0)] = 3650.0
    webhook_ca_renew_before_days: Annotated[float, Field(gt=0)] = 730.0
    webhook_cert_check_seconds: Annotated[
        float, Field(gt=0, description="How often the Secret and caBundles are checked.")
    ] = 60.0
    webhook_cert_extra_hosts: Annotated[
        list[str],
        NoDecode,
        Field(description="More names (or IPs) for the serving certificate, comma-separated."),
    ] = []
    webhook_validating_configuration: str = "phalanx-validating"
    webhook_mutating_configuration: str = "phalanx-mutating"

    @field_validator("webhook_cert_extra_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator(*_SHORTER_THAN)
    @classmethod
    def _shorter_than(cls, value: float, info: ValidationInfo) -> float:
        assert info.field_name is not None
        other = _SHORTER_THAN[info.field_name]
        limit = info.data.get(other)
        if limit is not None and value >= limit:
            raise ValueError(f"must be shorter than {_env(other)} ({limit}), got {value}")
        return value

    @field_validator("webhook_ca_renew_before_days")
    @classmethod
    def _ca_outlives_cert(cls, value: float, info: ValidationInfo) -> float:
        cert = info.data.get("webhook_cert_days")
        if cert is not None and value <= cert:
            raise ValueError(
                f"must be longer than {_env('webhook_cert_days')} ({cert}), so a serving "
                f"certificate signed by the old CA expires before the CA does; got {value}"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("retry_period_seconds")
    @classmethod
    def _retry_within_deadline(cls, value: float, info: ValidationInfo) -> float:
        deadline = info.data.get("renew_deadline_seconds")
        if deadline is not None and value * RETRY_JITTER >= deadline:
            raise ValueError(
                f"times {RETRY_JITTER} must be shorter than "
                f"{_env('renew_deadline_seconds')} ({deadline}), got {value}"
            )
        return value

    @field_validator("ordering", "preemption", "placement")
    @classmethod
    def _exists(cls, ref: PolicyRef, info: ValidationInfo) -> PolicyRef:
        kind = info.field_name
        assert kind in registry.KINDS
        try:
            registry.create(kind, ref, kind)
        except UnknownPolicy as exc:
            raise ValueError(exc.what) from None
        return ref

    @classmethod
    def load(cls, **values: Any) -> Settings:
        """Settings from the environment (and `values`), or a SettingsError to print."""
        try:
            return cls(**values)
        except ValidationError as err:
            raise SettingsError(_lines(err)) from None

    def policy_selection(self) -> PolicySelection:
        return PolicySelection(self.ordering, self.preemption, self.placement)


def _lines(err: ValidationError) -> str:
    """`PHALANX_ORDERING: no ordering policy named 'dfr'; available: ...`, one per problem."""
    lines = []
    for e in err.errors():
        where = ENV_PREFIX + "__".join(str(p) for p in e["loc"]).upper()
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ValueError):  # our own message, which says what it got
            lines.append(f"{where}: {cause}")
        else:
            message = str(e["msg"])
            lines.append(f"{where}: {message[:1].lower()}{message[1:]} (got {e['input']!r})")
    return "\n".join(lines)
