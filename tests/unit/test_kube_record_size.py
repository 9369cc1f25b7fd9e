"""The foreign record's size estimates (controller/kube/record_size.py): the quick bound a
gang far below the limits is judged by is never below the record built at its largest."""

from __future__ import annotations

import pytest

from controller.kube import record_size as rs
from tests.kube import big_records as big

POD_GROUP = {"metadata": {"name": "pg", "uid": "u" * 36}}


@pytest.fixture(scope="module")
def sizes() -> rs.Sizes:
    return rs.Sizes().refresh(big.foreign_cluster(300))


@pytest.mark.parametrize("pod_group", [None, POD_GROUP], ids=["label gang", "pod group"])
@pytest.mark.parametrize(("pods", "devices"), [(1, 1), (8, 8), (200, 1), (500, 8)])
def test_the_quick_bound_is_never_below_the_record_at_its_largest(
    sizes: rs.Sizes, pods: int, devices: int, pod_group: dict | None
) -> None:
    found = big.foreign_members(pods, devices)
    bound = rs.foreign_record_bound(found, pod_group, sizes)
    built = rs.foreign_record_bytes(found, pod_group, sizes)
    assert bound[0] >= built[0]
    assert bound[1] >= built[1]


def test_a_gang_over_the_limit_is_refused_with_the_built_records_size() -> None:
    found = big.foreign_members(6000, 8)
    state = big.foreign_cluster(300)
    why = rs.RecordSizes().too_large(found, None, state)
    _, stored = rs.foreign_record_bytes(found, None, rs.Sizes().refresh(state))
    assert why == (
        f"too large to record: 6,000 pods, the record would be {stored:,} bytes, the API "
        "server's limit is 1,572,864 (etcd's for one object); split the gang or use fewer, "
        "larger pods"
    )
