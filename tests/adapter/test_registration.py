"""Self-registration against the real nacos-sdk-python talking gRPC to the Nacos protocol double."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcpgw.adapter.registration import (
    InvalidRegistration,
    RegisteredInstance,
    SelfRegistration,
    parse_metadata,
    registered,
    run_until_signal,
)
from mcpgw.gateway.cli import main
from mcpgw.registry.errors import SourceAuthError, SourceUnavailable
from tests.support.nacos_double import NacosDouble

REPO = Path(__file__).resolve().parents[2]
GROUP = "mcp-endpoints"
SERVICE = "weather::1.0.0"


@pytest.fixture
async def double() -> AsyncIterator[NacosDouble]:
    async with NacosDouble() as running:
        yield running


def listed(double: NacosDouble, service: str = SERVICE, group: str = GROUP) -> list[dict[str, Any]]:
    return double.instances("public", group, service)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_registered_instance_is_ephemeral_with_its_weight_and_metadata_and_goes_on_exit(
    double: NacosDouble, tmp_path: Path
) -> None:
    async with registered(
        double.server_addr, service=SERVICE, group=GROUP, port=8000, weight=3.5,
        metadata={"protocol": "https", "version": "1.2"}, state_dir=tmp_path,
    ) as instance:
        [found] = listed(double)
        assert (found["ip"], found["port"], found["weight"]) == ("127.0.0.1", 8000, 3.5)
        assert found["ephemeral"] is True
        assert found["metadata"] == {"protocol": "https", "version": "1.2"}
        assert instance.address == "127.0.0.1:8000"
        assert str(instance.service) == f"public/{GROUP}/{SERVICE}"
    assert listed(double) == []


async def test_explicit_ip_is_registered_as_given(double: NacosDouble, tmp_path: Path) -> None:
    async with registered(double.server_addr, service=SERVICE, group=GROUP, port=8000, ip="10.1.2.3",
                          state_dir=tmp_path):
        assert [(i["ip"], i["port"]) for i in listed(double)] == [("10.1.2.3", 8000)]


async def test_an_error_inside_the_block_still_deregisters(double: NacosDouble, tmp_path: Path) -> None:
    seen_inside: list[int] = []

    async def crash() -> None:
        async with registered(double.server_addr, service=SERVICE, group=GROUP, port=8000, state_dir=tmp_path):
            seen_inside.append(len(listed(double)))
            raise RuntimeError("backend crashed")

    with pytest.raises(RuntimeError, match="backend crashed"):
        await crash()
    assert seen_inside == [1]
    assert listed(double) == []
    await double.wait_for(lambda: double.connection_count == 0)  # and no connection is left open


async def test_wrong_credentials_fail_clearly_without_the_password(double: NacosDouble, tmp_path: Path) -> None:
    double.require_auth("nacos", "right-password")
    with pytest.raises(SourceAuthError, match="rejected the credentials for user nacos") as caught:
        async with registered(double.server_addr, service=SERVICE, port=8000, username="nacos",
                              password="wrong-password", state_dir=tmp_path):
            pytest.fail("registered with wrong credentials")
    assert "wrong-password" not in str(caught.value)
    assert listed(double, group="DEFAULT_GROUP") == []


async def test_right_credentials_register(double: NacosDouble, tmp_path: Path) -> None:
    double.require_auth("nacos", "right-password")
    async with registered(double.server_addr, service=SERVICE, port=8000, username="nacos",
                          password="right-password", state_dir=tmp_path):
        assert len(listed(double, group="DEFAULT_GROUP")) == 1


async def test_unreachable_nacos_fails_fast_with_the_address(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    async with asyncio.timeout(5):
        with pytest.raises(SourceUnavailable, match=f"cannot reach Nacos at {address}"):
            async with registered(address, service=SERVICE, port=8000, connect_timeout=1, state_dir=tmp_path):
                pytest.fail("registered with nobody listening")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"port": 0}, "port 0 is not an integer in 1-65535"),
        ({"port": 65536}, "port 65536 is not an integer in 1-65535"),
        ({"weight": -1.0}, "weight -1.0 is not a number in 0-10000"),
        ({"weight": float("nan")}, "weight nan is not a number"),
        ({"weight": 10001.0}, "weight 10001.0 is not a number in 0-10000"),
        ({"service": " "}, "the service name is empty"),
        ({"ip": "10.0.0.1 10.0.0.2"}, "is not an address"),
        ({"metadata": {"": "x"}}, "metadata entry '' must map"),
        ({"username": "nacos"}, "give both a username and a password"),
    ],
)
def test_invalid_registration_is_rejected_before_contacting_nacos(changes: dict[str, Any], problem: str) -> None:
    arguments: dict[str, Any] = {"server_addr": "127.0.0.1:8848", "service": SERVICE, "port": 8000, **changes}
    with pytest.raises(InvalidRegistration, match="Fix the arguments") as caught:
        SelfRegistration(**arguments)
    assert problem in str(caught.value)


def test_metadata_is_parsed_from_key_value_pairs_and_bad_syntax_is_named() -> None:
    assert parse_metadata(["protocol=https", "query=a=b", "empty="]) == {
        "protocol": "https", "query": "a=b", "empty": ""}
    with pytest.raises(InvalidRegistration, match="'novalue' is not key=value"):
        parse_metadata(["novalue"])
    with pytest.raises(InvalidRegistration, match="'=x' is not key=value"):
        parse_metadata(["=x"])
    with pytest.raises(InvalidRegistration, match="key 'a' is given twice"):
        parse_metadata(["a=1", "a=2"])


async def test_run_until_signal_deregisters_when_stopped(double: NacosDouble, tmp_path: Path) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    def on_registered(instance: RegisteredInstance) -> None:
        seen.append(f"up {len(listed(double))}")
        stop.set()

    registration = SelfRegistration(double.server_addr, SERVICE, 8000, group=GROUP, state_dir=tmp_path)
    async with asyncio.timeout(10):
        instance = await run_until_signal(registration, on_registered=on_registered,
                                          on_deregistered=lambda i: seen.append(f"down {len(listed(double))}"),
                                          stop=stop)
    assert seen == ["up 1", "down 0"]
    assert instance.port == 8000


async def test_sigint_deregisters_and_restores_the_previous_handler(double: NacosDouble, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    registration = SelfRegistration(double.server_addr, SERVICE, 8000, group=GROUP, state_dir=tmp_path)
    async with asyncio.timeout(10):
        await run_until_signal(registration, on_registered=lambda _: os.kill(os.getpid(), signal.SIGINT))
    assert listed(double) == []
    assert signal.getsignal(signal.SIGINT) is before


async def test_cli_registers_until_sigterm_then_deregisters_and_exits_0(double: NacosDouble) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcpgw", "register", "--nacos", double.server_addr, "--service", SERVICE,
        "--group", GROUP, "--port", "9000", "--weight", "2", "--metadata", "protocol=https",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            first = (await process.stdout.readline()).decode()
            assert first.startswith(f"registered 127.0.0.1:9000 in service public/{GROUP}/{SERVICE}"), first
            [found] = listed(double)
            assert (found["weight"], found["metadata"], found["ephemeral"]) == (2.0, {"protocol": "https"}, True)
            process.send_signal(signal.SIGTERM)
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode() == f"deregistered 127.0.0.1:9000 from service public/{GROUP}/{SERVICE}\n"
    assert listed(double) == []


def test_cli_rejects_bad_arguments_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["register", "--nacos", "127.0.0.1:8848", "--service", SERVICE, "--port", "70000",
                 "--metadata", "version=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "port 70000 is not an integer in 1-65535" in err
    assert main(["register", "--nacos", "127.0.0.1:8848", "--service", SERVICE, "--port", "80",
                 "--metadata", "oops"]) == 2
    assert "'oops' is not key=value" in capsys.readouterr().err
