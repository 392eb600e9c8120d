"""HTTP/1.1 connection limits uvicorn does not have: header size and count, a header read timeout.

uvicorn with httptools accepts a request head of any size (an 8 MiB header
was taken), waits forever for a head that trickles in a byte at a time
(slowloris), and lets a connection that never sends anything stay open
forever: its keep-alive timer starts only after a first response.  Envoy
and nginx bound all three, and so does this thin subclass of uvicorn's
httptools protocol, built by ``limited_protocol(limits)`` and given to
``uvicorn.Config(http=...)``:

- the request line and headers together may be ``max_header_bytes``, and at
  most ``max_headers`` fields: past either, ``431 Request Header Fields Too
  Large`` and the connection closes;
- a head must be complete within ``header_timeout`` seconds of the
  connection opening, or of its first byte on a kept-alive connection:
  else ``408 Request Timeout`` and the connection closes;
- an idle kept-alive connection closes after ``keep_alive_timeout`` seconds
  (uvicorn's own timer, given our setting).

Bodies are not this layer's business: each endpoint bounds its own (the MCP
edge, the connect API).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = structlog.get_logger("mcpgw.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keep_alive_timeout: float = 15.0


class _HeadRefused(Exception):
    """Raised from a parser callback: the head broke a limit (the protocol answers 431)."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``limits`` (set on the subclass ``limited_protocol`` makes)."""

    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_fields = 0
        self._head_size = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: str | None = None

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._awaiting_head:
            if self._head_timer is None:
                self._start_head_timer()
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(431, self._refusal)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Bytes still short of a complete head: they all belong to it.
        if self._awaiting_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"the request head is larger than {self.limits.max_header_bytes} bytes")

    # -- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_fields = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)
        if self._head_size > self.limits.max_header_bytes:
            self._refusal = f"the request line is longer than {self.limits.max_header_bytes} bytes"
            raise _HeadRefused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.limits.max_headers:
            self._refusal = f"the request has more than {self.limits.max_headers} header fields"
            raise _HeadRefused
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_header_bytes:
            self._refusal = f"the request head is larger than {self.limits.max_header_bytes} bytes"
            raise _HeadRefused

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True
        self._head_bytes = 0

    # -- refusals --------------------------------------------------------------------------------

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a response is on its way: close after it
            return
        self._refuse(408, f"no complete request head within {self.limits.header_timeout:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        log.info("http.refused", status=status, reason=reason, client=self.client[0] if self.client else None)
        body = f"{reason} (gateway http settings)\n".encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend([b"content-type: text/plain; charset=utf-8\r\n",
                     b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                     b"connection: close\r\n\r\n", body])
        self.transport.write(b"".join(head))
        self.transport.close()


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
