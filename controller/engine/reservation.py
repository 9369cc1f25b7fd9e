"""What an admission holds: each pod's node, each claim's devices, the quota charged.

A Reservation is the unit the ledger commits or rolls back and the exact thing a
release gives back, which is what makes invariant 5 (release returns exactly what was
reserved) hold by construction.

A Reservation checks itself and everything it holds when built (the controller rebuilds
them from admission records at start-up); the parts are not checked on their own, since
placement builds them by the thousand while searching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.engine import validation as check
from controller.engine.errors import InvalidInput
from controller.engine.model import DeviceKey, Resources


@dataclass(frozen=True, slots=True)
class DeviceAllocation:
    """One device given to one request (`request/subrequest` for firstAvailable).

    `shared` records that the device allowed multiple allocations when it was given, so
    the allocation stays valid (and restorable) if the device is unpublished later.
    """

    request: str
    device: DeviceKey
    device_class: str
    shared: bool = False


@dataclass(frozen=True, slots=True)
class ClaimAllocation:
    claim: str
    devices: tuple[DeviceAllocation, ...]


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """One pod of a gang: where it runs, what it uses there, which devices it holds."""

    pod_set: str
    index: int
    node: str
    requests: Resources
    claims: tuple[ClaimAllocation, ...] = ()

    def claim_owner(self, gang_uid: str, claim: str) -> str:
        """The deterministic claim identity that holds devices (and names the API object)."""
        return f"{gang_uid}/{self.pod_set}-{self.index}/{claim}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """Everything one admitted gang holds; released as a whole."""

    gang_uid: str
    queue: str
    pods: tuple[PodPlacement, ...]
    charge: Resources
    borrowed: Resources = field(default_factory=dict)
    admitted_at: float = 0.0

    def __post_init__(self) -> None:
        where = self._check_fields()
        for pod in self.pods:
            _check_pod(pod, where)
        self._check_distinct(where)

    @classmethod
    def placed(
        cls,
        gang_uid: str,
        queue: str,
        pods: tuple[PodPlacement, ...],
        charge: Resources,
        borrowed: Resources | None = None,
        admitted_at: float = 0.0,
    ) -> Reservation:
        """A reservation of pods the engine's placer made: their parts come from gangs,
        nodes and devices checked when built, so only its own fields are checked."""
        res = object.__new__(cls)
        for name, value in (
            ("gang_uid", gang_uid),
            ("queue", queue),
            ("pods", pods),
            ("charge", charge),
            ("borrowed", {} if borrowed is None else borrowed),
            ("admitted_at", admitted_at),
        ):
            object.__setattr__(res, name, value)
        res._check_own()
        return res

    def _check_own(self) -> str:
        """Check the reservation's fields but each pod's parts; returns where it is."""
        where = self._check_fields()
        self._check_distinct(where)
        return where

    def _check_fields(self) -> str:
        check.name(self.gang_uid, "reservation.gang_uid")
        where = f"reservation of gang {self.gang_uid}"
        check.name(self.queue, f"{where}: queue")
        check.tuple_of(PodPlacement, self.pods, f"{where}: pods")
        check.resources(self.charge, f"{where}: charge")
        check.resources(self.borrowed, f"{where}: borrowed")
        check.number(self.admitted_at, f"{where}: admitted_at")
        return where

    def _check_distinct(self, where: str) -> None:
        """No pod twice (pod sets and indexes are valid: checked by `_check_pod`, or made
        by the placer)."""
        seen: set[tuple[str, int]] = set()
        for pod in self.pods:
            if (pod.pod_set, pod.index) in seen:
                raise InvalidInput(where, f"pod {pod.pod_set}-{pod.index} appears twice")
            seen.add((pod.pod_set, pod.index))

    def device_count(self) -> int:
        return sum(len(c.devices) for p in self.pods for c in p.claims)


def _check_pod(pod: PodPlacement, where: str) -> None:
    check.name(pod.pod_set, f"{where}: pod set")
    where = f"{where}: pod {pod.pod_set}"
    check.integer(pod.index, f"{where}: index", 0)
    where = f"{where}-{pod.index}"
    check.name(pod.node, f"{where}: node")
    check.resources(pod.requests, f"{where}: requests")
    check.tuple_of(ClaimAllocation, pod.claims, f"{where}: claims")
    for claim in pod.claims:
        check.name(claim.claim, f"{where}: claim")
        cw = f"{where}: claim {claim.claim}"
        check.tuple_of(DeviceAllocation, claim.devices, f"{cw}: devices")
        for da in claim.devices:
            check.name(da.request, f"{cw}: request")
            check.name(da.device_class, f"{cw}: device class")
            check.flag(da.shared, f"{cw}: shared")
            key = da.device
            if not (isinstance(key, tuple) and len(key) == 3):
                raise InvalidInput(f"{cw}: device", f"must be (driver, pool, name), got {key!r}")
            for part in key:
                check.name(part, f"{cw}: device {key!r}")
