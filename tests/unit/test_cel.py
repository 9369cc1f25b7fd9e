import logging

import pytest

from controller.engine.cel import (
    MatchResult,
    SelectorError,
    compile_selector,
    device_activation,
    evaluate_many,
)
from controller.engine.errors import InvalidInput
from controller.engine.model import AttributeValue, Device, Version

DOMAIN = "gpu.example.com"
WHERE = "deviceClass gpu: spec.selectors[0].cel.expression"


def gpu(
    *,
    name: str = "gpu-0",
    attributes: dict[str, AttributeValue | Version] | None = None,
    capacity: dict[str, str] | None = None,
    shareable: bool = False,
) -> Device:
    if attributes is None:
        attributes = {
            f"{DOMAIN}/model": "a100",
            f"{DOMAIN}/cores": 108,
            f"{DOMAIN}/nvlink": True,
            f"{DOMAIN}/driverVersion": Version("1.10.0"),
            "topology.example.io/rack": "r1",
        }
    if capacity is None:
        capacity = {f"{DOMAIN}/memory": "40Gi", f"{DOMAIN}/sm": "108"}
    return Device(DOMAIN, "pool-a", name, "node-1", attributes, capacity, shareable)


def evaluate(expression: str, device: Device | None = None) -> MatchResult:
    return compile_selector(expression, where=WHERE).evaluate(device or gpu())


ATTR = f'device.attributes["{DOMAIN}"]'
CAP = f'device.capacity["{DOMAIN}"]'


@pytest.mark.parametrize(
    ("expression", "matched"),
    [
        (f'device.driver == "{DOMAIN}"', True),
        ('device.driver == "other.example.com"', False),
        ('device.driver.endsWith(".example.com")', True),
    ],
)
def test_driver_is_visible(expression: str, matched: bool) -> None:
    assert evaluate(expression) == MatchResult(matched)


@pytest.mark.parametrize(
    ("expression", "matched"),
    [
        (f'{ATTR}.model == "a100"', True),
        (f'{ATTR}.model == "h100"', False),
        (f'{ATTR}.model in ["a100", "h100"]', True),
        (f"{ATTR}.cores == 108", True),
        (f"{ATTR}.cores > 100 && {ATTR}.cores < 200", True),
        (f"{ATTR}.cores >= 128", False),
        (f"{ATTR}.nvlink", True),
        (f"{ATTR}.nvlink == true", True),
        (f"!{ATTR}.nvlink", False),
        ('device.attributes["topology.example.io"].rack == "r1"', True),
    ],
)
def test_attributes_compare_by_type(expression: str, matched: bool) -> None:
    assert evaluate(expression) == MatchResult(matched)


def test_bool_attribute_is_not_equal_to_int() -> None:
    assert evaluate(f"{ATTR}.nvlink == 1") == MatchResult(False)


def test_attribute_names_split_at_the_first_slash_into_domain_and_name() -> None:
    device = gpu(attributes={"a.example.com/x": "1", "b.example.com/x": "2"})
    assert evaluate('device.attributes["b.example.com"].x == "2"', device) == MatchResult(True)


def test_allow_multiple_allocations_reflects_shareable() -> None:
    assert evaluate("device.allowMultipleAllocations", gpu(shareable=True)) == MatchResult(True)
    assert evaluate("device.allowMultipleAllocations", gpu(shareable=False)) == MatchResult(False)


@pytest.mark.parametrize(
    ("expression", "matched"),
    [
        (f'{ATTR}.driverVersion.isGreaterThan(semver("1.9.0"))', True),
        (f'{ATTR}.driverVersion.isLessThan(semver("1.9.0"))', False),
        (f'{ATTR}.driverVersion.isLessThan(semver("1.10.1"))', True),
        (f'{ATTR}.driverVersion.compareTo(semver("1.10.0")) == 0', True),
        (f'{ATTR}.driverVersion.compareTo(semver("2.0.0")) == -1', True),
        (f'{ATTR}.driverVersion == semver("1.10.0")', True),
        (f'{ATTR}.driverVersion == semver("1.10.0+build.7")', True),
        (f'{ATTR}.driverVersion != semver("1.10.0-rc.1")', True),
        (f"{ATTR}.driverVersion.major() == 1", True),
        (f"{ATTR}.driverVersion.minor() == 10", True),
        (f"{ATTR}.driverVersion.patch() == 0", True),
    ],
)
def test_version_attributes_are_semver_values(expression: str, matched: bool) -> None:
    assert evaluate(expression) == MatchResult(matched)


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.9.0", "1.10.0"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-beta.11", "1.0.0-rc.1"),
        ("0.9.9", "1.0.0"),
    ],
)
def test_semver_orders_by_precedence(lower: str, higher: str) -> None:
    expression = f'semver("{lower}").isLessThan(semver("{higher}"))'
    assert evaluate(expression) == MatchResult(True)
    assert evaluate(f'semver("{higher}").compareTo(semver("{lower}")) == 1') == MatchResult(True)


