"""Argument validation: coercion, defaults and precise rejections before any backend call."""

from __future__ import annotations

from typing import Any

import pytest

from mcpgw.converter.arguments import ArgumentValidator, InvalidArguments
from mcpgw.registry.errors import ConversionError, InvocationError

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "default": 3},
        "ratio": {"type": "number"},
        "metric": {"type": "boolean"},
        "either": {"type": ["integer", "boolean"]},
        "code": {"type": ["string", "integer"]},
        "tags": {"type": "array", "items": {"type": "integer"}},
        "options": {
            "type": "object",
            "properties": {
                "lang": {"type": "string", "default": "en"},
                "limit": {"type": "integer"},
            },
        },
    },
    "required": ["city"],
}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param({"days": "7"}, {"days": 7}, id="integer string"),
        pytest.param({"days": "-2"}, {"days": -2}, id="negative integer string"),
        pytest.param({"ratio": "2.5"}, {"ratio": 2.5}, id="number string"),
        pytest.param({"ratio": "3"}, {"ratio": 3}, id="integral number string"),
        pytest.param({"metric": "true"}, {"metric": True}, id="true string"),
        pytest.param({"metric": "False"}, {"metric": False}, id="false string any case"),
        pytest.param({"either": "true"}, {"either": True}, id="union falls through to boolean"),
        pytest.param({"either": "12"}, {"either": 12}, id="union takes integer first"),
        pytest.param({"code": "007"}, {"code": "007"}, id="string allowed so not coerced"),
        pytest.param({"tags": ["1", "2"]}, {"tags": [1, 2]}, id="array items"),
        pytest.param(
            {"options": {"limit": "5"}}, {"options": {"lang": "en", "limit": 5}}, id="nested object"
        ),
    ],
)
def test_strings_are_coerced_to_the_type_the_schema_asks_for(
    arguments: dict[str, Any], expected: dict[str, Any]
) -> None:
    result = ArgumentValidator(WEATHER).validate({"city": "Paris", **arguments})

    for key, value in expected.items():
        assert result[key] == value
        assert type(result[key]) is type(value)


def test_missing_properties_get_their_schema_defaults() -> None:
    result = ArgumentValidator(WEATHER).validate({"city": "Paris"})

    assert result == {"city": "Paris", "days": 3}


def test_nested_defaults_fill_a_present_object_but_do_not_invent_an_absent_one() -> None:
    validator = ArgumentValidator(WEATHER)

    assert validator.validate({"city": "Paris", "options": {}})["options"] == {"lang": "en"}
    assert "options" not in validator.validate({"city": "Paris"})


def test_given_values_win_over_defaults() -> None:
    assert ArgumentValidator(WEATHER).validate({"city": "Paris", "days": 10})["days"] == 10


def test_validation_returns_a_copy_and_leaves_the_input_untouched() -> None:
    arguments = {"city": "Paris", "options": {"limit": "5"}}

    result = ArgumentValidator(WEATHER).validate(arguments)
    result["options"]["limit"] = 99

    assert arguments == {"city": "Paris", "options": {"limit": "5"}}


def test_default_values_are_not_shared_between_calls() -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "default": []}}}
    validator = ArgumentValidator(schema)

    validator.validate({})["tags"].append("leak")

    assert validator.validate({})["tags"] == []


def test_no_arguments_means_an_empty_object() -> None:
    assert ArgumentValidator({"type": "object", "properties": {"n": {"default": 1}}}).validate(None) == {
        "n": 1
    }


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        pytest.param({}, "at $: 'city' is a required property", id="required"),
        pytest.param(
            {"city": "P", "days": "soon"}, "at $.days: 'soon' is not of type 'integer'", id="bad int"
        ),
        pytest.param(
            {"city": "P", "days": "2.5"}, "at $.days: '2.5' is not of type 'integer'", id="fraction"
        ),
        pytest.param(
            {"city": "P", "metric": "yes"}, "at $.metric: 'yes' is not of type 'boolean'", id="bool"
        ),
        pytest.param({"city": "P", "ratio": "nan"}, "at $.ratio: 'nan' is not of type 'number'", id="nan"),
        pytest.param({"city": 5}, "at $.city: 5 is not of type 'string'", id="int for string"),
        pytest.param(
            {"city": "P", "options": {"limit": "x"}},
            "at $.options.limit: 'x' is not of type 'integer'",
            id="nested path",
        ),
        pytest.param(
            {"city": "P", "tags": [1, "x"]},
            "at $.tags[1]: 'x' is not of type 'integer'",
            id="array index path",
        ),
    ],
)
def test_invalid_arguments_are_rejected_with_the_json_path_of_each_problem(
    arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidArguments) as caught:
        ArgumentValidator(WEATHER).validate(arguments)

    assert caught.value.problems == (problem,)
    assert problem in str(caught.value)
    assert isinstance(caught.value, InvocationError)


