"""The gateway's handling of the cyclic garbage collector around its first sync."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from mcpgw.gateway.app import YOUNG_ROUNDS_PER_GEN1, pause_collector_until


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    enabled = gc.isenabled()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()
    if enabled:
        gc.enable()


async def test_the_collector_is_paused_until_the_first_sync_then_the_survivors_are_frozen() -> None:
    ready = asyncio.Event()
    young, _, old = gc.get_threshold()
    seen_during_sync: list[bool] = []
    state: list[dict[str, int]] = []

    async def first_sync() -> None:  # runs once the pause has begun waiting
        seen_during_sync.append(gc.isenabled())
        state.extend({"server": n} for n in range(1000))
        ready.set()

    await asyncio.gather(pause_collector_until(ready, limit=10), first_sync())

    assert seen_during_sync == [False]

    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(state)
    assert gc.get_threshold() == (young, YOUNG_ROUNDS_PER_GEN1, old)


async def test_a_first_sync_that_never_ends_does_not_keep_the_collector_off() -> None:
    with capture_logs() as logs:
        await pause_collector_until(asyncio.Event(), limit=0.05)

    assert gc.isenabled()
    assert [entry["event"] for entry in logs] == ["gc.pause_ended_before_first_sync"]