@pytest.mark.parametrize(
    ("expression", "matched"),
    [
        ('isSemver("1.2.3")', True),
        ('isSemver("1.2")', False),
        ('isSemver("v1.2.3")', False),
        ('isSemver("01.2.3")', False),
        ('isSemver("v1.2", true)', True),
        ('semver("v1.2", true) == semver("1.2.0")', True),
        ('semver("01.01.01", true) == semver("1.1.1")', True),
    ],
)
def test_semver_parsing_is_strict_unless_normalized(expression: str, matched: bool) -> None:
    assert evaluate(expression) == MatchResult(matched)


def test_invalid_semver_literal_is_an_evaluation_error() -> None:
    result = evaluate(f'{ATTR}.driverVersion.isGreaterThan(semver("1.2"))')
    assert not result.matched
    assert result.error is not None and "'1.2' is not a semantic version" in result.error


@pytest.mark.parametrize(
    ("expression", "matched"),
    [
        (f'{CAP}.memory.compareTo(quantity("40Gi")) >= 0', True),
        (f'{CAP}.memory.compareTo(quantity("41Gi")) == -1', True),
        (f'{CAP}.memory.compareTo(quantity("32Gi")) == 1', True),
        (f'{CAP}.memory.isGreaterThan(quantity("32Gi"))', True),
        (f'{CAP}.memory.isGreaterThan(quantity("40Gi"))', False),
        (f'{CAP}.memory.isLessThan(quantity("48Gi"))', True),
        (f'{CAP}.memory == quantity("40960Mi")', True),
        (f'{CAP}.memory == quantity("40G")', False),
        (f'{CAP}.memory.sub(quantity("8Gi")) == quantity("32Gi")', True),
        (f'{CAP}.memory.add(quantity("8Gi")) == quantity("48Gi")', True),
        (f'{CAP}.sm.add(20) == quantity("128")', True),
        (f"{CAP}.sm.sub(8).asInteger() == 100", True),
        (f"{CAP}.memory.asInteger() == 42949672960", True),
        (f"{CAP}.memory.isInteger()", True),
        (f"{CAP}.sm.asApproximateFloat() == 108.0", True),
        (f"{CAP}.sm.sign() == 1", True),
    ],
)
def test_capacity_values_are_quantities(expression: str, matched: bool) -> None:
    assert evaluate(expression) == MatchResult(matched)


@pytest.mark.parametrize(
    ("expression", "matched"),
    [
        ('quantity("200M").compareTo(quantity("0.2G")) == 0', True),
        ('quantity("50M").compareTo(quantity("50Mi")) == -1', True),
        ('quantity("1.5").isInteger()', False),
        ('quantity("99999999999999999999").isInteger()', False),
        ('quantity("-3").sign() == -1', True),
        ('quantity("0").sign() == 0', True),
        ('quantity("500m").asApproximateFloat() == 0.5', True),
        ('quantity("50k").add(20).sub(quantity("100k")).sub(-50000) == quantity("20")', True),
        ('isQuantity("1.3Gi")', True),
        ('isQuantity("200K")', False),
        ('isQuantity("Three")', False),
    ],
)
def test_quantity_library_matches_kubernetes_examples(expression: str, matched: bool) -> None:
    assert evaluate(expression) == MatchResult(matched)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ('quantity("1.5").asInteger() == 1', "cannot convert value to integer"),
        ('quantity("12Qi").sign() == 1', "'12Qi' is not a Kubernetes quantity"),
        (f'{CAP}.memory.compareTo(semver("1.0.0")) == 0', "no such overload"),
        (f"{ATTR}.driverVersion.compareTo({CAP}.memory) == 0", "no such overload"),
        (f"{ATTR}.model.compareTo(1) == 0", "no such overload: compareTo(string, int)"),
        (f"{CAP}.memory.add(1.5).sign() == 1", "no such overload"),
        (f"{CAP}.memory.major() == 1", "no such overload: major(Quantity)"),
    ],
)
def test_library_misuse_is_an_evaluation_error(expression: str, message: str) -> None:
    result = evaluate(expression)
    assert not result.matched
    assert result.error is not None and message in result.error


