"""The emulator's field ownership (managedFields) finds what a write changed by walking
only the subtrees that differ, and builds a created object's fields in one walk; both
must be exactly what the owned leaves give (a leaf: a scalar, a list or an empty map,
under map keys; in metadata, only labels, annotations, finalizers and ownerReferences):
the leaves that differ between the old and the new object, and every leaf of a new one,
in sorted order."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from emulator.apply import _changes, fields_of, leaves, to_fields_v1
from tests.property.harness import property_settings

KEYS = st.sampled_from(["a", "b", "c", "spec", "status", "kind"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["x", "y"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)
METADATA = st.dictionaries(
    st.sampled_from(["name", "labels", "annotations", "finalizers", "uid"]), VALUES, max_size=3
)


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(st.dictionaries(KEYS, VALUES, max_size=4))
    obj["metadata"] = draw(METADATA)
    return obj


@st.composite
def edits(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """An object and a version of it: unrelated, or the same with a few values replaced."""
    old = draw(objects())
    if draw(st.booleans()):
        return old, draw(objects())
    new: dict[str, Any] = {**old, "metadata": dict(old["metadata"])}
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["top", "metadata"]))
        target = new if where == "top" else new["metadata"]
        key = draw(KEYS if where == "top" else st.sampled_from(["labels", "annotations"]))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(VALUES)
    return old, new


@property_settings(300)
@given(edits(), st.booleans(), st.booleans())
def test_a_write_changes_and_removes_exactly_the_owned_leaves_that_differ(
    edit: tuple[dict[str, Any], dict[str, Any]], created: bool, status: bool
) -> None:
    old, new = edit
    before = {} if created else leaves(old, include_status=status)
    after = leaves(new, include_status=status)
    expected_changed = {p for p, v in after.items() if p not in before or before[p] != v}
    expected_removed = {p for p in before if p not in after}
    assert _changes(None if created else old, new, status) == (expected_changed, expected_removed)


@property_settings(300)
@given(objects(), st.booleans())
def test_a_created_objects_fields_are_every_owned_leaf_in_sorted_order(
    obj: dict[str, Any], status: bool
) -> None:
    expected = to_fields_v1(sorted(leaves(obj, include_status=status)))
    built = fields_of(obj, include_status=status)
    assert built == expected
    assert json.dumps(built) == json.dumps(expected)  # the same key order, as written
