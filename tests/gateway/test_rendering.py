"""Big renders leave the event loop; small ones stay on it (gateway.rendering)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from mcpgw.converter.template import RenderLimits, parse
from mcpgw.gateway.rendering import Renderer, larger_than
from mcpgw.registry.errors import TemplateError
from tests.gateway.edge import edge_gateway, result_text


async def test_a_render_that_outgrows_its_inline_allowance_runs_while_the_event_loop_keeps_serving() -> None:
    template = parse("{{ range .n }}x{{ end }}", name="t")
    loop_ran = threading.Event()

    def work(n: int) -> str:
        text = template.render({"n": n})
        # Inline, this wait would hold the loop and the callback below could never run.
        if not loop_ran.wait(5):
            raise AssertionError("the event loop did not run while the render was in progress")
        return text

    renderer = Renderer()
    try:
        asyncio.get_running_loop().call_soon(loop_ran.set)
        async with asyncio.timeout(10):
            assert await renderer.run(work, 100_000) == "x" * 100_000
        assert renderer.offloaded == 1
    finally:
        renderer.close()


async def test_a_small_render_stays_on_the_loop() -> None:
    template = parse("{{ .a }}", name="t")
    renderer = Renderer()
    thread: list[str] = []

    def work() -> str:
        thread.append(threading.current_thread().name)
        return template.render({"a": "b"})

    assert await renderer.run(work) == "b"
    assert thread == [threading.current_thread().name] and renderer.offloaded == 0


async def test_big_input_goes_straight_to_a_worker_and_the_full_limits_apply_there() -> None:
    template = parse("{{ range .n }}x{{ end }}", name="t")
    renderer = Renderer(RenderLimits(max_steps=1000))
    thread: list[str] = []

    def work(n: int) -> str:
        thread.append(threading.current_thread().name)
        return template.render({"n": n})

    try:
        with pytest.raises(TemplateError, match=r"more than 1000 steps \(templates\.max_steps\)"):
            await renderer.run(work, 5000, big=True)
        assert thread[0].startswith("mcpgw-render") and renderer.offloaded == 1
    finally:
        renderer.close()


def test_larger_than_stops_counting_at_the_limit() -> None:
    assert not larger_than({"a": "x" * 10, "b": [1, 2]}, 100)
    assert larger_than({"a": "x" * 200}, 100)
    assert larger_than([[1] * 60, [2] * 60], 100)


async def test_a_tool_looping_twenty_million_times_answers_a_tool_error_and_the_gateway_keeps_serving(
    tmp_path: Path,
) -> None:
    async with edge_gateway(tmp_path) as edge, edge.wire() as session, httpx.AsyncClient(
        base_url=edge.url, trust_env=False
    ) as http:
        assert (await session.initialize()).status_code == 200
        call = asyncio.create_task(session.call("loop", {"n": 20_000_000}))
        assert (await http.get("/healthz")).status_code == 200
        async with asyncio.timeout(10):
            answer = await call
        assert answer.json()["result"]["isError"] is True
        assert "more than 1000000 steps (templates.max_steps)" in result_text(answer)
        assert edge.gateway.catalog.renderer.offloaded == 1
        small = await session.call("loop", {"n": 3})
        assert result_text(small) == "xxx"
