"""``mcpgw validate`` judges as the gateway does: its checks, instances files included, every problem, no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcpgw.gateway.cli import main
from mcpgw.gateway.settings import DEMO_TREE

WEATHER = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"
GREET = "3c9e5b7a-1f2d-4a6b-8c0e-5d4f3a2b1c0d"
WEATHER_TOOLS = f"config/public/mcp-tools/{WEATHER}-1.1.0-mcp-tools.json"
GREET_TOOLS = f"config/public/mcp-tools/{GREET}-1.0.0-mcp-tools.json"
WEATHER_VERSIONS = f"config/public/mcp-server-versions/{WEATHER}-mcp-versions.json"
NAMING = "naming/public/DEFAULT_GROUP/weather-api.json"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, copy)
    return copy


def _edit_json(path: Path, edit: Any) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _run(tree: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["validate", str(tree)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_validate_reports_files_the_gateway_cannot_read_in_one_line_each_and_never_a_traceback(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / WEATHER_TOOLS).write_bytes(b'{"tools": "\xff"}')
    (tree / WEATHER_VERSIONS).write_text("[" * 10_000 + "]" * 10_000)
    (tree / NAMING).write_text('[{"ip": "127.0.0.1", "port": ')

    code, lines, err = _run(tree, capsys)

    assert code == 1
    assert "Traceback" not in "\n".join(lines) + err
    assert any(line.startswith("config/public/mcp-tools/") and "not UTF-8" in line for line in lines)
    assert any(f"{WEATHER}-mcp-versions.json" in line and "nested deeper than" in line for line in lines)
    assert any(line.startswith(NAMING) and "not a valid instances file" in line for line in lines)


@pytest.mark.parametrize(("entry", "reason"), [
    ('{"ip": "127.0.0.1", "port": 18081, "weight": NaN}', "is not a finite number"),
    ('{"ip": "127.0.0.1@127.0.0.2", "port": 18081}', "neither an IP address nor a host name"),
    ('{"ip": "127.0.0.1", "port": 0}', "between 1 and 65535"),
])
def test_validate_checks_instances_files_as_the_gateway_does(
    tree: Path, capsys: pytest.CaptureFixture[str], entry: str, reason: str
) -> None:
    (tree / NAMING).write_text(f"[{entry}]")

    code, lines, _ = _run(tree, capsys)

    assert code == 1
    [line] = lines
    assert line.startswith(NAMING) and reason in line and "dropped" in line


def test_validate_reports_every_problem_of_a_tree_in_one_run(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def break_two_tools(doc: dict[str, Any]) -> None:
        doc["tools"][0]["inputSchema"]["type"] = "array"
        doc["tools"][1]["outputSchema"]["properties"]["x"] = None

    _edit_json(tree / WEATHER_TOOLS, break_two_tools)
    _edit_json(tree / GREET_TOOLS, lambda doc: doc["tools"][0].update(name="greet someone"))

    code, lines, _ = _run(tree, capsys)

    assert code == 1
    assert [line.split(" $.", 1)[0] for line in lines] == [
        f"{GREET}-1.0.0-mcp-tools.json: tool 'greet someone':",
        f"{WEATHER}-1.1.0-mcp-tools.json: tool get_forecast:",
        f"{WEATHER}-1.1.0-mcp-tools.json: tool get_city:",
    ]


def _deep_schema(doc: dict[str, Any]) -> None:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        node = {"type": "object", "properties": {"a": node}}
    doc["tools"][0]["inputSchema"]["properties"]["deep"] = node


def _lone_surrogate(doc: dict[str, Any]) -> None:
    doc["tools"][0]["description"] = "\ud800"


def _output_property_null(doc: dict[str, Any]) -> None:
    doc["tools"][1]["outputSchema"]["properties"]["x"] = None


@pytest.mark.parametrize("edit", [_deep_schema, _lone_surrogate, _output_property_null],
                         ids=["80-deep inputSchema", "lone surrogate", "outputSchema property null"])
def test_validate_rejects_the_trees_the_gateway_rejects(
    tree: Path, capsys: pytest.CaptureFixture[str], edit: Any
) -> None:
    path = tree / WEATHER_TOOLS
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))  # json.dumps writes the lone surrogate as its \ud800 escape

    code, lines, _ = _run(tree, capsys)

    assert code == 1
    assert all(line.startswith(f"{WEATHER}-1.1.0-mcp-tools.json:") for line in lines)


def test_a_reader_that_goes_away_ends_validate_quietly_not_with_a_traceback(tree: Path) -> None:
    _edit_json(tree / WEATHER_TOOLS, lambda doc: doc.update(
        tools=[{"name": f"bad name {i}", "inputSchema": {"type": "object"}} for i in range(3000)]))
    process = subprocess.Popen([sys.executable, "-m", "mcpgw", "validate", str(tree)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()  # `| head -1`
    process.stdout.close()

    _, err = process.communicate(timeout=60)

    assert process.returncode == 141
    assert b"Traceback" not in err
