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

A known defect of the server ``deploy/nacos/run.sh`` starts with
``NACOS_AI_ENABLED=false``: its console context fails to start (Nacos'
console decides "AI enabled" by ``nacos.functionMode``, not by
``nacos.extension.ai.enabled``, so it builds ``A2aInnerHandler``, whose
``A2aServerOperationService`` only the AI module provides), and Nacos'
start-up failure handler then destroys ``NotifyCenter``: configs reach the
database (the HTTP admin API, the search) but never the config cache, so gRPC
reads answer "not found" and no change is ever pushed.  Tests that need
configs to propagate call ``require_config_propagation``, which skips them on
such a server, saying so; the HTTP listing tests still run there.  (With the
launcher not starting the console when the AI module is off, the whole
directory passes against a real server.)
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from remote.nacos_listing import ListingMode
from tests.support.nacos_double import NacosDouble
from tests.support.nacos_target import NacosTarget
from tests.support.real_nacos import PASSWORD, NacosUnavailable, RealNacos, build

V1_CONSOLE_API = "nacos.core.api.compatibility.console.enabled"


@pytest.fixture(scope="session")
def real_nacos_without_listing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NacosTarget]:
    """The real Nacos 3 of this session whose AI module is off (or the one ``NACOS_WITHOUT_LISTING_ADDR`` names)."""
    external = os.environ.get("NACOS_WITHOUT_LISTING_ADDR")
    if external:
        yield NacosTarget("real", external, os.environ.get("NACOS_USERNAME"), os.environ.get("NACOS_PASSWORD"))
        return
    if os.environ.get("MCPGW_REAL_NACOS") == "0":
        pytest.skip("the real Nacos is switched off by MCPGW_REAL_NACOS=0")
    try:
        build()
        process = RealNacos(
            tmp_path_factory.mktemp("real-nacos-without-listing"), ai_enabled=False, properties={V1_CONSOLE_API: "true"}
        )
        process.start()
    except NacosUnavailable as exc:
        pytest.skip(f"the real Nacos without its MCP listing cannot run here: {exc}")
    failed = _start_failure(process)
    if failed is not None:
        _half_started[process.server_addr] = failed
    try:
        yield NacosTarget("real", process.server_addr, process.username, process.password, process=process)
    finally:
        process.stop()


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


_STARTED = "mcpgw-nacos: started"
_FAILED_START = "Nacos failed to start"
_START_FINISHED_BOUND = 60.0
"""run.sh says ready once the HTTP API answers; the console context starts (or fails) after that."""
_half_started: dict[str, str] = {}
"""Server address -> the line saying its start-up failed, for servers of this session."""


def _start_failure(process: RealNacos) -> str | None:
    """Wait until the launcher has started every context or Nacos has said it failed; the failure line, if so."""
    log = process.home / "stdout.log"
    deadline = time.monotonic() + _START_FINISHED_BOUND
    while time.monotonic() < deadline and process.running:
        lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
        if any(_STARTED in line for line in lines):
            return None
        failed = next((line.strip() for line in lines if _FAILED_START in line), None)
        if failed is not None:
            return failed
        time.sleep(0.2)  # a file written by another process: nothing to wait on but the clock
    return None


def require_config_propagation(target: NacosTarget) -> None:
    """Skip, with the reason, on a real Nacos whose config changes never reach its cache (see the docstring)."""
    failed = _half_started.get(target.server_addr)
    if failed is not None:
        pytest.skip(
            f"the real Nacos at {target.server_addr} without its AI module half-started ({failed}): its console "
            "context needs the AI module's A2aServerOperationService, and Nacos' failure handler destroyed "
            "NotifyCenter, so configs never reach its cache (gRPC reads say not found, nothing is pushed). "
            "deploy/nacos's launcher must not start the console when NACOS_AI_ENABLED=false"
        )


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
