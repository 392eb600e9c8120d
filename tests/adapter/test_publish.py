"""Publishing: documents become the three Nacos configs, checked first, applied idempotently, on every target."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw.adapter.publish import Publisher
from mcpgw.adapter.publish_documents import (
    InvalidDocuments,
    LoadedDocument,
    PublishError,
    default_server_id,
    load_documents,
    parse_document,
)
from mcpgw.adapter.publish_targets import FilesTarget, nacos_target
from mcpgw.converter.converter import ConfigConverter, ServerSnapshot, credential_refs
from mcpgw.registry.errors import ConversionError, SourceAuthError
from mcpgw.registry.models import ServerModels
from mcpgw.remote.base import ConfigKey, ServiceInstance, server_spec_key, tools_spec_key, versions_key
from mcpgw.remote.files import FilesSource
from mcpgw.remote.nacos import NacosSource
from tests.support.nacos_double import NacosDouble
from tests.support.nacos_target import NacosTarget, eventually

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "nacos-configs"
EXAMPLES = FIXTURES / "publish-examples"
WEATHER_ID = default_server_id("public", "weather-rest")
CREDENTIAL = ConfigKey("public", "mcp-credentials", "weather-api-key.json")


class Clock:
    """Release dates that move forward on every call, so a re-release is visible."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"2025-10-01T00:00:{self.calls:02d}Z"


def example(name: str) -> dict[str, Any]:
    path = EXAMPLES / name
    data: dict[str, Any] = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    return data


def write_doc(directory: Path, name: str, doc: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def loaded(directory: Path, name: str, doc: dict[str, Any]) -> LoadedDocument:
    [document] = load_documents(write_doc(directory, name, doc))
    return document


def weather(version: str = "1.0.0", **server: Any) -> dict[str, Any]:
    doc = example("weather-rest.yaml")
    doc["server"].update(version=version, **server)
    return doc


def tree_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def read_json(root: Path, key: ConfigKey) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "config" / key.namespace / key.group / key.data_id).read_text())
    return data


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return tmp_path / "tree"


@pytest.fixture
def publisher(tree: Path) -> Publisher:
    return Publisher(FilesTarget(tree), clock=Clock())


# ---------------------------------------------------------------- document -> configs


async def test_a_document_becomes_the_three_nacos_configs_as_nacos_writes_them(
    tmp_path: Path, tree: Path, publisher: Publisher
) -> None:
    outcome = await publisher.publish(loaded(tmp_path / "docs", "w.yaml", weather()))

    assert outcome.action == "published" and outcome.message == "published weather-rest 1.0.0 (latest)"
    versions = read_json(tree, versions_key(WEATHER_ID))
    assert versions == {
        "id": WEATHER_ID, "name": "weather-rest", "protocol": "http", "frontProtocol": "mcp-streamable",
        "description": "Weather forecasts from the demo REST backend", "enabled": True, "capabilities": ["TOOL"],
        "latestPublishedVersion": "1.0.0",
        "versionDetails": [{"version": "1.0.0", "release_date": "2025-10-01T00:00:01Z", "is_latest": True}],
    }
    spec = read_json(tree, server_spec_key(WEATHER_ID, "1.0.0"))
    assert spec["versionDetail"] == {"version": "1.0.0", "release_date": "2025-10-01T00:00:01Z", "is_latest": True}
    assert spec["remoteServerConfig"] == {
        "exportPath": "",
        "serviceRef": {"namespaceId": "public", "groupName": "DEFAULT_GROUP", "serviceName": "weather-api"},
    }
    assert spec["toolsDescriptionRef"] == f"{WEATHER_ID}-1.0.0-mcp-tools.json"
    tools = read_json(tree, tools_spec_key(WEATHER_ID, "1.0.0"))
    assert [t["name"] for t in tools["tools"]] == ["get_forecast", "get_city", "report_observation", "units"]
    assert tools["toolsMeta"]["get_city"]["templates"]["json-go-template"]["argsPosition"] == {"name": "path"}
    assert tools["securitySchemes"][0] == {
        "id": "demo-key", "type": "apiKey", "in": "header", "name": "X-API-Key",
        "defaultCredential": "{{ ${nacos.weather-api-key.json/mcp-credentials}.data }}",
    }
    assert outcome.warnings and "weather-api-key.json" in outcome.warnings[0]