def test_overloaded_methods_dispatch_on_the_receiver_type() -> None:
    expression = (
        f'{CAP}.memory.isGreaterThan(quantity("1Gi"))'
        f' && {ATTR}.driverVersion.isGreaterThan(semver("1.0.0"))'
    )
    assert evaluate(expression) == MatchResult(True)


def test_string_extension_functions_are_available() -> None:
    assert evaluate(f'{ATTR}.model.upperAscii() == "A100"') == MatchResult(True)


def test_missing_attribute_is_an_error_not_an_exception() -> None:
    assert evaluate(f"{ATTR}.nosuch == 1") == MatchResult(False, "no such key: nosuch")


def test_error_absorbed_by_or_does_not_surface() -> None:
    assert evaluate(f"{ATTR}.nosuch == 1 || {ATTR}.cores == 108") == MatchResult(True)


def test_has_tests_for_an_attribute() -> None:
    assert evaluate(f"has({ATTR}.nvlink)") == MatchResult(True)
    assert evaluate(f"has({ATTR}.nosuch)") == MatchResult(False)


@pytest.mark.parametrize(
    ("expression", "matched"),
    [
        (f'"{DOMAIN}" in device.attributes', True),
        ('"nosuch.example.com" in device.attributes', False),
        (f'"{DOMAIN}" in device.capacity', True),
        ('"topology.example.io" in device.capacity', False),
    ],
)
def test_in_tests_for_a_domain(expression: str, matched: bool) -> None:
    assert evaluate(expression) == MatchResult(matched)


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ('has(device.attributes["nosuch.example.com"].x)', MatchResult(False)),
        ('!has(device.attributes["nosuch.example.com"].x)', MatchResult(True)),
        ('!has(device.capacity["nosuch.example.com"].x)', MatchResult(True)),
        ('device.attributes["nosuch.example.com"].x == 1', MatchResult(False, "no such key: x")),
    ],
)
def test_unknown_domain_reads_as_an_empty_map(expression: str, result: MatchResult) -> None:
    assert evaluate(expression) == result


def test_non_bool_result_for_a_device_is_an_error() -> None:
    assert evaluate(f"{ATTR}.model") == MatchResult(False, "must evaluate to bool, not string")


@pytest.mark.parametrize(
    ("expression", "type_name"),
    [
        ("device.driver", "string"),
        ("1 + 2", "int"),
        ('device.attributes["x.example.com"]', "map"),
        ('quantity("1")', "Quantity"),
        ("null", "null_type"),
    ],
)
def test_expression_that_is_never_bool_does_not_compile(expression: str, type_name: str) -> None:
    message = f"must evaluate to bool or the unknown type, not {type_name}$"
    with pytest.raises(SelectorError, match=message):
        compile_selector(expression, where=WHERE)


def test_syntax_error_raises_selector_error_naming_where() -> None:
    with pytest.raises(SelectorError) as info:
        compile_selector("device.driver ==", where=WHERE)
    assert info.value.where == WHERE
    assert info.value.what.startswith("CEL expression does not compile: ")
    assert "Syntax error" in info.value.what
    assert isinstance(info.value, InvalidInput)


def test_undeclared_function_does_not_compile() -> None:
    with pytest.raises(SelectorError, match=r"does not compile: .*'nosuch'"):
        compile_selector("nosuch(device.driver)", where=WHERE)


def test_compile_is_cached_by_expression_text() -> None:
    expression = f'device.driver == "{DOMAIN}" && true'
    first = compile_selector(expression, where="a")
    assert compile_selector(expression, where="b") is first
    assert first.expression == expression


def test_failed_compile_names_each_callers_where() -> None:
    for where in ("first", "second"):
        with pytest.raises(SelectorError) as info:
            compile_selector("device.driver ==", where=where)
        assert info.value.where == where