def test_every_problem_is_reported_in_one_readable_sentence() -> None:
    with pytest.raises(InvalidArguments) as caught:
        ArgumentValidator(WEATHER).validate({"days": "x", "metric": "maybe"})

    assert caught.value.problems == (
        "at $: 'city' is a required property",
        "at $.days: 'x' is not of type 'integer'",
        "at $.metric: 'maybe' is not of type 'boolean'",
    )
    message = str(caught.value)
    assert message.startswith("The arguments do not match the tool's input schema: at $")
    assert message.endswith("Correct them and call the tool again.")
    assert "\n" not in message


def test_a_flood_of_problems_is_summarised() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(15)}}

    with pytest.raises(InvalidArguments) as caught:
        ArgumentValidator(schema).validate({f"p{i}": "x" for i in range(15)})

    assert len(caught.value.problems) == 15
    assert "and 5 more" in str(caught.value)


def test_arguments_that_are_not_an_object_are_rejected() -> None:
    with pytest.raises(InvalidArguments) as caught:
        ArgumentValidator(WEATHER).validate(["Paris"])  # type: ignore[arg-type]

    assert caught.value.problems == ("at $: the arguments must be a JSON object, not list",)


def test_an_invalid_schema_is_a_conversion_error_at_its_json_path() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "text"}}}

    with pytest.raises(ConversionError) as caught:
        ArgumentValidator(schema)

    assert caught.value.path == "$.inputSchema.properties.city.type"
    assert "not a valid JSON Schema" in caught.value.reason


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "object", "properties": {"code": {"type": "string", "pattern": "(("}}},
         "$.inputSchema.properties.code.pattern"),
        ({"type": "object", "patternProperties": {"[a-": {"type": "string"}}}, "$.inputSchema.patternProperties.[a-"),
        ({"type": "object", "properties": {"tag": {"type": "string", "pattern": "\\p{L}+"}}},
         "$.inputSchema.properties.tag.pattern"),
    ],
)
def test_a_pattern_the_validator_cannot_compile_is_a_conversion_error_not_a_call_time_crash(
    schema: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConversionError) as caught:
        ArgumentValidator(schema)

    assert caught.value.path == path
    assert "regular expression" in caught.value.reason


def test_pattern_keys_inside_instance_data_are_not_taken_for_regexes() -> None:
    schema = {"type": "object", "properties": {"rule": {"type": "object", "default": {"pattern": "(("},
                                                        "examples": [{"pattern": "[a-"}]}}}

    assert ArgumentValidator(schema).validate({}) == {"rule": {"pattern": "(("}}


def test_a_remote_reference_in_a_schema_is_not_fetched_when_the_schema_is_checked() -> None:
    # A routable-looking but blackholed address: a fetch would hang or fail, not return quickly and cleanly.
    schema = {"$schema": "http://10.255.255.1/meta.json", "type": "object",
              "properties": {"a": {"$ref": "http://10.255.255.1/defs.json"}}}

    validator = ArgumentValidator(schema)

    with pytest.raises(InvocationError, match="cannot be resolved"):
        validator.validate({"a": 1})


def test_a_schema_that_is_not_an_object_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError) as caught:
        ArgumentValidator(["not", "a", "schema"])  # type: ignore[arg-type]

    assert caught.value.path == "$.inputSchema"


def test_the_declared_schema_draft_is_honoured() -> None:
    # Boolean exclusiveMaximum is valid in draft-04 only.
    schema = {"properties": {"n": {"type": "integer", "maximum": 5, "exclusiveMaximum": True}}}

    with pytest.raises(ConversionError):
        ArgumentValidator(schema)
    validator = ArgumentValidator({"$schema": "http://json-schema.org/draft-04/schema#", **schema})
    with pytest.raises(InvalidArguments):
        validator.validate({"n": 5})


def test_an_unknown_schema_draft_falls_back_to_2020_12() -> None:
    validator = ArgumentValidator({"$schema": "https://example.com/my-draft", "type": "object"})

    assert validator.validate({"a": 1}) == {"a": 1}


def test_an_unresolvable_reference_is_reported_as_a_schema_problem_not_a_crash() -> None:
    validator = ArgumentValidator({"$ref": "#/$defs/missing"})

    with pytest.raises(InvocationError, match="cannot be resolved") as caught:
        validator.validate({})
    assert not isinstance(caught.value, InvalidArguments)
