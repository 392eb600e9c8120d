"""HTTP/1.1 connection limits (gateway.http_protocol), with raw sockets: what a hostile client can hold open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.http_protocol import HttpLimits, LimitedHttpToolsProtocol, limited_protocol
from mcpgw.gateway.settings import HttpSettings, Settings
from tests.gateway import listening_socket

REQUEST = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@contextlib.asynccontextmanager
async def serving_limited(limits: HttpLimits) -> AsyncIterator[int]:
    sock = listening_socket()
    app = Starlette(routes=[Route("/", hello)])
    config = uvicorn.Config(app, lifespan="off", log_level="warning", http=limited_protocol(limits),
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


async def exchange(port: int, *chunks: bytes) -> bytes:
    """Send ``chunks`` (ignoring a connection the server already closed) and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_request_header_over_the_limit_is_refused_with_431_and_the_connection_closed() -> None:
    async with serving_limited(HttpLimits()) as port:
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"larger than 65536 bytes (gateway http settings)" in answer


async def test_an_eight_mib_header_is_cut_off_long_before_it_is_all_read() -> None:
    async with serving_limited(HttpLimits()) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = 0
        try:
            async with asyncio.timeout(10):
                writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: ")
                while sent < 8 * 1024 * 1024:
                    writer.write(b"a" * 65536)
                    await writer.drain()
                    sent += 65536
        except ConnectionError:
            pass  # the gateway closed the connection: what it refused, it did not keep
        finally:
            writer.close()
        assert sent < 8 * 1024 * 1024
        assert (await exchange(port, REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))).startswith(
            b"HTTP/1.1 200 ")


async def test_many_small_headers_over_the_byte_limit_are_refused_with_431() -> None:
    async with serving_limited(HttpLimits(max_header_bytes=2048, max_headers=1000)) as port:
        fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 40) for i in range(100))
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: gw\r\n" + fields + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_more_header_fields_than_the_limit_are_refused_with_431() -> None:
    async with serving_limited(HttpLimits(max_headers=20)) as port:
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(21))
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: gw\r\n" + fields + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 ") and b"more than 20 header fields" in answer
        eighteen = b"".join(b"X-F%d: v\r\n" % i for i in range(18))
        fine = await exchange(port, b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n" + eighteen + b"\r\n")
    assert fine.startswith(b"HTTP/1.1 200 ")


async def test_a_head_that_never_completes_is_answered_408_and_closed() -> None:
    async with serving_limited(HttpLimits(header_timeout=0.2)) as port:
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: gw\r\nX-Slow: a")
    assert answer.startswith(b"HTTP/1.1 408 ") and b"no complete request head within 0.2 s" in answer


async def test_a_connection_that_never_sends_anything_is_closed_at_the_header_timeout() -> None:
    async with serving_limited(HttpLimits(header_timeout=0.2)) as port:
        answer = await exchange(port)
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() -> None:
    async with serving_limited(HttpLimits(keep_alive_timeout=0.2, header_timeout=60)) as port:
        answer = await exchange(port, REQUEST)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"hello")


async def test_requests_within_the_limits_share_a_kept_alive_connection() -> None:
    async with serving_limited(HttpLimits(keep_alive_timeout=0.2)) as port:
        answer = await exchange(port, REQUEST + REQUEST)
    assert answer.count(b"HTTP/1.1 200 ") == 2


def test_the_gateway_serves_with_the_limits_of_its_http_settings() -> None:
    gateway = Gateway(Settings(http=HttpSettings(max_header_bytes=4096, max_headers=7, header_timeout=3,
                                                 keep_alive_timeout=4)))
    config = gateway.uvicorn_config(host="127.0.0.1", port=0)
    protocol = config.http
    assert isinstance(protocol, type) and issubclass(protocol, LimitedHttpToolsProtocol)
    assert protocol.limits == HttpLimits(4096, 7, 3.0, 4.0)
