"""What one render may spend: steps, output and time.

A template is configuration, but the data it walks is not: a tool's
arguments come from any MCP client and a response template walks whatever
the backend answered.  ``{{ range .args.n }}`` with ``n = 20000000``, or
``{{ repeat 200000000 "x" }}``, would otherwise run for seconds inside the
event loop and allocate hundreds of megabytes.  So every render carries a
``Budget``:

- **steps**: one per ``range`` iteration and per function call, plus the
  size of the lists, maps and long strings functions return (building them
  is work proportional to their size);
- **output**: the characters written, and the size of every string, list or
  map a function builds (so a value cannot grow past the limit unseen, and
  ``list $x $x`` nested twenty times is refused instead of serialized);
- **time**: a deadline, checked every ``CLOCK_EVERY`` steps.

A render in *inline* mode (the gateway's first try, on the event loop) also
stops at a small allowance and raises ``RenderOffload``, so that the caller
can run it again in a worker thread with the full budget: small templates
never leave the loop, big ones never stall it.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass

CLOCK_EVERY = 1024
"""Steps between two looks at the clock."""

INLINE_STEPS = 20_000
"""Steps a render may take on the event loop before it is moved to a worker thread."""

INLINE_OUTPUT = 256 * 1024
"""Characters a render may build on the event loop before it is moved to a worker thread."""

_CHARGE_STRINGS_FROM = 4096
"""Function results shorter than this are one step; longer ones cost a step per 64 characters."""


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """The budget of one render; the gateway's ``templates`` settings."""

    max_steps: int = 1_000_000
    max_output_bytes: int = 16 * 1024 * 1024
    max_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_output_bytes < 1 or not self.max_seconds > 0:
            raise ValueError("render limits must be positive")


DEFAULT_LIMITS = RenderLimits()


class RenderOffload(Exception):
    """An inline render outgrew its allowance: run it again off the event loop (``render_limits(inline=False)``)."""


class BudgetExceeded(Exception):
    """A render went over one of its limits; the message names the limit and its setting."""


_ACTIVE: contextvars.ContextVar[tuple[RenderLimits, bool]] = contextvars.ContextVar(
    "mcpgw_render_limits", default=(DEFAULT_LIMITS, False)
)


@contextlib.contextmanager
def render_limits(limits: RenderLimits, *, inline: bool = False) -> Iterator[None]:
    """Renders inside the block use ``limits``; ``inline`` ones raise ``RenderOffload`` past the allowance."""
    token = _ACTIVE.set((limits, inline))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class Budget:
    """The running counters of one render (kept on its ``State``)."""

    __slots__ = ("check_at", "deadline", "inline", "limits", "max_size", "next_clock", "size", "steps")

    def __init__(self) -> None:
        limits, inline = self.limits, self.inline = _ACTIVE.get()
        self.steps = 0
        self.size = 0
        self.deadline = time.perf_counter() + limits.max_seconds
        self.next_clock = CLOCK_EVERY
        if inline:
            self.max_size = min(limits.max_output_bytes, INLINE_OUTPUT)
            self.check_at = min(CLOCK_EVERY, limits.max_steps)
        else:
            self.max_size = limits.max_output_bytes
            self.check_at = CLOCK_EVERY if limits.max_steps > CLOCK_EVERY else limits.max_steps

    def _next_check(self) -> int:
        cap = min(self.limits.max_steps, INLINE_STEPS) if self.inline else self.limits.max_steps
        return min(self.next_clock, cap)

    def checkpoint(self) -> None:
        """Called once ``steps`` passed ``check_at``: enforce the step limit, the allowance and the clock."""
        if self.inline and self.steps > INLINE_STEPS:
            raise RenderOffload
        if self.steps > self.limits.max_steps:
            raise BudgetExceeded(
                f"the render took more than {self.limits.max_steps} steps (templates.max_steps); "
                "the template loops over too much data"
            )
        if self.steps >= self.next_clock:
            self.next_clock = self.steps + CLOCK_EVERY
            if time.perf_counter() > self.deadline:
                raise BudgetExceeded(
                    f"the render ran longer than {self.limits.max_seconds:g} s (templates.max_seconds)"
                )
        self.check_at = self._next_check()

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > self.check_at:
            self.checkpoint()

    def room(self, size: int) -> None:
        """Refuse a value or an output of ``size`` characters before it is built."""
        if size > self.max_size:
            if self.inline and size <= self.limits.max_output_bytes:
                raise RenderOffload
            raise BudgetExceeded(
                f"the render would produce more than {self.limits.max_output_bytes} bytes "
                "(templates.max_output_bytes)"
            )

    def wrote(self, size: int) -> None:
        self.size += size
        if self.size > self.max_size:
            self.room(self.size)

    def result(self, value: object) -> None:
        """Account for a value a function returned."""
        kind = type(value)
        if kind is str:
            length = len(value)  # type: ignore[arg-type]
            if length >= _CHARGE_STRINGS_FROM:
                self.room(length)
                self.charge(length >> 6)
        elif kind is list or kind is dict:
            self.charge(len(value))  # type: ignore[arg-type]

    def finish(self, text: str) -> None:
        """The output in UTF-8 may be up to four times its characters: measure it when that matters."""
        if self.size * 4 > self.limits.max_output_bytes and len(text.encode()) > self.limits.max_output_bytes:
            raise BudgetExceeded(
                f"the render produced more than {self.limits.max_output_bytes} bytes (templates.max_output_bytes)"
            )


def size_of(value: object, limit: int) -> tuple[int, int]:
    """Characters and nodes of a JSON-like value, and how many nodes were walked to count them.

    Counting stops as soon as the size is over ``limit``, so a value shared many times over
    (``list $x $x`` nested) costs no more to refuse than ``limit`` nodes, however big it really is.
    """
    total = 0
    walked = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        walked += 1
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += 1
            for key, child in item.items():
                total += len(key) if isinstance(key, str) else 1
                stack.append(child)
        elif isinstance(item, list | tuple):
            total += 1
            stack.extend(item)
        else:
            total += 1
    return total, walked


def measure(value: object, budget: Budget) -> int:
    """The size of a value a function is about to build from ``value``, its walk charged as steps;
    refused (``BudgetExceeded``) once it is over the output budget."""
    total, walked = size_of(value, budget.max_size)
    budget.charge(walked)
    if total > budget.max_size:
        budget.room(total)
    return total
