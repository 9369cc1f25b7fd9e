"""The quota a set of pods charges is the sum of their requests plus one device of its
class per device held, keys in the order a pod-by-pod sum meets them (pods of a pod set
share one requests map, which the charge counts once per run of them)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.engine.model import device_quota_resource
from controller.engine.placement import reservation_charge
from controller.engine.reservation import ClaimAllocation, DeviceAllocation, PodPlacement
from tests.property.harness import property_settings

REQUESTS = st.dictionaries(
    st.sampled_from(["cpu", "memory", "pods", "example.com/x"]), st.integers(0, 4)
)


@st.composite
def pod_lists(draw: st.DrawFn) -> tuple[PodPlacement, ...]:
    shared = draw(st.lists(REQUESTS, min_size=1, max_size=3))
    pods = []
    for i in range(draw(st.integers(0, 8))):
        requests = draw(st.one_of(st.sampled_from(shared), REQUESTS))
        claims = tuple(
            ClaimAllocation(
                f"c{c}",
                tuple(
                    DeviceAllocation("r", ("d", "p", f"{i}-{c}-{k}"), cls)
                    for k, cls in enumerate(
                        draw(st.lists(st.sampled_from(["gpu", "nic"]), max_size=4))
                    )
                ),
            )
            for c in range(draw(st.integers(0, 2)))
        )
        pods.append(PodPlacement("ps", i, "n", requests, claims))
    return tuple(pods)


def charged_pod_by_pod(pods: tuple[PodPlacement, ...]) -> dict[str, int]:
    charge: dict[str, int] = {}
    for pod in pods:
        for r, v in pod.requests.items():
            charge[r] = charge.get(r, 0) + v
        for claim in pod.claims:
            for da in claim.devices:
                key = device_quota_resource(da.device_class)
                charge[key] = charge.get(key, 0) + 1
    return charge


@property_settings(300)
@given(pod_lists())
def test_a_reservation_charges_what_its_pods_add_up_to_in_the_same_key_order(pods) -> None:
    assert list(reservation_charge(pods).items()) == list(charged_pod_by_pod(pods).items())
