"""nacos-sdk-python logs a failed gRPC request with its headers, access token included: ``NacosSource`` redacts it.

Seen against the real Nacos 3.1.0-bugfix: registering an ephemeral instance in
the persistent service the console creates for an MCP server given by its URL
is refused, and the SDK's rpc client logs every retry at ERROR as ``send
request fail, request=InstanceRequest{headers{'accessToken': '…', …``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mcpgw.adapter.publish_targets import MCP_ADMIN_PATH
from mcpgw.registry.errors import SourceError
from mcpgw.remote.base import ServiceKey
from mcpgw.remote.nacos import NacosSource, _RedactSdkSecrets
from tests.gateway.test_nacos_serve import unique
from tests.support.nacos_target import NacosTarget

JWT_PREFIX = "eyJ"  # Nacos' access tokens are JWTs: base64 of '{"'


def test_access_tokens_and_signatures_in_sdk_log_records_are_redacted() -> None:
    request = ("InstanceRequest{headers{'accessToken': 'eyJhbGciOi.eyJzdWIi.sig', 'Client-AppName': 'unknown', "
               "'Spas-Signature': 'c2lnbmF0dXJl'}, requestId='7'}")
    record = logging.LogRecord("naming", logging.ERROR, __file__, 1, "send request fail, request=%s, retryTimes=%s",
                               (request, 0), None)
    assert _RedactSdkSecrets().filter(record) is True
    assert record.getMessage() == (
        "send request fail, request=InstanceRequest{headers{'accessToken': '***', 'Client-AppName': 'unknown', "
        "'Spas-Signature': '***'}, requestId='7'}, retryTimes=0"
    )


async def test_a_refused_registration_names_the_reason_and_leaves_no_token_in_the_sdk_log(
    real_nacos: NacosTarget, tmp_path: Path
) -> None:
    if not real_nacos.password:
        pytest.skip("the real Nacos runs without auth here: there is no token to leak")
    if real_nacos.process is not None and not real_nacos.process.running:
        await real_nacos.start()
    logs = tmp_path / "logs"
    source = NacosSource(real_nacos.server_addr, username=real_nacos.username, password=real_nacos.password,
                         cache_dir=tmp_path / "cache", log_dir=logs)
    await source.start()
    name = unique("console-url")
    form = {
        "serverSpecification": json.dumps({"name": name, "protocol": "mcp-sse", "frontProtocol": "mcp-sse",
                                           "versionDetail": {"version": "1.0.0"},
                                           "remoteServerConfig": {"exportPath": "/sse"}}),
        "toolSpecification": "{}",
        "endpointSpecification": json.dumps({"type": "DIRECT", "data": {"address": "127.0.0.1", "port": "9"}}),
    }
    server_id = (await source.admin_request("POST", MCP_ADMIN_PATH, form, "create a test server")).json()["data"]
    persistent = ServiceKey("public", "mcp-endpoints", f"{name}::1.0.0")
    try:
        with pytest.raises(SourceError, match="persistent service"):
            await source.register_instance(persistent, "127.0.0.1", 19)
    finally:
        await source.admin_request("DELETE", MCP_ADMIN_PATH, {"namespaceId": "public", "mcpId": server_id},
                                   "delete a test server")
        await source.admin_request("DELETE", "/nacos/v3/admin/ns/instance", {
            "namespaceId": "public", "groupName": persistent.group, "serviceName": persistent.service,
            "ip": "127.0.0.1", "port": "9", "ephemeral": "false"}, "remove a test instance")
        await source.stop()
    written = "\n".join(f.read_text(errors="replace") for f in logs.rglob("*") if f.is_file())
    assert "send request fail" in written and "'accessToken': '***'" in written
    assert JWT_PREFIX not in written