async def test_specs_are_written_before_the_versions_file_and_deleted_after_it(
    tmp_path: Path, publisher: Publisher
) -> None:
    published = await publisher.publish(loaded(tmp_path, "w.yaml", weather()))
    deleted = await publisher.delete("weather-rest")

    assert [w.key.group for w in published.writes] == ["mcp-server", "mcp-tools", "mcp-server-versions"]
    assert [w.key.group for w in deleted.writes] == ["mcp-server-versions", "mcp-server", "mcp-tools"]
    assert all(w.content is None for w in deleted.writes)


async def test_the_gateway_serves_exactly_the_tools_that_were_published(tree: Path, publisher: Publisher) -> None:
    outcomes = await publisher.publish_all(load_documents(EXAMPLES))
    assert [o.action for o in outcomes] == ["published"] * 3
    (tree / "config/public/mcp-credentials").mkdir(parents=True)
    (tree / "config/public/mcp-credentials/weather-api-key.json").write_text('{"data": "k-123"}')

    source = FilesSource(tree)
    await source.start()
    try:
        listed = {s.name: s for s in await source.list_mcp_servers()}
        assert sorted(listed) == ["gateway-info", "maps", "weather-rest"]
        served: dict[str, list[str]] = {}
        for name, info in listed.items():
            tools_text = await source.get_config(tools_spec_key(info.id, info.version))
            assert tools_text is not None
            snapshot = ServerSnapshot(
                server_id=info.id,
                namespace="public",
                versions=await source.get_config(versions_key(info.id)) or "",
                server_spec=await source.get_config(server_spec_key(info.id, info.version)),
                tools_spec=tools_text,
                instances=(ServiceInstance("10.0.0.1", 8000),),
                credentials={k: await source.get_config(k) for k in credential_refs(tools_text, "public")},
            )
            models = ConfigConverter().convert(snapshot)
            assert isinstance(models, ServerModels)
            served[name] = sorted(t.name for t in models.tools)
    finally:
        await source.stop()
    assert served == {
        "gateway-info": ["greet"],
        "maps": ["geocode"],
        "weather-rest": ["get_city", "get_forecast", "report_observation", "units"],
    }


async def test_every_publish_example_passes_validation() -> None:
    assert [d.name for d in load_documents(EXAMPLES)] == ["gateway-info", "maps", "weather-rest"]


# ---------------------------------------------------------------- rejection: nothing is written


def _broken(doc: dict[str, Any], edit: Any) -> dict[str, Any]:
    edit(doc)
    return doc


