"""Template work off the event loop when it is big: the gateway's side of ``converter.template``'s budgets.

Every REST tool call renders a few templates (url, headers, body, response)
and parses the backend's answer.  Nearly always that is microseconds, and a
thread hop would cost more than the work; but a template looping over a
client's argument, or a response template walking a 10 MB answer, would hold
the event loop (and so every other client, ``/healthz`` included) for as
long as it runs.  So a render first runs inline with a small allowance
(``converter.template._budget.INLINE_STEPS`` / ``INLINE_OUTPUT``); if it
outgrows it, or its input is big from the start, it runs again in a small
worker pool with the full ``RenderLimits``.  Renders are pure, so running
one again is safe.  Inside the pool, Python switches threads every few
milliseconds, so a long render slows the loop down but does not stop it, and
the limits end it within ``max_seconds``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from mcpgw.converter.template import DEFAULT_LIMITS, RenderLimits, RenderOffload, render_limits, size_of

T = TypeVar("T")

INLINE_DATA = 64 * 1024
"""Data larger than this (an answer's bytes, or the characters of a call's arguments) is rendered off the loop."""

RENDER_WORKERS = 2
"""Threads for big renders; more would only contend for the interpreter."""


def larger_than(value: Any, limit: int) -> bool:
    """Whether JSON-like ``value`` holds more than ``limit`` characters and nodes (stops counting there)."""
    return size_of(value, limit)[0] > limit


class Renderer:
    """Runs functions that render templates: inline when small, in a worker thread when big."""

    def __init__(self, limits: RenderLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.offloaded = 0
        """Renders that ran in the worker pool (for tests and statistics)."""

    async def run(self, work: Callable[..., T], *args: Any, big: bool = False) -> T:
        """``work(*args)`` under the render limits; ``big``: skip the inline try (the input is known to be big)."""
        if not big:
            try:
                with render_limits(self.limits, inline=True):
                    return work(*args)
            except RenderOffload:
                pass
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(RENDER_WORKERS, thread_name_prefix="mcpgw-render")
        self.offloaded += 1
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._in_worker, work, args)

    def _in_worker(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        with render_limits(self.limits):
            return work(*args)

    def close(self) -> None:
        """Stop the pool; queued renders are dropped, running ones end within their time limit."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
