"""``load_json``: whatever it returns can be walked, re-encoded strictly and served; everything else is located."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpgw.remote.jsondoc import MAX_DEPTH, JsonDocumentError, check_value, load_json

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("text", "path", "reason"), [
    ('{"a": NaN}', "$.a", "NaN is not a finite number"),
    ('{"a": [1, Infinity]}', "$.a[1]", "Infinity is not a finite number"),
    ('{"a": {"b": -Infinity}}', "$.a.b", "-Infinity is not a finite number"),
    ('{"w": 1e999}', "$.w", "1e999 is not a finite number"),
    ('{"d": "x\\ud800y"}', "$.d", "\\ud800, half of a UTF-16 pair"),
    ('{"\\udfff": 1}', "$", "\\udfff, half of a UTF-16 pair"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "$" + "[0]" * MAX_DEPTH, "nested deeper than the 64 levels"),
    ('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", "$.a" + "[0]" * (MAX_DEPTH - 1), "nested deeper than"),
    ('{"a": 1', "$", "not valid JSON (line 1 column 8"),
])
def test_what_the_gateway_cannot_serve_is_rejected_with_its_json_path(text: str, path: str, reason: str) -> None:
    with pytest.raises(JsonDocumentError) as caught:
        load_json(text)

    assert caught.value.path == path
    assert reason in caught.value.reason


def test_a_surrogate_pair_is_one_character_and_fine() -> None:
    assert load_json('{"a": "\\ud83d\\ude00"}') == {"a": "😀"}


def test_exactly_the_depth_limit_is_allowed() -> None:
    assert load_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None


def test_non_finite_numbers_can_be_kept_for_a_caller_that_checks_them_one_by_one() -> None:
    value = load_json('[{"weight": NaN}, {"weight": 1e999}]', finite=False)

    assert [str(item["weight"]) for item in value] == ["nan", "inf"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=40,
)


def _served(value: Any) -> None:
    """What serving does with a value: encode it strictly, as UTF-8, and walk it."""
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    check_value(value)


@FUZZ
@given(_json_values)
def test_anything_the_loader_returns_can_be_served(value: Any) -> None:
    text = json.dumps(value)  # NaN/Infinity and lone surrogates (as escapes) included
    try:
        loaded = load_json(text)
    except JsonDocumentError as exc:
        error: JsonDocumentError | None = exc
    else:
        error = None
        _served(loaded)
    assert error is None or (error.reason and error.path.startswith("$"))


@FUZZ
@given(st.text(alphabet='[]{}",:\\u0123456789abdefNaIinty.-e \n', max_size=200))
def test_any_text_is_json_the_gateway_can_serve_or_a_located_error(text: str) -> None:
    try:
        loaded = load_json(text)
    except JsonDocumentError as exc:
        error: JsonDocumentError | None = exc
    else:
        error = None
        _served(loaded)
    assert error is None or (error.reason and error.path.startswith("$"))
