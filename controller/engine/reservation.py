"""What an admission holds: each pod's node, each claim's devices, the quota charged.

A Reservation is the unit the ledger commits or rolls back and the exact thing a
release gives back, which is what makes invariant 5 (release returns exactly what was
reserved) hold by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def device_count(self) -> int:
        return sum(len(c.devices) for p in self.pods for c in p.claims)