def test_quantity_call_inside_a_string_literal_is_left_alone() -> None:
    device = gpu(attributes={f"{DOMAIN}/note": 'quantity("1")'})
    assert evaluate(f"{ATTR}.note == 'quantity(\"1\")'", device) == MatchResult(True)


def test_quantity_call_inside_a_comment_is_ignored() -> None:
    expression = f'device.driver == "{DOMAIN}" // isn\'t quantity("1") nice\n'
    assert evaluate(expression) == MatchResult(True)


def test_evaluate_many_matches_when_all_selectors_match() -> None:
    selectors = [
        compile_selector(f'device.driver == "{DOMAIN}"', where="a"),
        compile_selector(f"{ATTR}.cores >= 100", where="b"),
    ]
    assert evaluate_many(selectors, gpu()) == MatchResult(True)


def test_evaluate_many_stops_at_the_first_selector_that_does_not_match() -> None:
    selectors = [
        compile_selector('device.driver == "other.example.com"', where="a"),
        compile_selector(f"{ATTR}.nosuch == 1", where="b"),
    ]
    assert evaluate_many(selectors, gpu()) == MatchResult(False)


def test_evaluate_many_returns_the_first_error() -> None:
    selectors = [
        compile_selector(f"{ATTR}.nosuch == 1", where="a"),
        compile_selector(f"{ATTR}.other == 1", where="b"),
    ]
    assert evaluate_many(selectors, gpu()) == MatchResult(False, "no such key: nosuch")


def test_evaluate_many_of_no_selectors_matches() -> None:
    assert evaluate_many([], gpu()) == MatchResult(True)


def test_activation_is_memoised_per_device() -> None:
    device = gpu(name="memo-0")
    assert device_activation(device) is device_activation(device)


def test_activation_is_shared_by_equal_devices() -> None:
    assert device_activation(gpu(name="memo-1")) is device_activation(gpu(name="memo-1"))


def test_activation_is_not_shared_between_bool_and_int_attributes() -> None:
    as_bool = gpu(name="memo-2", attributes={f"{DOMAIN}/x": True})
    as_int = gpu(name="memo-2", attributes={f"{DOMAIN}/x": 1})
    assert evaluate(f"{ATTR}.x == true", as_bool) == MatchResult(True)
    assert evaluate(f"{ATTR}.x == true", as_int) == MatchResult(False)


def test_unparseable_capacity_is_refused_when_the_device_is_built() -> None:
    with pytest.raises(InvalidInput, match="12Qi") as err:
        gpu(name="bad-0", capacity={f"{DOMAIN}/memory": "12Qi"})
    assert err.value.where == f"device {DOMAIN}/pool-a/bad-0: capacity[{DOMAIN}/memory]"


def test_invalid_version_attribute_is_reported_for_the_device() -> None:
    device = gpu(name="bad-1", attributes={f"{DOMAIN}/driverVersion": Version("1.0")})
    result = evaluate(f'device.driver == "{DOMAIN}"', device)
    assert result.error is not None and "is not a semantic version" in result.error


def test_library_errors_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="cel"):
        evaluate('quantity("1.5").asInteger() == 1')
    assert not caplog.records


FLAG = f"{DOMAIN}/flag"


@pytest.mark.parametrize(
    ("value", "expression", "matched"),
    [
        (1, f"{ATTR}.flag == true", False),
        (True, f"{ATTR}.flag == true", True),
        (0, f"{ATTR}.flag == false", False),
        (1, f"{ATTR}.flag == 1", True),
        ("1", f"{ATTR}.flag == 1", False),
        ("true", f"{ATTR}.flag == true", False),
    ],
)
def test_attribute_values_reach_cel_with_their_dra_type(
    value: AttributeValue, expression: str, matched: bool
) -> None:
    assert evaluate(expression, gpu(attributes={FLAG: value})) == MatchResult(matched)


@pytest.mark.parametrize(("first", "second"), [(True, 1), (1, True), (False, 0), (0, False)])
def test_a_device_republished_with_an_equal_value_of_another_type_is_evaluated_again(
    first: AttributeValue, second: AttributeValue
) -> None:
    expression = f"{ATTR}.flag == true || {ATTR}.flag == false"
    assert evaluate(expression, gpu(attributes={FLAG: first})).matched is isinstance(first, bool)
    assert evaluate(expression, gpu(attributes={FLAG: second})).matched is isinstance(second, bool)
