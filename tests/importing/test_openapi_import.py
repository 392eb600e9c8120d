"""How ``mcpgw import openapi`` turns OpenAPI into tools, and how it refuses what it cannot import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw.adapter.openapi_import import OpenApiImportError, import_openapi
from mcpgw.gateway.cli import main


def write(tmp_path: Path, document: dict[str, Any], name: str = "api.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def v30(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "Shop API", "version": "1.2.3"},
            "servers": [{"url": "https://shop.example.com/{stage}", "variables": {"stage": {"default": "v2"}}}],
            "paths": paths, **extra}


def tool(result: Any, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in result.document["tools"] if t["name"] == name)
    return found


def test_openapi_3_0_schemas_become_json_schema_2020_12(tmp_path: Path) -> None:
    doc = v30({"/items": {"post": {"operationId": "add item!", "requestBody": {"content": {
        "application/json": {"schema": {"allOf": [
            {"$ref": "#/components/schemas/Base"},
            {"type": "object", "required": ["price"], "properties": {
                "price": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                "note": {"type": "string", "nullable": True, "example": "fragile", "xml": {"name": "n"}}}}]}}}},
        "responses": {"200": {"description": "ok"}}}}},
        components={"schemas": {"Base": {"type": "object", "required": ["sku"], "properties": {
            "sku": {"type": "string"}, "id": {"type": "integer", "readOnly": True}}}}})
    result = import_openapi(write(tmp_path, doc), service="shop")
    made = tool(result, "add_item")
    schema = made["inputSchema"]
    assert schema["properties"]["price"] == {"type": "number", "exclusiveMinimum": 0}
    assert schema["properties"]["note"] == {"type": ["string", "null"], "examples": ["fragile"]}
    assert "id" not in schema["properties"] and schema["required"] == ["sku", "price"]
    assert made["template"]["requestTemplate"] == {"url": "/v2/items", "method": "POST", "argsToJsonBody": True}
    assert made["template"]["argsPosition"] == {"sku": "body", "price": "body", "note": "body"}
    assert result.document["server"] == {"name": "shop-api", "version": "1.2.3", "description": "Shop API",
                                         "protocol": "http",
                                         "serviceRef": {"groupName": "DEFAULT_GROUP", "serviceName": "shop"}}


def test_without_a_service_calls_go_to_the_documents_own_server(tmp_path: Path) -> None:
    doc = v30({"/items/{id}": {"get": {"parameters": [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
        {"name": "X-Trace", "in": "header", "schema": {"type": "string"}},
        {"name": "fields", "in": "query", "schema": {"type": "string", "default": "all"}}],
        "responses": {"200": {"description": "ok"}}}}})
    result = import_openapi(write(tmp_path, doc))
    made = tool(result, "get_items_id")
    assert made["template"]["requestTemplate"]["url"] == "https://shop.example.com/v2/items/{id}"
    assert made["template"]["argsPosition"] == {"id": "path", "X-Trace": "header", "fields": "query"}
    # A default is told, not filled in by the gateway: the API applies its own.
    assert made["inputSchema"]["properties"]["fields"] == {"type": "string", "description": 'Default: "all".'}
    assert result.document["server"]["protocol"] == "https" and "serviceRef" not in result.document["server"]


def test_bodies_that_are_not_objects_or_clash_with_a_parameter_are_one_body_argument(tmp_path: Path) -> None:
    doc = v30({"/tags/{name}": {"put": {"operationId": "setTags", "parameters": [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"name": {"type": "string"}}}}}},
        "responses": {"204": {"description": "done"}}}}})
    made = tool(import_openapi(write(tmp_path, doc), service="s"), "setTags")
    assert made["inputSchema"]["required"] == ["name", "body"]
    assert made["template"]["requestTemplate"]["body"] == "{{ toJson .args.body }}"
    assert made["template"]["argsPosition"] == {"name": "path"}


def test_operations_a_template_cannot_make_are_skipped_with_the_reason(tmp_path: Path) -> None:
    doc = v30({
        "/upload": {"post": {"operationId": "upload", "requestBody": {"content": {
            "multipart/form-data": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "ok"}}}},
        "/form": {"post": {"operationId": "form", "requestBody": {"content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
                "q": {"type": "string"}}}}}}, "responses": {"200": {"description": "ok"}}}},
    })
    result = import_openapi(write(tmp_path, doc), service="s")
    assert [t["name"] for t in result.document["tools"]] == ["form"]
    assert tool(result, "form")["template"]["requestTemplate"]["argsToFormBody"] is True
    assert any("POST /upload skipped" in w and "multipart/form-data" in w for w in result.warnings)
    assert main(["import", "openapi", str(tmp_path / "api.yaml"), "--service", "s", "--strict"]) == 1


def test_security_schemes_become_credential_references_never_secrets(tmp_path: Path) -> None:
    doc = v30({"/a": {"get": {"operationId": "a", "responses": {"200": {"description": "ok"}}}},
               "/b": {"get": {"operationId": "b", "security": [{"cookie": []}],
                              "responses": {"200": {"description": "ok"}}}},
               "/c": {"get": {"operationId": "c", "security": [{}], "responses": {"200": {"description": "ok"}}}}},
              security=[{"oauth": ["read"]}],
              components={"securitySchemes": {
                  "oauth": {"type": "oauth2", "flows": {"clientCredentials": {
                      "tokenUrl": "https://auth.example.com/token", "scopes": {"read": "read"}}}},
                  "cookie": {"type": "apiKey", "in": "cookie", "name": "session"}}})
    result = import_openapi(write(tmp_path, doc), service="s")
    assert result.document["securitySchemes"] == [{
        "id": "oauth", "type": "http", "scheme": "bearer",
        "defaultCredential": "{{ ${nacos.shop-api-oauth.json/mcp-credentials}.data }}"}]
    assert tool(result, "a")["template"]["requestTemplate"]["security"] == {"id": "oauth"}
    assert "security" not in tool(result, "b")["template"]["requestTemplate"]
    assert "security" not in tool(result, "c")["template"]["requestTemplate"]
    assert result.credentials == ["mcp-credentials/shop-api-oauth.json"]
    assert any("'cookie'" in w and "cannot be applied" in w for w in result.warnings)


def test_names_fit_mcp_and_stay_unique(tmp_path: Path) -> None:
    long_id = "x" * 100
    doc = v30({"/a": {"get": {"operationId": long_id, "responses": {"200": {"description": "ok"}}},
                      "post": {"operationId": "dup", "responses": {"200": {"description": "ok"}}}},
               "/b": {"post": {"operationId": "dup", "responses": {"200": {"description": "ok"}}}}})
    names = [t["name"] for t in import_openapi(write(tmp_path, doc), service="s").document["tools"]]
    assert len(names[0]) == 64 and names[0].startswith("x" * 50)
    assert names[1:] == ["dup", "dup_2"]


@pytest.mark.parametrize(("document", "message"), [
    ({"info": {"title": "t"}}, "neither an 'openapi' nor a 'swagger' field"),
    ({"openapi": "4.0.0", "info": {"title": "t", "version": "1"}, "paths": {}}, "openapi '4.0.0' is not supported"),
    ({"swagger": "1.2"}, "only Swagger 2.0"),
    ({"openapi": "3.0.3", "paths": {}}, "is not a valid openapi-3.0 document:\n  $: "),
    (v30({"/a": {"get": {"responses": {"200": {"description": "ok", "content": {"application/json": {
        "schema": {"$ref": "https://example.com/schemas.json#/Pet"}}}}}, "requestBody": {"content": {
            "application/json": {"schema": {"$ref": "https://example.com/schemas.json#/Pet"}}}}}}}),
     "never over the network"),
    (v30({"/a": {"post": {"requestBody": {"content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Missing"}}}}, "responses": {"200": {"description": "ok"}}}}}),
     "'#/components/schemas/Missing' cannot be resolved"),
    ({**v30({"/a": {"get": {"responses": {"200": {"description": "ok"}}}}}), "servers": []},
     "pass --service NAME"),
])
def test_what_cannot_be_imported_is_refused_saying_why(tmp_path: Path, document: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(OpenApiImportError) as caught:
        import_openapi(write(tmp_path, document))
    assert message in str(caught.value)
    assert "On instance" not in str(caught.value)  # the validator's dump of the whole document is cut


def test_external_files_next_to_the_document_are_followed(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "pet.yaml").write_text(yaml.safe_dump({"Pet": {"type": "object", "properties": {
        "name": {"type": "string"}, "owner": {"$ref": "owner.json"}}}}))
    (tmp_path / "schemas" / "owner.json").write_text(json.dumps({"type": "object", "properties": {
        "email": {"type": "string", "format": "email"}}}))
    doc = v30({"/pets": {"post": {"operationId": "addPet", "requestBody": {"content": {"application/json": {
        "schema": {"$ref": "schemas/pet.yaml#/Pet"}}}}, "responses": {"200": {"description": "ok"}}}}})
    made = tool(import_openapi(write(tmp_path, doc), service="s"), "addPet")
    assert made["inputSchema"]["properties"] == {
        "name": {"type": "string"}, "owner": {"type": "object", "properties": {"email": {
            "type": "string", "format": "email"}}}}


def test_the_cli_prints_a_document_publish_accepts_and_warnings_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = v30({"/a": {"get": {"operationId": "a", "responses": {"200": {"description": "ok", "content": {
        "application/json": {"schema": {"type": "object", "properties": {"n": {"type": "integer",
                                                                                 "description": "count"}}}}}}}}},
               "/up": {"put": {"requestBody": {"content": {"application/octet-stream": {}}},
                               "responses": {"200": {"description": "ok"}}}}})
    source = write(tmp_path, doc)
    assert main(["import", "openapi", str(source), "--server", "shop", "--service", "shop-api",
                 "--version", "3.0.0"]) == 0
    out = capsys.readouterr()
    printed = yaml.safe_load(out.out)
    assert printed["server"]["name"] == "shop" and printed["server"]["version"] == "3.0.0"
    assert "- n (integer): count" in printed["tools"][0]["template"]["responseTemplate"]["prependBody"]
    assert "warning: PUT /up skipped" in out.err and "1 tool(s) from 2 operation(s)" in out.err
    (tmp_path / "doc.yaml").write_text(out.out)
    assert main(["publish", str(tmp_path / "doc.yaml"), "--files", str(tmp_path / "tree"), "--dry-run"]) == 0
    assert main(["import", "openapi", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err
