"""A stable, human-readable projection of a GatewayState.

Used by replay golden files, ``mcpgw state`` and the admin API.  It never
contains secrets: no template config, no credentials, no header values.
"""

from __future__ import annotations

from typing import Any

from mcpgw.registry.models import Instance
from mcpgw.registry.state import AGGREGATE, GatewayState


def _instance_line(inst: Instance) -> str:
    flags = []
    if not inst.healthy:
        flags.append("unhealthy")
    if not inst.enabled:
        flags.append("disabled")
    weight = f"{inst.weight:g}"
    return f"{inst.scheme}://{inst.host}:{inst.port} weight={weight}" + (f" ({', '.join(flags)})" if flags else "")


def server_label(name: str, server_id: str) -> str:
    return f"{name or '?'} [{server_id[:8]}]"


def describe_state(state: GatewayState) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for sid in sorted(state.statuses.keys()):
        status = state.statuses[sid]
        entry: dict[str, Any] = {"phase": status.phase}
        if status.applied_version:
            entry["serving"] = status.applied_version
            entry["revision"] = status.revision
            served = state.servers.get(sid)
            if served is not None and served.route.backend != "rest":
                entry["backend"] = f"{served.route.backend} at {served.route.export_path}"
        if status.desired_version and status.desired_version != status.applied_version:
            entry["wanted"] = status.desired_version
        if status.message and status.phase != "serving" and not status.last_error:
            entry["message"] = status.message
        if status.last_error:
            err = status.last_error
            entry["error"] = {k: err[k] for k in ("file", "tool", "path", "reason") if err.get(k)}
        servers[server_label(status.name, sid)] = entry
    endpoints: dict[str, list[str]] = {}
    for key in sorted(state.endpoints.keys()):
        tools = state.endpoints[key]
        if key == AGGREGATE and not tools:
            continue
        endpoints["/mcp" if key == AGGREGATE else f"/mcp/{key}"] = sorted(tools.keys())
    clusters = {
        name: [_instance_line(i) for i in state.clusters[name].instances] for name in sorted(state.clusters.keys())
    }
    out: dict[str, Any] = {"servers": servers, "endpoints": endpoints, "clusters": clusters}
    conflicts = state.conflicts()
    if conflicts:
        out["conflicts"] = conflicts
    return out
