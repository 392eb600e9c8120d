"""Fuzz: argument values built to escape the configured destination, sent through a running gateway (issue 11, item 8).

The victim server's tools put arguments into their url in every way a spec
can (the whole url, after a written-out port, after a written-out host, a
path placeholder, a rendered path segment); the values are made of what
URL parsers disagree on (``@``, ``//``, ``\\``, ``#``, ``%``, ``..``, ``[``,
white space, line breaks) and of the trap hosts' addresses.  Whatever the
value: the client gets a result (a tool error at worst, never a JSON-RPC
error), the traps on 127.0.0.2 and 127.0.0.3 receive nothing, and every
request that reaches the backend was addressed to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hostile import StageOnItsOwnLoop
from tests.support.mcp_wire import McpWire

MAX_EXAMPLES = 300
TOOLS = ["url_from_arg", "path_after_port", "host_suffix", "item", "echo"]
TOKENS = [*"@:/\\?#%.[] \t\r\n", "TRAP2", "TRAP3", "//", "http://", "https://", "%2F", "%40", "..", "é", "a", "x.com"]


class Attacker(StageOnItsOwnLoop):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.wire: McpWire = self.run(self.stage.wire("/mcp/victim").open())

    def value(self, tokens: list[str]) -> str:
        port = self.stage.trap_port
        return "".join(tokens).replace("TRAP2", f"127.0.0.2:{port}").replace("TRAP3", f"127.0.0.3:{port}")


@pytest.fixture
def attacker(tmp_path: Path) -> Iterator[Attacker]:
    running = Attacker(tmp_path)
    try:
        yield running
    finally:
        running.close()


@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tool=st.sampled_from(TOOLS), tokens=st.lists(st.sampled_from(TOKENS), max_size=10))
def test_no_argument_value_takes_a_call_or_its_credential_anywhere_but_the_configured_backend(
    attacker: Attacker, tool: str, tokens: list[str]
) -> None:
    value = attacker.value(tokens)
    before = len(attacker.stage.backend.requests)
    arguments: dict[str, Any] = {"u": value, "p": value, "h": value, "id": value}

    envelope = attacker.run(attacker.wire.call(tool, arguments))

    assert "result" in envelope, f"{tool}({value!r}) answered a JSON-RPC error: {envelope}"
    assert attacker.stage.traps.requests == []
    backend = f"127.0.0.1:{attacker.stage.backend_port}"
    assert all(r["headers"]["host"] == backend for r in attacker.stage.backend.requests[before:])