REJECTIONS = {
    "template-does-not-parse": (
        lambda d: d["tools"][1]["template"]["requestTemplate"].update(url="/cities/{{ .args.name"),
        "get_city", "$.tools[1].template.requestTemplate.url", "does not parse",
    ),
    "rest-tool-without-template": (
        lambda d: d["tools"][2].pop("template"), "report_observation", "$.tools[2].template", "no json-go-template",
    ),
    "two-argsTo": (
        lambda d: d["tools"][0]["template"]["requestTemplate"].update(argsToJsonBody=True),
        "get_forecast", "$.tools[0].template.requestTemplate.argsToUrlParam", "argsTo",
    ),
    "misspelt-tool-field": (
        lambda d: d["tools"][3].update(inputschema={"type": "object"}), "units", "$.tools[3].inputschema", "Extra",
    ),
    "version-read-as-a-number": (
        lambda d: d["server"].update(version=1.1), "", "$.server.version", "quoted string",
    ),
    "bad-input-schema": (
        lambda d: d["tools"][0].update(inputSchema={"type": "object", "properties": {"city": {"type": "text"}}}),
        "get_forecast", "$.tools[0].inputSchema.properties.city.type", "",
    ),
    "unknown-protocol": (lambda d: d["server"].update(protocol="stdio"), "", "$.server.protocol", "Input should be"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
async def test_an_invalid_document_names_file_tool_and_path_and_nothing_is_written(
    case: str, tmp_path: Path, tree: Path
) -> None:
    edit, tool, path, reason = REJECTIONS[case]
    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLES, docs)
    bad = write_doc(docs, "weather-rest.yaml", _broken(weather(), edit))

    with pytest.raises(InvalidDocuments) as caught:
        await Publisher(FilesTarget(tree)).publish_all(load_documents(docs))

    [problem] = caught.value.problems
    assert problem.file == str(bad)
    assert problem.tool == tool
    assert problem.path == path
    assert reason in problem.reason
    assert tree_files(tree) == {}


async def test_a_proxied_server_without_a_service_ref_is_rejected_at_its_service_ref(tmp_path: Path) -> None:
    doc = example("maps-proxy.yaml")
    del doc["server"]["serviceRef"]
    with pytest.raises(InvalidDocuments) as caught:
        load_documents(write_doc(tmp_path, "maps.yaml", doc))
    [problem] = caught.value.problems
    assert problem.path == "$.server.serviceRef" and "serviceRef" in problem.reason


async def test_two_documents_for_one_server_are_rejected(tmp_path: Path) -> None:
    write_doc(tmp_path, "a.yaml", weather("1.0.0"))
    write_doc(tmp_path, "b.yaml", weather("2.0.0"))
    with pytest.raises(InvalidDocuments, match="also published by"):
        load_documents(tmp_path)


def test_a_document_that_is_not_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("server: [unclosed\n")
    with pytest.raises(ConversionError, match=r"not valid YAML \(line 2"):
        parse_document(path)


# ---------------------------------------------------------------- idempotence and versions


async def test_publishing_identical_content_again_writes_nothing(
    tmp_path: Path, tree: Path, publisher: Publisher
) -> None:
    doc = loaded(tmp_path, "w.yaml", weather())
    await publisher.publish(doc)
    before = tree_files(tree)

    again = await publisher.publish(doc)

    assert again.action == "unchanged" and again.writes == ()
    assert again.message == "unchanged weather-rest 1.0.0"
    assert tree_files(tree) == before


async def test_a_new_version_becomes_the_latest_and_the_old_one_stays(
    tmp_path: Path, tree: Path, publisher: Publisher
) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0", description="v2")))

    versions = read_json(tree, versions_key(WEATHER_ID))
    assert versions["latestPublishedVersion"] == "1.1.0" and versions["description"] == "v2"
    assert [(d["version"], d["is_latest"]) for d in versions["versionDetails"]] == [("1.0.0", False), ("1.1.0", True)]
    assert (tree / "config/public/mcp-server" / f"{WEATHER_ID}-1.0.0-mcp-server.json").exists()


async def test_changed_content_of_the_same_version_is_republished(
    tmp_path: Path, tree: Path, publisher: Publisher
) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather()))
    changed = weather()
    changed["tools"][3]["description"] = "new words"

    outcome = await publisher.publish(loaded(tmp_path, "w.yaml", changed))

    assert outcome.action == "published"
    assert read_json(tree, tools_spec_key(WEATHER_ID, "1.0.0"))["tools"][3]["description"] == "new words"


async def test_a_draft_keeps_the_latest_published_version(tmp_path: Path, tree: Path, publisher: Publisher) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))

    outcome = await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0")), draft=True)

    assert outcome.message == "published weather-rest 1.1.0 as a draft (latest stays 1.0.0)"
    versions = read_json(tree, versions_key(WEATHER_ID))
    assert versions["latestPublishedVersion"] == "1.0.0"
    assert versions["versionDetails"][-1] == {"version": "1.1.0"}
    assert "release_date" not in read_json(tree, server_spec_key(WEATHER_ID, "1.1.0"))["versionDetail"]
    again = await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0")), draft=True)
    assert again.action == "unchanged"


