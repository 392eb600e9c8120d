"""The mcpgw command: validate, serve's one-line errors, state."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from mcpgw.gateway.cli import main
from mcpgw.gateway.settings import DEMO_TREE
from tests.support.builders import rest_tool, tools_doc

WEATHER = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"


def test_validate_accepts_the_demo_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DEMO_TREE)]) == 0
    assert "valid" in capsys.readouterr().out


def _tree_with_tools(tmp_path: Path, content: str) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    (tree / f"config/public/mcp-tools/{WEATHER}-1.1.0-mcp-tools.json").write_text(content)
    return tree


def _template(**request: object) -> dict[str, object]:
    return {"requestTemplate": {"url": "/x", "method": "GET", **request}}


CASES = {
    "broken-json": ('{"tools": [', "not valid JSON", "$"),
    "template-does-not-parse": (tools_doc(rest_tool("t", template=_template(url="/x/{{ .args.q"))),
                                "does not parse", "$.toolsMeta.t.templates.json-go-template.requestTemplate.url"),
    "two-argsTo": (tools_doc(rest_tool("t", template=_template(argsToJsonBody=True, argsToFormBody=True))),
                   "argsTo", "$.toolsMeta.t.templates.json-go-template.requestTemplate"),
    "body-with-prependBody": (
        tools_doc(rest_tool("t", template={**_template(), "responseTemplate": {"body": "x", "prependBody": "y"}})),
        "prependBody",
        "$.toolsMeta.t.templates.json-go-template.responseTemplate",
    ),
    "unknown-position": (tools_doc(rest_tool("t", template={**_template(), "argsPosition": {"q": "nowhere"}})),
                         "nowhere", "$.toolsMeta.t.templates.json-go-template.argsPosition"),
    "encrypted": (json.dumps({"specificationType": "encrypted", "encryptData": "QUJD"}), "encrypted", "$.encryptData"),
    "credential-in-a-description": (
        tools_doc(({"name": "t", "description": "key ${nacos.weather-api-key.json/mcp-credentials}",
                    "inputSchema": {"type": "object"}}, rest_tool("t")[1])),
        "shown to MCP clients", "$.tools[0].description",
    ),
    "credential-field-missing": (
        tools_doc(rest_tool("t", template=_template(headers=[
            {"key": "X-Key", "value": "{{ ${nacos.weather-api-key.json/mcp-credentials}.token }}"}]))),
        "has no field 'token'", "$.toolsMeta.t.templates.json-go-template.requestTemplate.headers[0].value",
    ),
}
NEEDS_THE_TREE = {"credential-field-missing"}
"""Found only with the referenced config at hand: validate of a lone tools file does not read it."""


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_rejects_naming_file_tool_and_path(case: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    content, reason, path = CASES[case]
    tree = _tree_with_tools(tmp_path, content)
    assert main(["validate", str(tree)]) == 1
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if reason in line]
    assert line.startswith(f"{WEATHER}-1.1.0-mcp-tools.json:")
    assert path in line
    if "toolsMeta" in path:
        assert " tool t:" in line
    single = main(["validate", str(tree / f"config/public/mcp-tools/{WEATHER}-1.1.0-mcp-tools.json")])
    if case in NEEDS_THE_TREE:
        assert single == 0
        return
    assert single == 1
    assert reason in capsys.readouterr().out


def test_validate_rejects_the_legacy_3_0_0_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    (tree / "config/nacos-default-mcp/mcp-server").mkdir(parents=True)
    assert main(["validate", str(tree)]) == 1
    assert "Nacos 3.0.0 layout" in capsys.readouterr().out


def test_serve_with_an_unreadable_tree_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--files", str(tmp_path / "missing"), "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("mcpgw: error:") and "missing" in err[0]


def test_serve_on_a_port_in_use_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["serve", "--files", str(DEMO_TREE), "--port", str(port)])
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


def test_a_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--port", "http"])
    assert caught.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_state_of_an_unreachable_gateway_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["state", "--url", f"http://127.0.0.1:{port}"]) == 3
    assert "cannot read the gateway state" in capsys.readouterr().err


async def test_state_finds_the_gateway_a_local_serve_would_start_from_mcpgw_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from tests.gateway.edge import edge_gateway

    async with edge_gateway(tmp_path) as edge:
        port = edge.url.rsplit(":", 1)[1]
        monkeypatch.setenv("MCPGW_PORT", port)
        monkeypatch.setenv("MCPGW_HOST", "0.0.0.0")
        capsys.readouterr()  # the gateway's own log lines so far
        assert await asyncio.to_thread(main, ["state", "--json"]) == 0
        out = capsys.readouterr().out
    doc = json.loads(out[out.index("{\n"):])
    assert doc["ready"] is True and {s["name"] for s in doc["servers"].values()} == {"weather", "gateway-info"}


async def test_state_of_a_gateway_with_an_admin_token_needs_it_and_says_where_to_give_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import hashlib

    from tests.gateway.edge import edge_gateway

    token = "state-admin-token-0123456789"
    auth = {"admin_token_sha256": hashlib.sha256(token.encode()).hexdigest()}
    async with edge_gateway(tmp_path, auth=auth) as edge:
        capsys.readouterr()
        refused = await asyncio.to_thread(main, ["state", "--url", edge.url])
        refused_err = capsys.readouterr().err
        wrong = await asyncio.to_thread(main, ["state", "--url", edge.url, "--token", "not-the-token"])
        capsys.readouterr()
        monkeypatch.setenv("MCPGW_ADMIN_TOKEN", token)
        from_env = await asyncio.to_thread(main, ["state", "--url", edge.url, "--json"])
        out = capsys.readouterr().out
    assert (refused, wrong, from_env) == (3, 3, 0)
    assert "answered 401" in refused_err and "MCPGW_ADMIN_TOKEN" in refused_err
    assert json.loads(out[out.index("{\n"):])["ready"] is True
