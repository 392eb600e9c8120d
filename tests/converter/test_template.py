"""The Go text/template engine: what renders, what is refused at parse time, what fails at render time.

Expected outputs are what Go's text/template (with Sprig and Higress' gjson)
prints for the same template on ``map[string]interface{}`` data.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcpgw.converter.template import SUPPORTED_FUNCTIONS, GoTemplate, parse
from mcpgw.registry.errors import TemplateError

ITEMS = {"items": [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 3}]}


def render(source: str, data: Any = None) -> str:
    return parse(source).render({} if data is None else data)


# -- rendering -----------------------------------------------------------------------------------

RENDER_CASES = [
    # text, fields, variables
    pytest.param("plain text", {}, "plain text", id="text alone"),
    pytest.param("{{ .args.city }}", {"args": {"city": "Paris"}}, "Paris", id="field chain"),
    pytest.param("{{.a}}{{.b}}", {"a": 1, "b": "x"}, "1x", id="no spaces in actions"),
    pytest.param("{{ . }}", "whole", "whole", id="dot is the data"),
    pytest.param("{{ $.a }}", {"a": 1}, "1", id="dollar is the root"),
    pytest.param(
        "{{ with .u }}{{ $.site }}/{{ .name }}{{ end }}",
        {"u": {"name": "x"}, "site": "s"},
        "s/x",
        id="dollar inside with",
    ),
    pytest.param("{{ $x := .a }}{{ $x }}", {"a": 5}, "5", id="declare variable"),
    pytest.param("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, "2", id="assign outer variable"),
    pytest.param("{{ $x := 1 }}{{ $x := 2 }}{{ $x }}", {}, "2", id="redeclare shadows"),
    pytest.param("{{ $u := .u }}{{ $u.name }}", {"u": {"name": "n"}}, "n", id="variable field chain"),
    pytest.param("{{ .items.1.name }}", ITEMS, "b", id="numeric segment indexes a list (Higress)"),
    pytest.param("{{ .items.9.name }}", ITEMS, "<no value>", id="numeric segment out of range is missing"),
    pytest.param("{{ (index .items 2).name }}", ITEMS, "c", id="field of a parenthesised pipeline"),
    # missing values and printing
    pytest.param("{{ .missing }}", {}, "<no value>", id="missing key"),
    pytest.param("{{ .a.b.c }}", {}, "<no value>", id="missing chain"),
    pytest.param("{{ .a }}", {"a": None}, "<no value>", id="null prints no value"),
    pytest.param("{{ .n }}", {"n": 42}, "42", id="int"),
    pytest.param("{{ .n }}", {"n": 2.5}, "2.5", id="float"),
    pytest.param("{{ .n }}", {"n": 3.0}, "3", id="integral float"),
    pytest.param("{{ .n }}", {"n": 1234567.0}, "1.234567e+06", id="large float in Go exponent form"),
    pytest.param("{{ .n }}", {"n": 0.00001}, "1e-05", id="small float in Go exponent form"),
    pytest.param("{{ .n }}", {"n": 123456.0}, "123456", id="float below 1e6 plain"),
    pytest.param("{{ .b }} {{ .c }}", {"b": True, "c": False}, "true false", id="bools"),
    pytest.param("{{ .l }}", {"l": [1, "a", None, 2.5]}, "[1 a <nil> 2.5]", id="list Go style"),
    pytest.param("{{ .m }}", {"m": {"b": 2, "a": {"c": [1]}}}, "map[a:map[c:[1]] b:2]", id="map Go style sorted"),
    # literals
    pytest.param('{{ "a\\tb\\u00e9\\x41\\101" }}', {}, "a\tbéAA", id="string escapes"),
    pytest.param("{{ `raw\\n{{` }}", {}, "raw\\n{{", id="raw string"),
    pytest.param("{{ 42 }} {{ -3 }} {{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 1_000 }}", {}, "42 -3 31 15 15 1000", id="ints"),
    pytest.param("{{ 1.5 }} {{ 1.0 }} {{ 1e3 }} {{ .5 }}", {}, "1.5 1 1000 0.5", id="floats"),
    pytest.param("{{ 'a' }}", {}, "97", id="character constant"),
    pytest.param("{{ true }} {{ false }}", {}, "true false", id="booleans"),
    # trim markers and comments
    pytest.param("a  {{- 1 -}}  b", {}, "a1b", id="trim both sides"),
    pytest.param("a\n\t{{- 1 }} \n b", {}, "a1 \n b", id="left trim only"),
    pytest.param("{{-3}}", {}, "-3", id="dash without space is a number"),
    pytest.param("a{{/* comment */}}b", {}, "ab", id="comment"),
    pytest.param("a \n{{- /* comment */ -}}\n b", {}, "ab", id="comment with trim markers"),
    pytest.param("{{ if\n  .a\n}}yes{{ end }}", {"a": 1}, "yes", id="newlines inside actions"),
    # pipelines
    pytest.param('{{ .a | printf "%s-%s" "x" }}', {"a": "y"}, "x-y", id="piped value is the last argument"),
    pytest.param('{{ .a | default "d" | upper }}', {}, "D", id="pipeline of three"),
    pytest.param('{{ upper (printf "%s!" .a) }}', {"a": "hi"}, "HI!", id="parenthesised argument"),
    pytest.param("{{ len (list 1 2 3) }}", {}, "3", id="function without arguments inside parens"),
    # if / else if / with / range
    pytest.param("{{ if .a }}A{{ else if .b }}B{{ else }}C{{ end }}", {"b": 1}, "B", id="else if"),
    pytest.param("{{ if .a }}A{{ else }}C{{ end }}", {"a": ""}, "C", id="empty string is false"),
    pytest.param("{{ if .a }}A{{ else }}C{{ end }}", {"a": 0}, "C", id="zero is false"),
    pytest.param("{{ if .a }}A{{ else }}C{{ end }}", {"a": []}, "C", id="empty list is false"),
    pytest.param("{{ if .a }}A{{ else }}C{{ end }}", {"a": {}}, "C", id="empty map is false"),
    pytest.param("{{ if .a }}A{{ else }}C{{ end }}", {"a": [0]}, "A", id="non-empty list is true"),
    pytest.param("{{ if $v := .a }}{{ $v }}{{ end }}", {"a": "x"}, "x", id="if declares"),
    pytest.param("{{ with .u }}{{ .name }}{{ else }}anon{{ end }}", {"u": {"name": "x"}}, "x", id="with moves dot"),
    pytest.param("{{ with .u }}{{ .name }}{{ else }}anon{{ end }}", {}, "anon", id="with else"),
    pytest.param("{{ with .a }}A{{ else with .b }}{{ . }}{{ else }}C{{ end }}", {"b": "B"}, "B", id="else with"),
    pytest.param("{{ range .items }}{{ .name }}{{ end }}", ITEMS, "abc", id="range list"),
    pytest.param(
        "{{ range $i, $e := .items }}{{ $i }}{{ $e.name }}{{ end }}", ITEMS, "0a1b2c", id="range index and element"
    ),
    pytest.param("{{ range $e := .items }}{{ $e.n }}{{ end }}", ITEMS, "123", id="range one variable is the element"),
    pytest.param(
        "{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}",
        {"m": {"b": 2, "a": 1}},
        "a=1;b=2;",
        id="range map sorted",
    ),
    pytest.param("{{ range .l }}x{{ else }}empty{{ end }}", {"l": []}, "empty", id="range else on empty"),
    pytest.param("{{ range .l }}x{{ else }}empty{{ end }}", {}, "empty", id="range else on missing"),
    pytest.param("{{ range 3 }}{{ . }}{{ end }}", {}, "012", id="range integer"),
    pytest.param(
        "{{ range .items }}{{ if eq .n 2 }}{{ continue }}{{ end }}"
        "{{ if eq .n 3 }}{{ break }}{{ end }}{{ .name }}{{ end }}",
        ITEMS,
        "a",
        id="break and continue",
    ),
    pytest.param(
        "{{ $s := 0 }}{{ range .items }}{{ $s = add $s .n }}{{ end }}{{ $s }}", ITEMS, "6", id="accumulate in range"
    ),
    pytest.param("{{ range .items }}{{ $n := .n }}{{ $n }}{{ end }}", ITEMS, "123", id="variable per iteration"),
    # Go builtins
    pytest.param(
        '{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 "" 3 }} {{ or 0 "" }}', {}, "0 2 3 ", id="and or return values"
    ),
    pytest.param("{{ and .missing .missing.deeper }}", {}, "<no value>", id="and short-circuits"),
    pytest.param("{{ not 0 }} {{ not .a }}", {"a": "x"}, "true false", id="not"),
    pytest.param(
        '{{ len "héllo" }} {{ len .l }} {{ len .m }}', {"l": [1, 2], "m": {"a": 1}}, "6 2 1", id="len counts bytes"
    ),
    pytest.param(
        '{{ index .l 1 }} {{ index .m "k" }} {{ index .m "no" }} {{ index .n 0 1 }}',
        {"l": [1, 2], "m": {"k": "v"}, "n": [[0, 7]]},
        "2 v <no value> 7",
        id="index",
    ),
    pytest.param('{{ index "abc" 1 }}', {}, "98", id="index of a string is a byte"),
    pytest.param(
        '{{ slice .l 1 }} {{ slice .l 0 1 }} {{ slice "hello" 1 3 }}', {"l": [1, 2, 3]}, "[2 3] [1] el", id="slice"
    ),
    pytest.param('{{ print 1 2 "a" "b" 3 nil }}', {}, "1 2ab3 <nil>", id="print spaces only between non-strings"),
    pytest.param('{{ println "a" 1 }}', {}, "a 1\n", id="println"),
    pytest.param(
        '{{ eq 1 1 }} {{ eq "a" "b" "a" }} {{ ne 1 2 }} {{ eq .n 2 }}', {"n": 2.0}, "true true true true", id="eq ne"
    ),
    pytest.param("{{ eq .missing nil }} {{ eq .a nil }}", {"a": 1}, "true false", id="eq with nil"),
    pytest.param(
        '{{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1.5 2 }}', {}, "true true true false", id="ordering"
    ),
    pytest.param('{{ html "<a href=\'x\'>&\\"" }}', {}, "&lt;a href=&#39;x&#39;&gt;&amp;&#34;", id="html"),
    pytest.param('{{ js "a\'b\\"<>&=\\n" }}', {}, "a\\'b\\\"\\u003C\\u003E\\u0026\\u003D\\u000A", id="js"),
    pytest.param(
        '{{ urlquery "a b&c/é" }} {{ urlquery .missing }}', {}, "a+b%26c%2F%C3%A9 %3Cno+value%3E", id="urlquery"
    ),
    # printf
    pytest.param(
        '{{ printf "%s|%v|%d|%q|%t" "s" .l 7 "q\\"" true }}',
        {"l": [1, "a"]},
        's|[1 a]|7|"q\\""|true',
        id="printf basic verbs",
    ),
    pytest.param(
        '{{ printf "%.2f|%6.1f|%-5d|%05d|%+d|%e|%g" 3.14159 2.0 42 42 3 1234.5 0.000012 }}',
        {},
        "3.14|   2.0|42   |00042|+3|1.234500e+03|1.2e-05",
        id="printf numbers",
    ),
    pytest.param(
        '{{ printf "%x|%X|%o|%b|%c|%U|%#x" 255 255 8 5 65 65 255 }}',
        {},
        "ff|FF|10|101|A|U+0041|0xff",
        id="printf integer bases",
    ),
    pytest.param(
        '{{ printf "%x" "hi" }} {{ printf "%5s|%-3s|%.2s" "ab" "c" "xyz" }}',
        {},
        "6869    ab|c  |xy",
        id="printf strings",
    ),
    pytest.param('{{ printf "%d %s" "x" }}', {}, "%!d(string=x) %!s(MISSING)", id="printf bad verb and missing inline"),
    pytest.param('{{ printf "%d" 1 2 }}', {}, "1%!(EXTRA int=2)", id="printf extra argument"),
    pytest.param(
        '{{ printf "%T %T %T %v %d%%" 1 "s" .l nil 5 }}',
        {"l": []},
        "int string []interface {} <nil> 5%",
        id="printf T and percent",
    ),
    pytest.param('{{ printf "%.1f %d" .i .f }}', {"i": 2, "f": 4.0}, "2.0 4", id="printf lenient numbers"),
    # Sprig
    pytest.param(
        '{{ default "d" .a }} {{ default "d" .b }} {{ .c | default 5 }}', {"b": "x", "c": 0}, "d x 5", id="default"
    ),
    pytest.param("{{ empty .a }} {{ empty .b }} {{ empty .c }}", {"b": [1], "c": False}, "true false true", id="empty"),
    pytest.param('{{ coalesce .a "" 0 "x" }} {{ coalesce .a }}', {}, "x <no value>", id="coalesce"),
    pytest.param('{{ ternary "y" "n" true }} {{ ternary "y" "n" (eq 1 2) }}', {}, "y n", id="ternary"),
    pytest.param(
        "{{ toJson . }}",
        {"b": [1, 2.5, None, True], "a": "<&>"},
        '{"a":"\\u003c\\u0026\\u003e","b":[1,2.5,null,true]}',
        id="toJson Go style",
    ),
    pytest.param("{{ toJson .f }}", {"f": 1e21}, "1e+21", id="toJson big float exponent"),
    pytest.param("{{ toJson .f }}", {"f": 1e20}, "100000000000000000000", id="toJson float plain below 1e21"),
    pytest.param(
        "{{ toPrettyJson . }}",
        {"a": {"b": [1]}, "e": []},
        '{\n  "a": {\n    "b": [\n      1\n    ]\n  },\n  "e": []\n}',
        id="toPrettyJson",
    ),
    pytest.param(
        '{{ (fromJson "{\\"a\\":[1,2]}").a }} {{ fromJson "not json" }}', {}, "[1 2] <no value>", id="fromJson"
    ),
    pytest.param('{{ b64enc "user:pass" }} {{ b64dec "dXNlcjpwYXNz" }}', {}, "dXNlcjpwYXNz user:pass", id="base64"),
    pytest.param('{{ b64dec "a$" }}', {}, "illegal base64 data at input byte 1", id="b64dec bad input as Sprig"),
    pytest.param(
        '{{ add 1 2 "3" 1.9 }} {{ sub 5 7 }} {{ mul 2 3 4 }} {{ div 7 2 }} {{ div -7 2 }} {{ mod -7 3 }}',
        {},
        "7 -2 24 3 -3 -1",
        id="integer arithmetic",
    ),
    pytest.param("{{ max 1 5 3 }} {{ min 4 2 9 }} {{ add1 .n }}", {"n": 1}, "5 2 2", id="max min add1"),
    pytest.param(
        "{{ addf 1.5 2 }} {{ subf 5 0.5 }} {{ mulf 1.5 2 }} {{ divf 1 4 }}", {}, "3.5 4.5 3 0.25", id="float arithmetic"
    ),
    pytest.param(
        '{{ upper "ab" }} {{ lower "AB" }} {{ title "hello wide-world" }} {{ trim "  x \\n" }}',
        {},
        "AB ab Hello Wide-World x",
        id="case and trim",
    ),
    pytest.param(
        '{{ trimPrefix "ab" "abc" }} {{ trimSuffix "bc" "abc" }} {{ replace "a" "o" "banana" }}',
        {},
        "c a bonono",
        id="trim prefix suffix replace",
    ),
    pytest.param('{{ quote "a\\"b" 1 .missing }} {{ squote "x" }}', {}, '"a\\"b" "1" \'x\'', id="quote squote"),
    pytest.param(
        '{{ contains "an" "banana" }} {{ hasPrefix "ba" "banana" }} {{ hasSuffix "x" "banana" }}',
        {},
        "true true false",
        id="contains prefixes",
    ),
    pytest.param(
        '{{ $p := split "," "a,b,c" }}{{ $p._0 }}{{ $p._2 }} {{ split "," "a,b" }}',
        {},
        "ac map[_0:a _1:b]",
        id="split map",
    ),
    pytest.param(
        '{{ splitList "," "a,b" }} {{ join "-" .l }} {{ join "," (list 1 nil "x") }}',
        {"l": ["x", "y"]},
        "[a b] x-y 1,x",
        id="splitList join",
    ),
    pytest.param('{{ list 1 "a" }} {{ dict "a" 1 "b" }}', {}, "[1 a] map[a:1 b:]", id="list dict"),
    pytest.param(
        '{{ hasKey .m "a" }} {{ hasKey .m "z" }} {{ keys .m }}',
        {"m": {"b": 1, "a": 2}},
        "true false [a b]",
        id="hasKey keys",
    ),
    pytest.param(
        '{{ toString 12 }} {{ int "42" }} {{ int 3.9 }} {{ int "x" }} {{ float64 "1.5" }} {{ atoi "12" }}',
        {},
        "12 42 3 0 1.5 12",
        id="conversions",
    ),
    pytest.param(
        '{{ trunc 3 "abcdef" }} {{ trunc -2 "abcdef" }} {{ repeat 3 "ab" }} {{ nospace " a b\\tc " }}',
        {},
        "abc ef ababab abc",
        id="trunc repeat nospace",
    ),
    pytest.param('{{ indent 2 "a\\nb" }}|{{ nindent 1 "x" }}', {}, "  a\n  b|\n x", id="indent nindent"),
    pytest.param(
        "{{ first .l }} {{ last .l }} {{ uniq .d }} {{ first .e }}",
        {"l": [1, 2, 3], "d": [1, 1, 2, 1], "e": []},
        "1 3 [1 2] <no value>",
        id="first last uniq",
    ),
    pytest.param('{{ regexMatch "^[a-z]+[0-9]$" "abc1" }} {{ regexMatch "(" "x" }}', {}, "true false", id="regexMatch"),
    pytest.param(
        '{{ regexReplaceAll "(\\\\w+)@(\\\\w+)" "me@host you@there" "${2}:$1$$" }}',
        {},
        "host:me$ there:you$",
        id="regexReplaceAll Go expansion",
    ),
    pytest.param(
        '{{ sha256sum "abc" }}', {}, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", id="sha256sum"
    ),
    # gjson
    pytest.param('{{ gjson "data.name" }}', {"data": {"name": "x"}}, "x", id="gjson string as is"),
    pytest.param(
        '{{ gjson "data" }}', {"data": {"b": 1, "a": [1, "x"]}}, '{"a":[1,"x"],"b":1}', id="gjson object as JSON"
    ),
    pytest.param('{{ gjson "items.1.name" }} {{ gjson "items.#" }}', ITEMS, "b 3", id="gjson index and count"),
    pytest.param('{{ gjson "items.#.name" }}', ITEMS, '["a","b","c"]', id="gjson map over array"),
    pytest.param(
        '{{ gjson "items.#(n>1).name" }} {{ gjson "items.#(n>=2)#.name" }}', ITEMS, 'b ["b","c"]', id="gjson queries"
    ),
    pytest.param(
        '{{ gjson `items.#(name=="c").n` }} {{ gjson "items.#(name%\\"?\\").n" }}',
        ITEMS,
        "3 1",
        id="gjson string query and pattern",
    ),
    pytest.param('{{ gjson "a\\\\.b" }}', {"a.b": "dotted"}, "dotted", id="gjson escaped dot"),
    pytest.param(
        '{{ gjson "na*" }} {{ gjson "items.@reverse.0.name" }} {{ gjson "m.@keys" }}',
        {"name": "w", "m": {"k": 1}, **ITEMS},
        'w c ["k"]',
        id="gjson wildcard and modifiers",
    ),
    pytest.param('{{ gjson "nope.x" }}', {}, "<no value>", id="gjson missing"),
    pytest.param(
        '{{ range gjson "items.#.n" }}{{ . }}{{ end }} {{ len (gjson "items") }}',
        ITEMS,
        "123 3",
        id="gjson results are iterable",
    ),
    pytest.param('{{ range .items }}{{ gjson "name" }}{{ end }}', ITEMS, "abc", id="gjson reads the current dot"),
    pytest.param('{{ "items.0.n" | gjson }}', ITEMS, "1", id="gjson piped path"),
]


@pytest.mark.parametrize(("source", "data", "expected"), RENDER_CASES)
def test_template_renders_like_go(source: str, data: Any, expected: str) -> None:
    assert parse(source).render(data) == expected


def test_now_is_utc_rfc3339_and_uuidv4_is_random() -> None:
    rendered = render("{{ now }} {{ uuidv4 }} {{ uuidv4 }}").split()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rendered[0])
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", rendered[1])
    assert rendered[1] != rendered[2]


def test_a_parsed_template_renders_many_times_without_leaking_state() -> None:
    template = parse("{{ range .l }}{{ $x := . }}{{ $x }}{{ end }}|{{ .n }}")
    assert template.render({"l": [1, 2], "n": "a"}) == "12|a"
    assert template.render({"l": [], "n": "b"}) == "|b"


def test_templates_compare_by_name_and_source_and_hide_source_in_repr() -> None:
    first, same = parse("Bearer sk-123", name="n"), parse("Bearer sk-123", name="n")
    assert first == same
    assert hash(first) == hash(same)
    assert first != parse("Bearer sk-123", name="other")
    assert "sk-123" not in repr(first)
    assert isinstance(first, GoTemplate)
    assert (first.source, first.name) == ("Bearer sk-123", "n")


def test_references_lists_root_paths_but_not_paths_relative_to_a_moved_dot() -> None:
    template = parse(
        '{{ .args.city }}{{ $.config.credentials.key.value }}{{ index .config.credentials "my-key" }}'
        "{{ range .args.list }}{{ .inner }}{{ $.args.flag }}{{ end }}{{ with .args.opt }}{{ .x }}{{ end }}"
        '{{ gjson "data.items" }}{{ .args.a | default "x" }}'
    )
    assert template.references() == {
        "args.city",
        "config.credentials.key.value",
        "config.credentials",
        "config.credentials.my-key",
        "args.list",
        "args.flag",
        "args.opt",
        "data.items",
        "args.a",
    }


VARIADIC = {
    "and", "or", "index", "print", "printf", "println", "eq", "html", "js", "urlquery", "default",
    "coalesce", "add", "mul", "max", "min", "addf", "subf", "mulf", "divf", "quote", "squote",
    "list", "dict", "keys",
}  # fmt: skip


def test_supported_functions_describe_every_callable_name() -> None:
    assert {"gjson", "default", "toJson", "printf", "index", "regexReplaceAll"} <= set(SUPPORTED_FUNCTIONS)
    assert set(SUPPORTED_FUNCTIONS) >= VARIADIC
    assert all(description.strip() for description in SUPPORTED_FUNCTIONS.values())


@pytest.mark.parametrize("name", sorted(set(SUPPORTED_FUNCTIONS) - VARIADIC))
def test_a_fixed_arity_function_given_too_many_arguments_fails_at_parse_time(name: str) -> None:
    with pytest.raises(TemplateError, match=f"wrong number of arguments for {name}: want"):
        parse(f"{{{{ {name} 1 2 3 4 }}}}")


# -- parse errors ---------------------------------------------------------------------------------

REJECTED = [
    pytest.param("{{ .a ", "line 1 col 1", "unclosed action", id="unclosed action"),
    pytest.param("a\n{{ if .a }}x", "line 2 col 4", "unclosed {{if}}", id="unclosed if names its line"),
    pytest.param("{{ range .a }}x{{ else }}y", "line 1 col 4", "unclosed {{range}}", id="unclosed range else"),
    pytest.param("x{{ end }}", "line 1 col 5", "unexpected {{end}}", id="stray end"),
    pytest.param("{{ else }}", "line 1 col 4", "unexpected {{else}}", id="stray else"),
    pytest.param("{{ if 1 }}{{ else }}{{ else }}{{ end }}", "line 1 col 24", "second {{else}}", id="two elses"),
    pytest.param('{{ define "x" }}{{ end }}', "line 1 col 4", "{{define}} action is not supported", id="define"),
    pytest.param('{{ template "x" . }}', "line 1 col 4", "{{template}} action is not supported", id="template"),
    pytest.param('{{ block "x" . }}{{ end }}', "line 1 col 4", "{{block}} action is not supported", id="block"),
    pytest.param("{{ call .f 1 }}", "line 1 col 4", "call builtin is not supported", id="call"),
    pytest.param("{{ .user.Name 1 }}", "line 1 col 4", "method calls are not supported", id="method call"),
    pytest.param("{{ 1 | .f }}", "line 1 col 8", "method calls are not supported", id="field piped into"),
    pytest.param(
        "{{ uper .a }}", "line 1 col 4", 'unknown function "uper"; did you mean "upper"', id="unknown function"
    ),
    pytest.param('{{ env "HOME" }}', "line 1 col 4", 'unknown function "env"', id="unsupported sprig function"),
    pytest.param(
        "{{ upper }}", "line 1 col 4", "wrong number of arguments for upper: want 1, got 0", id="too few args"
    ),
    pytest.param('{{ "a" | replace "x" }}', "line 1 col 10", "want 3, got 2", id="too few args counting pipe"),
    pytest.param("{{ $x }}", "line 1 col 4", "undefined variable $x", id="undefined variable"),
    pytest.param("{{ $x = 1 }}", "line 1 col 4", "undefined variable $x", id="assign undeclared"),
    pytest.param(
        "{{ if 1 }}{{ $x := 1 }}{{ end }}{{ $x }}", "line 1 col 36", "undefined variable $x", id="variable out of scope"
    ),
    pytest.param("{{ break }}", "line 1 col 4", "{{break}} outside {{range}}", id="break outside range"),
    pytest.param(
        "{{ range .l }}{{ else }}{{ continue }}{{ end }}",
        "line 1 col 28",
        "outside {{range}}",
        id="continue in range else",
    ),
    pytest.param("{{ }}", "line 1 col", "missing value for command", id="empty action"),
    pytest.param("{{ if }}{{ end }}", "line 1 col", "missing value for if", id="empty if"),
    pytest.param(
        '{{ .a | "x" }}', "line 1 col 9", "non executable command in pipeline stage 2", id="constant after pipe"
    ),
    pytest.param("{{ .a | }}", "line 1 col 9", "missing command after '|'", id="dangling pipe"),
    pytest.param("{{ nil }}", "line 1 col 4", "nil is not a command", id="nil command"),
    pytest.param('{{ "a" 1 }}', "line 1 col 8", "constant is not a function", id="constant with arguments"),
    pytest.param('{{ .a"b" }}', "line 1 col 6", "bad character U+0022 after a name", id="name glued to a string"),
    pytest.param('{{ "a""b" }}', "line 1 col 7", "separate arguments by spaces", id="arguments not separated"),
    pytest.param('{{ "a".b }}', "line 1 col 7", "unexpected . after a string", id="field of a literal"),
    pytest.param("{{ (1 }}", "line 1 col 7", "unclosed left parenthesis", id="unclosed paren"),
    pytest.param("{{ 1) }}", "line 1 col 5", "unexpected ')'", id="stray paren"),
    pytest.param("{{ 1i }}", "line 1 col 4", "complex numbers are not supported", id="complex number"),
    pytest.param("{{ 1.2.3x }}", "line 1 col", "bad number syntax", id="bad number"),
    pytest.param('{{ "abc }}', "line 1 col 4", "unterminated quoted string", id="unterminated string"),
    pytest.param('{{ "\\q" }}', "line 1 col 4", "unknown escape", id="bad escape"),
    pytest.param("{{ `abc }}", "line 1 col 4", "unterminated raw quoted string", id="unterminated raw string"),
    pytest.param("{{/* abc }}", "line 1 col 1", "unclosed comment", id="unclosed comment"),
    pytest.param("{{/* abc */ .x }}", "line 1 col 12", "comment ends before closing delimiter", id="comment then code"),
    pytest.param("{{ .a # }}", "line 1 col 7", "unrecognized character", id="bad character"),
    pytest.param(
        "{{ $x, $y := .l }}", "line 1 col 6", "too many declarations in command", id="two variables outside range"
    ),
    pytest.param(
        "{{ range $x, 1 := .l }}{{ end }}",
        "line 1 col 14",
        "range can only initialize variables",
        id="range non-variable",
    ),
    pytest.param('{{ gjson "a|b" }}', "line 1 col 10", "pipes", id="gjson pipe unsupported"),
    pytest.param('{{ gjson "{a,b}" }}', "line 1 col 10", "multipaths", id="gjson multipath unsupported"),
    pytest.param(
        '{{ gjson "a.@pretty" }}', "line 1 col 10", "modifier @pretty is not supported", id="gjson unknown modifier"
    ),
    pytest.param(
        "\n\n  {{ if .a }}\n  {{ foo }}{{ end }}", "line 4 col 6", "unknown function", id="line and column count lines"
    ),
]


@pytest.mark.parametrize(("source", "where", "reason"), REJECTED)
def test_parse_rejects_with_line_and_column(source: str, where: str, reason: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse(source, name="$.tools.t.url")
    message = str(caught.value)
    assert message.startswith("template '$.tools.t.url' " + where), message
    assert reason in message


def test_a_parse_error_does_not_quote_string_literals() -> None:
    with pytest.raises(TemplateError) as caught:
        parse('{{ "sk-secret-123" | "sk-secret-456" }}')
    assert "sk-secret" not in str(caught.value)


# -- execution errors -----------------------------------------------------------------------------

EXEC_ERRORS = [
    pytest.param(
        "{{ index .l 5 }}",
        {"l": [1]},
        "line 1 col 4",
        "error calling index: index out of range: 5",
        id="index out of range",
    ),
    pytest.param(
        '{{ index .l "a" }}',
        {"l": [1]},
        "col 4",
        "cannot index slice/array with type string",
        id="index list by string",
    ),
    pytest.param("{{ index .m 1 }}", {"m": {}}, "col 4", "map key must be a string", id="index map by int"),
    pytest.param("{{ index .n 1 }}", {}, "col 4", "index of untyped nil", id="index nil"),
    pytest.param("{{ len .n }}", {"n": 3}, "col 4", "len of type int", id="len of number"),
    pytest.param("{{ slice .l 2 1 }}", {"l": [1, 2]}, "col 4", "invalid slice index", id="bad slice"),
    pytest.param(
        "{{ upper .n }}", {"n": 12345}, "col 4", "argument 1 must be a string, got int", id="wrong argument type"
    ),
    pytest.param(
        "{{ .n | upper }}", {"n": [1]}, "col 9", "must be a string, got []interface {}", id="wrong piped type"
    ),
    pytest.param("{{ div 1 0 }}", {}, "col 4", "integer divide by zero", id="divide by zero"),
    pytest.param('{{ ternary 1 2 "yes" }}', {}, "col 4", "argument 3 must be a boolean", id="ternary needs bool"),
    pytest.param(
        '{{ eq 1 "1" }}', {}, "col 4", "incompatible types for comparison: int and string", id="eq mixed types"
    ),
    pytest.param("{{ eq .l .l }}", {"l": [1]}, "col 4", "non-comparable type", id="eq lists"),
    pytest.param("{{ lt true false }}", {}, "col 4", "invalid type for comparison", id="lt bools"),
    pytest.param(
        "{{ range .s }}{{ end }}",
        {"s": "abc"},
        "col 4",
        "range can't iterate over a value of type string",
        id="range string",
    ),
    pytest.param("{{ range $i, $e := 3 }}{{ end }}", {}, "col 4", "more than one variable", id="range int two vars"),
    pytest.param(
        "x\n {{ .a.b }}", {"a": None}, "line 2 col 5", "nil pointer evaluating .a.b: .a is null", id="field of null"
    ),
    pytest.param(
        "{{ $v := .a }}{{ $v.b.c }}",
        {"a": {"b": None}},
        "col 18",
        "nil pointer evaluating $v.b.c",
        id="field of null through variable",
    ),
    pytest.param(
        "{{ .s.x }}", {"s": "hunter2"}, "col 4", "can't evaluate field x in type string", id="field of string"
    ),
    pytest.param(
        "{{ .l.x }}", {"l": [1]}, "col 4", "can't evaluate field x in type []interface {}", id="field of list"
    ),
    pytest.param("{{ gjson .p }}", {"p": 3}, "col 4", "the path must be a string, got int", id="gjson non-string path"),
    pytest.param("{{ gjson .p }}", {"p": "a|b"}, "col 4", "pipes", id="gjson bad dynamic path"),
    pytest.param("{{ first .s }}", {"s": "x"}, "col 4", "cannot find first on type string", id="first of string"),
    pytest.param('{{ regexReplaceAll "(" "x" "y" }}', {}, "col 4", "invalid regular expression", id="bad regex"),
    pytest.param('{{ repeat -1 "x" }}', {}, "col 4", "negative repeat count", id="negative repeat"),
]


@pytest.mark.parametrize(("source", "data", "where", "reason"), EXEC_ERRORS)
def test_render_fails_with_a_template_error_at_the_action(source: str, data: Any, where: str, reason: str) -> None:
    template = parse(source, name="body")
    with pytest.raises(TemplateError) as caught:
        template.render(data)
    message = str(caught.value)
    assert message.startswith("template 'body' "), message
    assert where in message
    assert reason in message


def test_render_errors_name_types_never_data_values() -> None:
    secret = "sk-live-0123456789"
    sources = ["{{ upper (list .k) }}", "{{ .k.x }}", "{{ eq .k 1 }}", "{{ range .k }}{{ end }}", '{{ index .k "x" }}']
    for source in sources:
        with pytest.raises(TemplateError) as caught:
            parse(source).render({"k": secret})
        assert secret not in str(caught.value)


def test_data_that_is_not_json_fails_as_a_template_error_without_its_text() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("sk-live-0123456789")

    with pytest.raises(TemplateError) as caught:
        parse("{{ . }}").render(Unprintable())
    assert "RuntimeError" in str(caught.value)
    assert "sk-live" not in str(caught.value)


def test_trim_markers_on_control_actions_trim_the_surrounding_text() -> None:
    source = "<ul>\n  {{- range .items }}\n  <li>{{ .name }}</li>\n  {{- else -}}\n  none\n  {{- end }}\n</ul>"
    assert render(source, ITEMS) == "<ul>\n  <li>a</li>\n  <li>b</li>\n  <li>c</li>\n</ul>"
    assert render(source, {"items": []}) == "<ul>none\n</ul>"


# -- properties -----------------------------------------------------------------------------------


@given(st.text().filter(lambda text: "{{" not in text))
def test_text_without_actions_renders_to_itself(text: str) -> None:
    assert parse(text).render({}) == text


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_to_json_output_reads_back_as_the_same_value(value: Any) -> None:
    # Go writes 1e16 as 10000000000000000: compare numbers as float64, as Go would read them back.
    assert as_float64(json.loads(parse("{{ toJson . }}").render(value))) == as_float64(value)


def as_float64(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [as_float64(item) for item in value]
    return {key: as_float64(item) for key, item in value.items()}


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_prints_in_the_fewest_digits_that_read_back_exactly(value: float) -> None:
    printed = parse("{{ . }}").render(value)
    assert float(printed) == value
    assert math.copysign(1, float(printed)) == math.copysign(1, value)
    assert ".0" not in printed.split("e")[0][-2:]