async def test_a_draft_flag_in_the_document_counts_like_the_option(
    tmp_path: Path, tree: Path, publisher: Publisher
) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))
    outcome = await publisher.publish(loaded(tmp_path, "w.yaml", {**weather("1.1.0"), "draft": True}))
    assert outcome.action == "drafted"
    assert read_json(tree, versions_key(WEATHER_ID))["latestPublishedVersion"] == "1.0.0"


async def test_a_draft_may_not_overwrite_the_version_being_served(tmp_path: Path, publisher: Publisher) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))
    with pytest.raises(PublishError, match="needs a new version number"):
        await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")), draft=True)


async def test_set_latest_releases_a_draft_and_serves_it(tmp_path: Path, tree: Path, publisher: Publisher) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0")), draft=True)

    outcome = await publisher.set_latest("weather-rest", "1.1.0")

    assert outcome.message == "weather-rest: latest version is now 1.1.0"
    versions = read_json(tree, versions_key(WEATHER_ID))
    assert versions["latestPublishedVersion"] == "1.1.0"
    assert versions["versionDetails"][1]["release_date"] and versions["versionDetails"][1]["is_latest"] is True
    assert versions["versionDetails"][0]["is_latest"] is False
    assert (await publisher.set_latest("weather-rest", "1.1.0")).action == "unchanged"
    back = await publisher.set_latest("weather-rest", "1.0.0")
    assert back.action == "latest"
    assert read_json(tree, versions_key(WEATHER_ID))["latestPublishedVersion"] == "1.0.0"


async def test_set_latest_of_an_unknown_version_lists_the_known_ones(tmp_path: Path, publisher: Publisher) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))
    with pytest.raises(PublishError, match=r"has no version '9\.9' \(its versions: 1\.0\.0\)"):
        await publisher.set_latest("weather-rest", "9.9")
    with pytest.raises(PublishError, match="no MCP server named 'nope'"):
        await publisher.set_latest("nope", "1.0.0")


async def test_delete_version_removes_an_unserved_version_only(
    tmp_path: Path, tree: Path, publisher: Publisher
) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0")))

    with pytest.raises(PublishError, match="latest published version"):
        await publisher.delete_version("weather-rest", "1.1.0")
    outcome = await publisher.delete_version("weather-rest", "1.0.0")

    assert outcome.message == "deleted weather-rest 1.0.0"
    assert [d["version"] for d in read_json(tree, versions_key(WEATHER_ID))["versionDetails"]] == ["1.1.0"]
    assert not (tree / "config/public/mcp-server" / f"{WEATHER_ID}-1.0.0-mcp-server.json").exists()
    assert not (tree / "config/public/mcp-tools" / f"{WEATHER_ID}-1.0.0-mcp-tools.json").exists()
    assert (tree / "config/public/mcp-tools" / f"{WEATHER_ID}-1.1.0-mcp-tools.json").exists()


async def test_delete_removes_every_config_of_the_server_and_is_idempotent(
    tmp_path: Path, tree: Path, publisher: Publisher
) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))
    await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0")), draft=True)

    outcome = await publisher.delete("weather-rest")

    assert outcome.message == "deleted weather-rest (2 version(s))"
    assert tree_files(tree) == {}
    assert (await publisher.delete("weather-rest")).action == "unchanged"


async def test_a_dry_run_says_what_would_change_and_writes_nothing(tmp_path: Path, tree: Path) -> None:
    dry = Publisher(FilesTarget(tree), dry_run=True)
    outcome = await dry.publish(loaded(tmp_path, "w.yaml", weather()))
    assert outcome.message == "would publish weather-rest 1.0.0 (latest)" and len(outcome.writes) == 3
    assert tree_files(tree) == {}


async def test_an_existing_server_is_found_by_name_whatever_its_id(tmp_path: Path, tree: Path) -> None:
    shutil.copytree(FIXTURES / "demo", tree)
    doc = weather("1.3.0", name="weather")

    await Publisher(FilesTarget(tree), clock=Clock()).publish(loaded(tmp_path, "w.yaml", doc))

    versions = read_json(tree, versions_key("8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"))
    assert versions["latestPublishedVersion"] == "1.3.0"
    assert [d["version"] for d in versions["versionDetails"]] == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]


