"""``mcpgw publish``: one line per server on stdout, one-line errors on stderr, exit codes a script can use."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from mcpgw.adapter.publish_documents import default_server_id
from mcpgw.gateway.cli import main
from mcpgw.remote.base import versions_key
from tests.support.nacos_double import NacosDouble

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "nacos-configs" / "publish-examples"
WEATHER = EXAMPLES / "weather-rest.yaml"
WEATHER_VERSIONS = versions_key(default_server_id("public", "weather-rest"))


@pytest.fixture(autouse=True)
def no_target_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MCPGW_NACOS", "MCPGW_NAMESPACE", "MCPGW_USERNAME", "MCPGW_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def weather_version(tmp_path: Path, version: str) -> Path:
    doc = yaml.safe_load(WEATHER.read_text())
    doc["server"]["version"] = version
    path = tmp_path / f"weather-{version}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_publish_prints_one_line_per_server_and_nothing_changes_the_second_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    assert main(["publish", str(EXAMPLES), "--files", str(tree)]) == 0
    first = capsys.readouterr()
    assert first.out.splitlines() == [
        "published gateway-info 1.0.0 (latest)",
        "published maps 2.0.0 (latest)",
        "published weather-rest 1.0.0 (latest)",
    ]
    assert "warning: weather-rest refers to config weather-api-key.json" in first.err
    written = {p: (tree / p).read_text() for p in files(tree)}
    assert len(written) == 9

    assert main(["publish", str(EXAMPLES), "--files", str(tree)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "unchanged gateway-info 1.0.0",
        "unchanged maps 2.0.0",
        "unchanged weather-rest 1.0.0",
    ]
    assert {p: (tree / p).read_text() for p in files(tree)} == written
    assert main(["validate", str(tree)]) == 1  # the credential config is the operator's to create
    (tree / "config/public/mcp-credentials").mkdir()
    (tree / "config/public/mcp-credentials/weather-api-key.json").write_text('{"data": "k"}')
    assert main(["validate", str(tree)]) == 0


def test_an_invalid_document_exits_1_naming_file_tool_and_path_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLES, docs)
    bad = docs / "weather-rest.yaml"
    bad.write_text(bad.read_text().replace("url: /forecast", 'url: "/forecast/{{ .args.city"'))
    tree = tmp_path / "tree"

    assert main(["publish", str(docs), "--files", str(tree)]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    [line, summary] = err.splitlines()
    assert f"file {bad}" in line and "tool get_forecast" in line
    assert "at $.tools[0].template.requestTemplate.url: the template does not parse" in line
    assert summary == "mcpgw: 1 problem(s); nothing was published"
    assert not tree.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["publish", str(WEATHER)], "give the target: --nacos HOST:PORT"),
        (["publish", "--files", "x"], "give a publish document"),
        (["publish", str(WEATHER), "--files", "x", "--raw"], "choose one"),
        (["publish", "--server", "weather-rest", "--files", "x"], "--server names a server for"),
        (["publish", str(WEATHER), "--server", "weather-rest", "--delete", "--files", "x"], "not both"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err


def test_a_dry_run_says_what_it_would_do_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    assert main(["publish", str(WEATHER), "--files", str(tree), "--dry-run"]) == 0
    assert capsys.readouterr().out == "would publish weather-rest 1.0.0 (latest)\n"
    assert not tree.exists()


def test_draft_set_latest_delete_version_and_delete_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    target = ["--files", str(tree)]
    assert main(["publish", str(WEATHER), *target]) == 0
    assert main(["publish", str(weather_version(tmp_path, "1.1.0")), "--draft", *target]) == 0
    assert main(["publish", "--server", "weather-rest", "--set-latest", "1.1.0", *target]) == 0
    assert main(["publish", "--server", "weather-rest", "--delete-version", "1.1.0", *target]) == 1
    assert main(["publish", "--server", "weather-rest", "--delete-version", "1.0.0", *target]) == 0
    assert main(["publish", str(WEATHER), "--delete", *target]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "published weather-rest 1.0.0 (latest)",
        "published weather-rest 1.1.0 as a draft (latest stays 1.0.0)",
        "weather-rest: latest version is now 1.1.0",
        "deleted weather-rest 1.0.0",
        "deleted weather-rest (1 version(s))",
    ]
    assert "mcpgw: error: 1.1.0 is the latest published version of weather-rest" in err
    assert files(tree) == []


@pytest.fixture
async def double() -> AsyncIterator[NacosDouble]:
    async with NacosDouble() as running:
        yield running


async def test_publish_goes_through_the_nacos_admin_api_by_default(
    double: NacosDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCPGW_NACOS", double.server_addr)  # like serve, the target may come from the environment

    assert await asyncio.to_thread(main, ["publish", str(WEATHER)]) == 0
    assert await asyncio.to_thread(main, ["publish", str(WEATHER)]) == 0

    assert capsys.readouterr().out.splitlines() == [
        "published weather-rest 1.0.0 (latest)",
        "unchanged weather-rest 1.0.0",
    ]
    assert double.config("public", WEATHER_VERSIONS.group, WEATHER_VERSIONS.data_id) is not None


async def test_wrong_credentials_exit_3_with_a_clear_message_and_no_password(
    double: NacosDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    double.require_auth("nacos", "right-password")
    argv = ["publish", str(WEATHER), "--nacos", double.server_addr, "--username", "nacos", "--password", "wrong-pw"]

    assert await asyncio.to_thread(main, argv) == 3

    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and "rejected the credentials for user nacos" in err
    assert "wrong-pw" not in err
    assert double.config("public", WEATHER_VERSIONS.group, WEATHER_VERSIONS.data_id) is None


def test_an_unreachable_nacos_exits_3_saying_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", str(WEATHER), "--nacos", "127.0.0.1:1", "--raw"]) == 3
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "cannot reach Nacos at 127.0.0.1:1" in err


def broken_documents(tmp_path: Path) -> Path:
    """Three documents: one whose shape has two problems, one with two broken templates, and a good one."""
    folder = tmp_path / "docs"
    folder.mkdir()
    shape = yaml.safe_load((EXAMPLES / "gateway-info.json").read_text())
    shape["server"]["version"] = 7
    del shape["tools"][0]["name"]
    (folder / "a-shape.yaml").write_text(yaml.safe_dump(shape))
    templates = yaml.safe_load(WEATHER.read_text())
    templates["tools"][0]["template"]["responseTemplate"]["body"] = "{{ if .city }}unclosed"
    templates["tools"][1]["template"]["requestTemplate"]["url"] = "/city/{{ .name"
    (folder / "b-templates.yaml").write_text(yaml.safe_dump(templates))
    shutil.copy(EXAMPLES / "maps-proxy.yaml", folder / "c-good.yaml")
    return folder


def test_publish_and_validate_report_every_problem_of_every_document_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = broken_documents(tmp_path)
    tree = tmp_path / "tree"
    assert main(["publish", str(folder), "--files", str(tree)]) == 1
    published = capsys.readouterr().err.splitlines()
    assert not tree.exists()
    assert main(["validate", str(folder)]) == 1
    validated = capsys.readouterr()
    for lines in (published, validated.out.splitlines()):
        text = "\n".join(lines)
        assert "a-shape.yaml" in text and "$.server.version" in text and "$.tools[0].name" in text
        assert "b-templates.yaml" in text and "get_forecast" in text and "get_city" in text
        assert "c-good.yaml" not in text
    assert published[-1] == "mcpgw: 4 problem(s); nothing was published"
    assert main(["validate", str(folder / "c-good.yaml")]) == 0
    assert capsys.readouterr().out.strip().endswith("c-good.yaml: valid")


def test_publish_of_many_documents_reports_progress_counts_when_not_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    base = yaml.safe_load((EXAMPLES / "gateway-info.json").read_text())
    for n in range(20):
        base["server"]["name"] = f"info-{n:02d}"
        (folder / f"info-{n:02d}.yaml").write_text(yaml.safe_dump(base))
    assert main(["publish", str(folder), "--files", str(tmp_path / "tree")]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 20
    counts = [line for line in captured.err.splitlines() if line.startswith("mcpgw: ")]
    assert "mcpgw: checked 2/20" in counts and "mcpgw: checked 20/20" in counts
    assert "mcpgw: published 10/20" in counts and counts[-1] == "mcpgw: published 20/20"
