"""The REST upstream client keeps the gateway's rules against a real loopback backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mcpgw.gateway.upstream_http import UpstreamHttp, UpstreamHttpError
from tests.gateway import listening_socket, serving

seen: list[dict[str, str]] = []


async def login(request: Request) -> Response:
    response = PlainTextResponse("welcome")
    response.set_cookie("session", "alice-secret")
    return response


async def echo(request: Request) -> Response:
    seen.append({"raw_path": request.scope["raw_path"].decode(), "cookie": request.headers.get("cookie", "")})
    return JSONResponse({"ok": True})


async def moved(request: Request) -> Response:
    return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)


async def big(request: Request) -> Response:
    return PlainTextResponse("x" * 5000)


BACKEND = Starlette(routes=[Route("/login", login), Route("/echo/{rest:path}", echo), Route("/moved", moved),
                            Route("/big", big)])


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    seen.clear()
    async with serving(BACKEND) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[UpstreamHttp]:
    client = UpstreamHttp(max_body=1000)
    yield client
    await client.close()


async def test_a_cookie_set_for_one_call_is_never_sent_with_the_next(backend: str, http: UpstreamHttp) -> None:
    status, headers, _ = await http.request("GET", backend + "/login", headers=(), body=None, timeout=5)
    assert status == 200 and "alice-secret" in headers["set-cookie"]

    await http.request("GET", backend + "/echo/x", headers=(), body=None, timeout=5)

    assert seen[-1]["cookie"] == ""


async def test_the_rendered_url_is_sent_as_is_without_requoting(backend: str, http: UpstreamHttp) -> None:
    await http.request("GET", backend + "/echo/a%2Fb%20c?q=1%2B1", headers=(), body=None, timeout=5)

    assert seen[-1]["raw_path"] == "/echo/a%2Fb%20c"


async def test_redirects_are_returned_not_followed(backend: str, http: UpstreamHttp) -> None:
    status, headers, _ = await http.request("GET", backend + "/moved", headers=(), body=None, timeout=5)

    assert status == 302
    assert headers["location"].startswith("http://169.254.169.254/")


async def test_a_body_larger_than_allowed_is_refused(backend: str, http: UpstreamHttp) -> None:
    with pytest.raises(UpstreamHttpError, match="more than the 1000 allowed") as caught:
        await http.request("GET", backend + "/big", headers=(), body=None, timeout=5)
    assert not caught.value.connect_failed


async def test_a_refused_connection_says_the_request_never_left(http: UpstreamHttp) -> None:
    closed = listening_socket()
    port = closed.getsockname()[1]
    closed.close()

    with pytest.raises(UpstreamHttpError) as caught:
        await http.request("GET", f"http://127.0.0.1:{port}/", headers=(), body=None, timeout=5)

    assert caught.value.connect_failed and not caught.value.timed_out


async def test_a_backend_that_does_not_answer_times_out_within_the_bound(http: UpstreamHttp) -> None:
    hang = asyncio.Event()

    async def stuck(request: Request) -> Response:
        await hang.wait()
        return PlainTextResponse("late")

    async with serving(Starlette(routes=[Route("/", stuck)])) as url:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamHttpError) as caught:
            await http.request("GET", url + "/", headers=(), body=None, timeout=0.3)
        elapsed = loop.time() - started
        hang.set()

    assert caught.value.timed_out and not caught.value.connect_failed
    assert elapsed < 2
