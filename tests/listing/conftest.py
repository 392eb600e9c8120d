"""A second real Nacos 3, with its AI module off, and the Nacos fixtures of the two listing modes.

``real_nacos_without_listing`` is a Nacos 3.1 started with
``nacos.extension.ai.enabled=false`` (no ``/nacos/v3/admin/ai/*``: 404), as a
Nacos 2.x is to mcpgw, once per session and only when a test asks for it.  It
also has ``nacos.core.api.compatibility.console.enabled=true``, so that the
Nacos 2.x config search (``/nacos/v1/cs/configs``, 410 Gone on a default 3.1)
can be held to a real server as well; the v3 search is probed first, so a
source still chooses what it would choose on a default Nacos without the AI
module.  Like ``real_nacos`` it is skipped, with the reason, where it cannot
run; ``MCPGW_REAL_NACOS=0`` skips it on purpose; ``NACOS_WITHOUT_LISTING_ADDR``
(with ``NACOS_USERNAME`` / ``NACOS_PASSWORD``) points it at a server someone
else runs.

``nacos_without_listing`` runs a test against that server and against the
double with the same modules switched the same way; ``listing_nacos`` runs it
against all four: {with, without} the MCP listing × {double, real}.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from mcpgw.remote.nacos_listing import ListingMode
from tests.support.nacos_double import NacosDouble
from tests.support.nacos_target import NacosTarget, session_real_nacos
from tests.support.real_nacos import PASSWORD

V1_CONSOLE_API = "nacos.core.api.compatibility.console.enabled"


@pytest.fixture(scope="session")
def real_nacos_without_listing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NacosTarget]:
    """The real Nacos 3 of this session whose AI module is off (or the one ``NACOS_WITHOUT_LISTING_ADDR`` names)."""
    yield from session_real_nacos(
        tmp_path_factory.mktemp("real-nacos-without-listing"),
        addr_env="NACOS_WITHOUT_LISTING_ADDR",
        what="the real Nacos without its MCP listing",
        ai_enabled=False,
        properties={V1_CONSOLE_API: "true"},
    )


@pytest.fixture
async def double_without_listing() -> AsyncIterator[NacosTarget]:
    """A double switched like ``real_nacos_without_listing``, with auth on as the real one has it."""
    async with NacosDouble(mcp_listing=False, v1_console_api=True) as double:
        double.require_auth("nacos", PASSWORD)
        yield NacosTarget("double", double.server_addr, "nacos", PASSWORD, double=double)


@pytest.fixture
async def double_with_listing() -> AsyncIterator[NacosTarget]:
    """A double with its MCP listing, as the session's ``real_nacos`` (auth on too)."""
    async with NacosDouble() as double:
        double.require_auth("nacos", PASSWORD)
        yield NacosTarget("double", double.server_addr, "nacos", PASSWORD, double=double)


@pytest.fixture(params=["double", "real"])
def nacos_without_listing(request: pytest.FixtureRequest) -> NacosTarget:
    """A Nacos without the MCP listing; every test taking it runs against the double and the real server."""
    fixture = "real_nacos_without_listing" if request.param == "real" else "double_without_listing"
    target: NacosTarget = request.getfixturevalue(fixture)
    if target.process is not None and not target.process.running:
        target.process.start()  # a test that stopped it and failed before starting it again
    return target


@dataclass(frozen=True)
class ListingTarget:
    nacos: NacosTarget
    mode: ListingMode
    """The listing mode a source must choose on this Nacos."""


@pytest.fixture(
    params=[("mcp-admin", "double"), ("mcp-admin", "real"), ("config-search", "double"), ("config-search", "real")],
    ids=["with-listing-double", "with-listing-real", "without-listing-double", "without-listing-real"],
)
def listing_nacos(request: pytest.FixtureRequest) -> ListingTarget:
    mode, kind = request.param
    if mode == "config-search":
        fixture = "real_nacos_without_listing" if kind == "real" else "double_without_listing"
    else:
        fixture = "real_nacos" if kind == "real" else "double_with_listing"
    target: NacosTarget = request.getfixturevalue(fixture)
    if target.process is not None and not target.process.running:
        target.process.start()  # a test that stopped it and failed before starting it again
    return ListingTarget(target, mode)
