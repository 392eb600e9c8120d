"""Which Nacos a test talks to: the protocol double, or the real Nacos 3 server.

Tests that take the ``nacos`` fixture run twice, ``[double]`` and ``[real]``.
Both are driven the same way (the real SDK on every link; writes by another SDK
client or through the admin API); what only one of them can do is asked for
explicitly:

- ``need_double(why)``: fault injection only the double has (dropped or delayed
  pushes, push timestamps, server-side counts of listeners); skipped on the
  real server with the reason;
- ``stop()`` / ``start()``: both can be stopped and started again on the same
  ports with their stored data kept (the real one by its process, through
  ``deploy/nacos/run.sh``); skipped only for a server someone else runs
  (``NACOS_ADDR``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import pytest

from tests.support.nacos_double import NacosDouble
from tests.support.real_nacos import NacosUnavailable, RealNacos, build

T = TypeVar("T")


async def eventually(read: Callable[[], Awaitable[T]], wanted: Callable[[T], bool], within: float = 10.0) -> T:
    """The first value ``read`` gives that is ``wanted``, else the last one once ``within`` seconds have passed.

    For what a server gives no event of (the real Nacos fills its read cache from its database
    asynchronously, so a read right after a write may still see the old content): polled, bounded.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    value = await read()
    while not wanted(value) and loop.time() < deadline:
        await asyncio.sleep(0.02)
        value = await read()
    return value


@dataclass(frozen=True)
class NacosTarget:
    kind: Literal["double", "real"]
    server_addr: str
    username: str | None
    password: str | None
    double: NacosDouble | None = None
    process: RealNacos | None = None
    """The real server's process when this suite started it; ``None`` for the double and for ``NACOS_ADDR``."""

    @property
    def is_real(self) -> bool:
        return self.kind == "real"

    def need_double(self, why: str) -> NacosDouble:
        if self.double is None:
            pytest.skip(f"needs the Nacos double to {why}; not possible against the real Nacos at {self.server_addr}")
        return self.double

    def need_restartable(self) -> None:
        if self.double is None and self.process is None:
            pytest.skip(f"the real Nacos at {self.server_addr} (NACOS_ADDR) is not ours to stop and start")

    async def stop(self) -> None:
        self.need_restartable()
        if self.double is not None:
            await self.double.stop()
        elif self.process is not None:
            await asyncio.to_thread(self.process.stop)

    async def start(self) -> None:
        self.need_restartable()
        if self.double is not None:
            await self.double.start()
        elif self.process is not None:
            await asyncio.to_thread(self.process.start)


def session_real_nacos(
    home: Path, *, addr_env: str, what: str, ai_enabled: bool = True, properties: Mapping[str, str] | None = None
) -> Iterator[NacosTarget]:
    """The body of a session fixture: a real Nacos of the suite's own (settings as ``RealNacos`` takes them),
    or the one the environment variable ``addr_env`` names; skipped with the reason where none can run."""
    external = os.environ.get(addr_env)
    if external:
        yield NacosTarget("real", external, os.environ.get("NACOS_USERNAME"), os.environ.get("NACOS_PASSWORD"))
        return
    if os.environ.get("MCPGW_REAL_NACOS") == "0":
        pytest.skip("the real Nacos is switched off by MCPGW_REAL_NACOS=0")
    try:
        build()
        process = RealNacos(home, ai_enabled=ai_enabled, properties=properties)
        process.start()
    except NacosUnavailable as exc:
        pytest.skip(f"{what} cannot run here: {exc}")
    try:
        yield NacosTarget("real", process.server_addr, process.username, process.password, process=process)
    finally:
        process.stop()
