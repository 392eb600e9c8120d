"""The shipped dashboard and alert rules ask only for metrics the gateway exports.

A renamed metric or a typo in ``deploy/`` would leave a panel empty or an alert that never fires, silently;
this reads every PromQL expression in ``deploy/grafana/mcpgw.json`` and ``deploy/prometheus/alerts.yml`` and
checks each metric name against what a running gateway's ``/metrics`` exposes. Where ``promtool`` is
installed (Debian's ``prometheus`` package; CI installs it) the rule file is also checked by it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp.client import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.edge import edge_gateway

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "mcpgw.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"), "info": ("_info",)}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names one PromQL expression selects (functions, keywords, labels and variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        following = text[match.end():].lstrip()
        if word.lower() in KEYWORDS or following.startswith("("):
            continue
        names.add(word)
    return names


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]
    for variable in doc["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", query["query"]))
    return found


def alert_expressions() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


async def exported_names(tmp_path: Any) -> set[str]:
    async with edge_gateway(tmp_path) as edge:
        async with asyncio.timeout(10), Client(edge.url + "/mcp/weather", mode="legacy", cache=None) as session:
            await session.call_tool("echo", {"q": "x"})
        async with httpx.AsyncClient(trust_env=False) as http:
            text = (await http.get(edge.url + "/metrics")).text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def test_the_expression_reader_finds_metric_names_and_nothing_else() -> None:
    expr = ('histogram_quantile(0.99, sum by (server, le) (rate(mcpgw_x_bucket{server=~"$server", a="b(c)"}'
            '[$__rate_interval]))) > 2 and on (instance) (time() - mcpgw_y > 600) unless mcpgw_z offset 5m')
    assert metric_names(expr) == {"mcpgw_x_bucket", "mcpgw_y", "mcpgw_z"}


async def test_every_dashboard_and_alert_expression_names_only_exported_metrics(tmp_path: Any) -> None:
    exported = await exported_names(tmp_path)
    expressions = dashboard_expressions() + alert_expressions()
    assert len(expressions) > 20
    wanted = set().union(*(metric_names(e) for e in expressions))
    assert wanted - exported == set()
    # The dashboard covers what operators ask first: calls, latency, upstream codes, reloads, the source.
    for name in ("mcpgw_tool_calls_total", "mcpgw_tool_call_duration_seconds_bucket",
                 "mcpgw_upstream_requests_total", "mcpgw_config_reloads_total", "mcpgw_source_connected",
                 "mcpgw_instance_ejections_total", "mcpgw_sessions"):
        assert name in wanted


def test_the_alert_rules_cover_the_operators_cases() -> None:
    names = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert {"McpgwSourceDisconnected", "McpgwServerStale", "McpgwToolErrorRatioHigh", "McpgwToolLatencyP99High",
            "McpgwInstanceEjections"} <= names


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it as root)")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
