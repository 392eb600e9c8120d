"""The /ui console in a real headless browser (Debian's Chromium, driven by Playwright over CDP).

The page is loaded once and never reloaded by the test: a server added to the files tree and a broken edit
must appear on it by its own refresh. Playwright's own browser download cannot run here, so the test uses the
system Chromium (``.ci/run`` installs Debian's ``chromium`` as root) and is skipped, with the reason, without it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from tests.gateway.edge import TOOLS, WEATHER, edge_gateway

CHROMIUM = os.environ.get("MCPGW_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
WAIT_MS = 10_000
GREETER = "3c9e5b7a-1f2d-4a6b-8c0e-5d4f3a2b1c0d"
NEW_ID = "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package chromium; .ci/run installs it)")


def add_server_like_greeter(tree: Path, server_id: str, name: str) -> None:
    """A second direct-response server: the greeter's three files under a new id and name (versions file last)."""
    config = tree / "config/public"
    for folder, suffix in (("mcp-tools", "-1.0.0-mcp-tools.json"), ("mcp-server", "-1.0.0-mcp-server.json"),
                           ("mcp-server-versions", "-mcp-versions.json")):
        text = (config / folder / f"{GREETER}{suffix}").read_text()
        text = text.replace(GREETER, server_id).replace('"gateway-info"', json.dumps(name))
        (config / folder / f"{server_id}{suffix}").write_text(text)


async def test_the_console_shows_servers_tools_and_clusters_and_follows_an_added_server_and_a_broken_edit(
    tmp_path: Any,
) -> None:
    async with edge_gateway(tmp_path) as edge, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            failures: list[str] = []
            page.on("pageerror", lambda error: failures.append(str(error)))
            page.on("console", lambda message: failures.append(message.text) if message.type == "error" else None)
            await page.goto(edge.url + "/ui")
            weather = page.locator('#servers tr[data-server="weather"]')
            await expect(weather).to_have_attribute("data-phase", "serving", timeout=WAIT_MS)
            await expect(weather).to_contain_text("1.1.0")
            await expect(page.locator('[data-endpoint="/mcp/weather"]')).to_contain_text("get_forecast")
            cluster = page.locator("#clusters [data-cluster]").filter(has_text="weather-api")
            await expect(cluster).to_contain_text("http://127.0.0.1:")
            await expect(cluster).to_contain_text("active")

            tree = edge.gateway.settings.files_root
            add_server_like_greeter(tree, NEW_ID, "console-probe")
            added = page.locator('#servers tr[data-server="console-probe"]')
            await expect(added).to_have_attribute("data-phase", "serving", timeout=WAIT_MS)
            await expect(page.locator('[data-endpoint="/mcp/console-probe"]')).to_contain_text("greet")

            tools_file = tree / TOOLS
            tools_file.write_text(tools_file.read_text().replace('"tools": [', '"tools": [7, ', 1))
            await expect(weather).to_have_attribute("data-phase", "stale", timeout=WAIT_MS)
            await expect(weather).to_contain_text(f"{WEATHER}-1.1.0-mcp-tools.json")
            await expect(page.locator("#changes")).to_contain_text("weather → stale")
            await expect(page.locator("#changes")).to_contain_text("console-probe → serving")
            await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            assert failures == []
        finally:
            await browser.close()


async def test_the_console_is_served_with_a_policy_that_forbids_inline_script_and_framing(tmp_path: Any) -> None:
    async with edge_gateway(tmp_path) as edge, httpx.AsyncClient(trust_env=False) as http:
        page = await http.get(edge.url + "/ui")
        script = await http.get(edge.url + "/ui/console.js")
        missing = await http.get(edge.url + "/ui/../admin/state.js")
        unknown = await http.get(edge.url + "/ui/nothing.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert script.status_code == 200 and "textContent" in script.text and "innerHTML" not in script.text
    assert missing.status_code == 404 and unknown.status_code == 404
