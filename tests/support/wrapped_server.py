"""An MCP server registered with nacos-mcp-wrapper-python, written as the wrapper's README shows.

Runs in the wrapper's own virtual environment (mcp 1.x; see ``mcp_wrapper.py``),
never imported by the suite.  Usage::

    python wrapped_server.py NAME VERSION TRANSPORT PORT LABEL

``TRANSPORT`` is ``streamable-http`` or ``sse``; Nacos comes from the wrapper's
own settings, the ``NACOS_MCP_SERVER_*`` environment variables.  Tools: ``add``
and ``whoami`` (answers ``LABEL``, so a test can tell the processes apart).

The wrapper logs a failed registration and serves anyway, which a test would
only see as a timeout: that log record ends this process with status 3, and
the record's text is the reason the test shows.
"""

from __future__ import annotations

import logging
import os
import sys

from nacos_mcp_wrapper.server.nacos_mcp import NacosMCP
from nacos_mcp_wrapper.server.nacos_settings import NacosSettings

REGISTRATION_FAILED = 3


class _ExitOnFailedRegistration(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and "register" in record.getMessage().lower():
            print(f"wrapped-server: registration failed: {record.getMessage()}", file=sys.stderr, flush=True)
            os._exit(REGISTRATION_FAILED)


def main() -> None:
    name, version, transport, port, label = sys.argv[1:6]
    logging.getLogger("nacos_mcp_wrapper").addHandler(_ExitOnFailedRegistration())
    server = NacosMCP(
        name,
        nacos_settings=NacosSettings(),
        version=version,
        instructions=f"{name}, registered by nacos-mcp-wrapper-python",
        host="127.0.0.1",
        port=int(port),
    )

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers"""
        return a + b

    @server.tool()
    def whoami() -> str:
        """Which process answered"""
        return label

    server.run(transport=transport)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
