"""A foreign gang's admission record as its ConfigMap holds it: packed (`encode_record`),
read back as written; a record in plain JSON (what earlier versions wrote) is still read,
so an upgrade finds the commit points of the gangs admitted before it."""

from __future__ import annotations

import json

import pytest

from controller.engine.errors import InvalidInput
from controller.kube import foreign as f
from tests.kube import big_records as big


def config_map(text: str) -> big.Obj:
    meta = {"name": "phalanx-gang-g", "namespace": big.NAMESPACE}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"admission": text}}


@pytest.mark.parametrize("devices", [0, 1, 3])
def test_a_packed_record_reads_back_as_written(devices: int) -> None:
    written, manifest = big.foreign_record(4, devices)
    assert f.read_record(manifest) == written


def test_a_released_record_reads_back_with_its_reason() -> None:
    written, manifest = big.foreign_record(2, 1)
    marked = f.released_record(manifest, written, "Preempted", "by a higher gang")
    assert f.released(f.read_record(marked)) == {
        "reason": "Preempted",
        "message": "by a higher gang",
    }


def test_a_device_of_other_request_driver_or_pool_than_the_one_before_is_kept() -> None:
    written, _ = big.foreign_record(2, 2)
    devices = written["podSets"][0]["pods"][0]["claims"][0]["devices"]
    devices[1] = {**devices[1], "pool": "elsewhere"}
    assert f.read_record(config_map(f.encode_record(written))) == written


def test_a_record_in_plain_json_is_read_as_it_is() -> None:
    written, _ = big.foreign_record(3, 1)
    assert f.read_record(config_map(json.dumps(written, sort_keys=True))) == written


def test_a_packed_record_is_less_than_half_the_plain_json() -> None:
    written, manifest = big.foreign_record(64, 8)
    assert len(manifest["data"]["admission"]) * 2 < len(json.dumps(written, sort_keys=True))


def test_a_malformed_packed_record_names_the_config_map() -> None:
    _, manifest = big.foreign_record(2, 1)
    packed = json.loads(manifest["data"]["admission"])
    packed["podSets"][0]["pods"][0][1] = 999  # a node past the end of `names`
    with pytest.raises(InvalidInput) as caught:
        f.read_record(config_map(json.dumps(packed)))
    assert caught.value.where == f"ConfigMap {big.NAMESPACE}/phalanx-gang-g: data.admission"