async def test_a_pinned_id_of_another_server_is_refused(tmp_path: Path, publisher: Publisher) -> None:
    await publisher.publish(loaded(tmp_path, "w.yaml", weather()))
    other = example("gateway-info.json")
    other["server"]["id"] = WEATHER_ID
    with pytest.raises(PublishError, match="already belongs to server 'weather-rest'"):
        await publisher.publish(loaded(tmp_path, "g.yaml", other))


# ---------------------------------------------------------------- Nacos: admin API and raw configs


@pytest.fixture
async def double() -> AsyncIterator[NacosDouble]:
    async with NacosDouble() as running:
        yield running


def stored(double: NacosDouble, key: ConfigKey) -> dict[str, Any]:
    content = double.config(key.namespace, key.group, key.data_id)
    assert content is not None, f"{key} is not in Nacos"
    data: dict[str, Any] = json.loads(content)
    return data


def with_backends() -> list[LoadedDocument]:
    """The examples Nacos' admin API accepts: those with a backend service (an endpoint)."""
    return [doc for doc in load_documents(EXAMPLES) if doc.document.server.serviceRef is not None]


async def read_back(source: NacosSource, key: ConfigKey, *, present: bool = True) -> dict[str, Any] | None:
    """A config as Nacos holds it, through another SDK client (the real server's reads lag its writes a little)."""
    content = await eventually(lambda: source.get_config(key), lambda found: (found is not None) == present)
    assert (content is not None) == present, f"{key} is {'not ' if present else ''}in Nacos"
    return json.loads(content) if content is not None else None


async def console_view(source: NacosSource, name: str) -> dict[str, Any]:
    """The server as Nacos' own admin API shows it to its console: the listing entry."""
    response = await source.admin_request(
        "GET", "/nacos/v3/admin/ai/mcp/list",
        {"namespaceId": "public", "pageNo": "1", "pageSize": "100", "mcpName": name, "search": "accurate"}, "list",
    )
    [entry] = [item for item in response.json()["data"]["pageItems"] if item["name"] == name]
    return dict(entry)


async def test_the_admin_api_target_publishes_idempotently_and_deletes(
    tmp_path: Path, nacos: NacosTarget, reader: NacosSource
) -> None:
    async with nacos_target(nacos.server_addr, username=nacos.username, password=nacos.password) as target:
        publisher = Publisher(target, clock=Clock())
        for name in ("weather-rest", "maps"):  # a real Nacos outlives a test run
            await publisher.delete(name)
        with pytest.raises(PublishError, match="serviceRef is missing"):
            await publisher.publish_all(load_documents(EXAMPLES))
        assert await read_back(reader, versions_key(WEATHER_ID), present=False) is None
        outcomes = await publisher.publish_all(with_backends())
        assert [o.action for o in outcomes] == ["published"] * 2
        spec = await read_back(reader, server_spec_key(WEATHER_ID, "1.0.0"))
        assert spec is not None and spec["remoteServerConfig"]["serviceRef"]["serviceName"] == "weather-api"
        versions_before = await read_back(reader, versions_key(WEATHER_ID))
        assert versions_before is not None and versions_before["latestPublishedVersion"] == "1.0.0"
        shown = await console_view(reader, "weather-rest")
        assert (shown["id"], shown["latestPublishedVersion"], shown["protocol"]) == (WEATHER_ID, "1.0.0", "http")

        again = await publisher.publish_all(with_backends())

        assert [o.action for o in again] == ["unchanged"] * 2
        # A second create or update would have stamped a new release date.
        assert await read_back(reader, versions_key(WEATHER_ID)) == versions_before
        assert await read_back(reader, server_spec_key(WEATHER_ID, "1.0.0")) == spec

        drafted = await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0")), draft=True)
        assert drafted.action == "drafted"
        versions = await eventually(
            lambda: read_back(reader, versions_key(WEATHER_ID)),
            lambda v: v is not None and len(v["versionDetails"]) == 2,
        )
        assert versions is not None and versions["latestPublishedVersion"] == "1.0.0"
        assert versions["versionDetails"][-1] == {"version": "1.1.0"}
        assert (await console_view(reader, "weather-rest"))["latestPublishedVersion"] == "1.0.0"

        assert (await publisher.set_latest("weather-rest", "1.1.0")).action == "latest"
        latest = await eventually(
            lambda: read_back(reader, versions_key(WEATHER_ID)), lambda v: v is not None and
            v["latestPublishedVersion"] == "1.1.0"
        )
        assert latest is not None and latest["latestPublishedVersion"] == "1.1.0"
        assert (await console_view(reader, "weather-rest"))["latestPublishedVersion"] == "1.1.0"

        with pytest.raises(PublishError, match="cannot delete one version"):
            await publisher.delete_version("weather-rest", "1.0.0")
        assert (await publisher.delete("weather-rest")).action == "deleted"
        assert await read_back(reader, versions_key(WEATHER_ID), present=False) is None
        maps = await read_back(reader, versions_key(default_server_id("public", "maps")))
        assert maps is not None and maps["name"] == "maps"
        await publisher.delete("maps")


