"""JSON Schemas of the three Nacos MCP documents, generated from converter.models.

Regenerate with ``python -m mcpgw.converter.schemas`` after changing the models;
a test fails when the files drift from the models.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mcpgw.converter.models import ServerSpec, ToolsSpec, VersionsFile

SCHEMA_DIR = Path(__file__).parent / "nacos_schemas"
DOCUMENTS: dict[str, type[BaseModel]] = {
    "versions": VersionsFile,
    "server": ServerSpec,
    "tools": ToolsSpec,
}


def generated(kind: str) -> dict[str, Any]:
    schema = DOCUMENTS[kind].model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://mcpgw.dev/schemas/nacos-mcp-{kind}.schema.json"
    return schema


def path_of(kind: str) -> Path:
    return SCHEMA_DIR / f"{kind}.schema.json"


@cache
def load(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path_of(kind).read_text())
    return data


def write_all() -> None:
    for kind in DOCUMENTS:
        path_of(kind).write_text(json.dumps(generated(kind), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_all()
