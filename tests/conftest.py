"""What every test shares: structlog's defaults between tests, and the Nacos servers.

``mcpgw`` commands run in-process configure structlog (level, renderer); a
later test capturing logs must start from the defaults.

``nacos`` runs a test against both the protocol double (a fresh one per test)
and the real Nacos 3 server (one per session, started by
``deploy/nacos/run.sh``; see ``tests/support/real_nacos.py`` for when it is
skipped, always with the reason).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from tests.support.nacos_double import NacosDouble
from tests.support.nacos_target import NacosTarget, session_real_nacos


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def real_nacos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NacosTarget]:
    """The real Nacos 3 of this test session (or the one ``NACOS_ADDR`` names)."""
    yield from session_real_nacos(tmp_path_factory.mktemp("real-nacos"), addr_env="NACOS_ADDR", what="the real Nacos")


@pytest.fixture(params=["double", "real"])
async def nacos(request: pytest.FixtureRequest) -> AsyncIterator[NacosTarget]:
    """The Nacos a test talks to; every test taking it runs against both."""
    if request.param == "real":
        target: NacosTarget = request.getfixturevalue("real_nacos")
        if target.process is not None and not target.process.running:
            await target.start()  # a test that stopped it and failed before starting it again
        yield target
        return
    async with NacosDouble() as double:
        yield NacosTarget("double", double.server_addr, None, None, double=double)