@pytest.fixture
async def reader(nacos: NacosTarget, tmp_path: Path) -> AsyncIterator[NacosSource]:
    source = NacosSource(
        nacos.server_addr, username=nacos.username, password=nacos.password,
        cache_dir=tmp_path / "reader" / "cache", log_dir=tmp_path / "reader" / "logs",
    )
    await source.start()
    yield source
    await source.stop()


async def test_the_admin_api_target_refuses_a_first_version_as_a_draft(tmp_path: Path, double: NacosDouble) -> None:
    async with nacos_target(double.server_addr) as target:
        with pytest.raises(PublishError, match="publish it without --draft first"):
            await Publisher(target).publish(loaded(tmp_path, "w.yaml", weather()), draft=True)
    assert double.config("public", "mcp-server-versions", f"{WEATHER_ID}-mcp-versions.json") is None


async def test_the_admin_api_target_refuses_a_service_in_another_namespace(
    tmp_path: Path, double: NacosDouble
) -> None:
    doc = weather()
    doc["server"]["serviceRef"]["namespaceId"] = "elsewhere"
    async with nacos_target(double.server_addr) as target:
        with pytest.raises(PublishError, match="own namespace"):
            await Publisher(target).publish_all([loaded(tmp_path, "w.yaml", doc)])


async def test_the_raw_target_writes_configs_nacos_2_style(tmp_path: Path, double: NacosDouble) -> None:
    async with nacos_target(double.server_addr, raw=True) as target:
        publisher = Publisher(target, clock=Clock())
        await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.0.0")))
        await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0")))
        assert (await publisher.publish(loaded(tmp_path, "w.yaml", weather("1.1.0")))).action == "unchanged"

        assert (await publisher.delete_version("weather-rest", "1.0.0")).action == "deleted-version"

    versions = stored(double, versions_key(WEATHER_ID))
    assert [d["version"] for d in versions["versionDetails"]] == ["1.1.0"]
    assert double.config("public", "mcp-server", f"{WEATHER_ID}-1.0.0-mcp-server.json") is None
    assert stored(double, tools_spec_key(WEATHER_ID, "1.1.0"))["toolsMeta"]["units"]["enabled"] is True


async def test_wrong_credentials_fail_with_a_clear_error_and_no_secret(double: NacosDouble) -> None:
    double.require_auth("nacos", "right-password")
    with pytest.raises(SourceAuthError, match="rejected the credentials for user nacos") as caught:
        async with nacos_target(double.server_addr, username="nacos", password="wrong-password"):
            pytest.fail("must not get a target")
    assert "wrong-password" not in str(caught.value)


async def test_right_credentials_publish_through_the_admin_api(tmp_path: Path, double: NacosDouble) -> None:
    double.require_auth("nacos", "right-password")
    async with nacos_target(double.server_addr, username="nacos", password="right-password") as target:
        outcome = await Publisher(target).publish(loaded(tmp_path, "w.yaml", weather()))
    assert outcome.action == "published"
    assert stored(double, versions_key(WEATHER_ID))["name"] == "weather-rest"
