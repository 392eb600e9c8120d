"""Renders are bounded: steps, output, time (issue 11); what a client's arguments cannot make a template do."""

from __future__ import annotations

from typing import Any

import pytest

from mcpgw.converter.template import RenderLimits, RenderOffload, parse, render_limits
from mcpgw.registry.errors import TemplateError


def render(source: str, data: Any = None, limits: RenderLimits | None = None) -> str:
    template = parse(source, name="t")
    if limits is None:
        return template.render(data if data is not None else {})
    with render_limits(limits):
        return template.render(data if data is not None else {})


def test_range_over_twenty_million_stops_at_the_step_limit_and_names_the_setting() -> None:
    with pytest.raises(TemplateError, match=r"more than 1000000 steps \(templates\.max_steps\)") as caught:
        render("{{ range 20000000 }}x{{ end }}")
    assert "template 't' line 1 col 4" in str(caught.value)


def test_a_range_over_a_client_argument_is_bounded_by_the_configured_steps() -> None:
    with pytest.raises(TemplateError, match=r"more than 500 steps"):
        render("{{ range .args.n }}{{ . }}{{ end }}", {"args": {"n": 100_000}}, RenderLimits(max_steps=500))
    assert render("{{ range .args.n }}x{{ end }}", {"args": {"n": 400}}, RenderLimits(max_steps=500)) == "x" * 400


def test_repeat_of_two_hundred_million_is_refused_before_the_string_is_built() -> None:
    with pytest.raises(TemplateError, match=r"error calling repeat: .*more than 16777216 bytes"):
        render('{{ repeat 200000000 "x" }}')


@pytest.mark.parametrize(
    "source",
    [
        '{{ repeat 3000 "x" }}',
        '{{ indent 3000 "a" }}',
        '{{ nindent 10 (repeat 60 "a\\n") }}',
        '{{ replace "a" "0123456789" (repeat 85 "a") }}',
        '{{ replace "" "0123456789" (repeat 85 "a") }}',
        '{{ regexReplaceAll "a" (repeat 69 "a") "0123456789" }}',
        '{{ printf "%2000d" 1 }}',
        '{{ printf "%*d" 2000 1 }}',
        '{{ range 300 }}0123456789{{ end }}',
        '{{ $x := "0123456789" }}{{ range 8 }}{{ $x = print $x $x }}{{ end }}{{ $x }}',
    ],
)
def test_every_function_that_grows_text_is_bounded_by_the_output_limit(source: str) -> None:
    with pytest.raises(TemplateError, match=r"more than 512 bytes \(templates\.max_output_bytes\)"):
        render(source, limits=RenderLimits(max_output_bytes=512))


def test_a_value_shared_many_times_is_refused_before_it_is_serialized() -> None:
    # 2**30 copies of one small list in memory as 30 nested pairs; serialized, gigabytes.
    source = "{{ $x := list 1 2 3 }}{{ range 30 }}{{ $x = list $x $x }}{{ end }}{{ toJson $x }}"
    with pytest.raises(TemplateError, match=r"error calling list: .*\(templates\.max_(steps|output_bytes)\)"):
        render(source, limits=RenderLimits(max_steps=100_000, max_output_bytes=4096))


def test_printing_a_value_counts_its_size() -> None:
    with pytest.raises(TemplateError, match=r"templates\.max_output_bytes"):
        render("{{ .args }}", {"args": {"a": ["x" * 100] * 10}}, RenderLimits(max_output_bytes=512))


def test_output_limit_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(TemplateError, match=r"more than 1024 bytes"):
        render("{{ .s }}", {"s": "é" * 600}, RenderLimits(max_output_bytes=1024))
    assert render("{{ .s }}", {"s": "é" * 500}, RenderLimits(max_output_bytes=1024)) == "é" * 500


def test_a_render_past_its_time_limit_fails_naming_the_setting() -> None:
    with pytest.raises(TemplateError, match=r"ran longer than 1e-09 s \(templates\.max_seconds\)"):
        render("{{ range 5000 }}x{{ end }}", limits=RenderLimits(max_seconds=1e-9))


def test_printf_widths_over_a_million_are_refused_as_go_does() -> None:
    assert render('{{ printf "%*d" 1000000000 1 }}') == "%!(BADWIDTH)1"
    assert render('{{ printf "%.*f" 1000000000 1.5 }}').startswith("%!(BADPREC)")
    assert render('{{ printf "%1000000001d" 1 }}') == "%!(NOVERB)%!(EXTRA int=1)"
    assert render('{{ printf "%5d|%-3s|" 42 "a" }}') == "   42|a  |"


def test_integer_arithmetic_wraps_around_as_go_int64_does() -> None:
    assert render("{{ mul 9223372036854775807 2 }}") == "-2"
    assert render("{{ add 9223372036854775807 1 }}") == "-9223372036854775808"
    squared = "{{ $x := 3 }}{{ range 200 }}{{ $x = mul $x $x }}{{ end }}{{ $x }}"
    assert -(2**63) <= int(render(squared)) < 2**63
    assert render('{{ add "99999999999999999999" 1 }}') == "1"  # does not fit ParseInt: cast gives 0


def test_uniq_keeps_first_occurrences_of_scalars_and_structures() -> None:
    data = {"l": ["a", 1, "a", [1], {"k": 1}, [1], 1.0, {"k": 1}, None, None]}
    assert render("{{ toJson (uniq .l) }}", data) == '["a",1,[1],{"k":1},null]'


def test_uniq_over_many_distinct_structures_is_charged_as_steps() -> None:
    data = {"l": [[i] for i in range(3000)]}
    with pytest.raises(TemplateError, match=r"error calling uniq: .*templates\.max_steps"):
        render("{{ len (uniq .l) }}", data, RenderLimits(max_steps=100_000))


def test_an_inline_render_past_its_allowance_asks_to_be_run_off_the_loop() -> None:
    template = parse("{{ range .n }}x{{ end }}", name="t")
    with render_limits(RenderLimits(), inline=True):
        assert template.render({"n": 100}) == "x" * 100
        with pytest.raises(RenderOffload):
            template.render({"n": 100_000})
        with pytest.raises(RenderOffload):
            parse('{{ repeat 1000000 "x" }}', name="t").render({})
        with pytest.raises(TemplateError, match="max_output_bytes"):  # over the full limit: no second try
            parse('{{ repeat 200000000 "x" }}', name="t").render({})
    assert len(template.render({"n": 100_000})) == 100_000
