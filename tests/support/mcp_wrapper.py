"""nacos-mcp-wrapper-python, the official library with which an MCP server registers itself in Nacos, run for real.

Why a virtual environment of its own: nacos-mcp-wrapper-python 1.1 requires
``mcp<2`` (and pins ``pydantic==2.11.3``, ``anyio==4.9.0``,
``uvicorn==0.34.2``), while mcpgw requires ``mcp>=2.3``, so the two cannot be
installed side by side and it is not in the ``dev`` extra.  The suite builds
the wrapper's environment once with pip from PyPI (``WRAPPER_REQUIREMENT``),
caches it under ``.cache/nacos-mcp-wrapper/`` in the repository (keyed by the
requirement; a half-built one is rebuilt) and runs the wrapped server
(``wrapped_server.py``) in it as a process of its own, as its user would.
``MCPGW_WRAPPER_PYTHON`` names a ready interpreter instead.  Where the
environment cannot be built (PyPI out of reach) the tests that need it are
skipped with pip's reason, never silently.

The wrapped process gets a ``HOME`` of its own: the wrapper gives no setting
for nacos-sdk-python's cache and log directories, which default to ``~``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from tests.support.nacos_target import NacosTarget

WRAPPER_REQUIREMENT = "nacos-mcp-wrapper-python>=1.1.0,<1.2"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "nacos-mcp-wrapper"
SERVER_SCRIPT = Path(__file__).with_name("wrapped_server.py")
INSTALL_BOUND = 600.0
STOP_BOUND = 10.0

WrapperTransport = Literal["streamable-http", "sse"]
_T = TypeVar("_T")


class WrapperUnavailable(Exception):
    """The wrapper's environment cannot be built here; the message says why."""


def wrapper_python() -> Path:
    """The interpreter of the wrapper's environment, built once; raises ``WrapperUnavailable`` with pip's reason."""
    given = os.environ.get("MCPGW_WRAPPER_PYTHON")
    if given:
        return Path(given)
    digest = hashlib.sha256(f"{WRAPPER_REQUIREMENT}|{sys.version_info[:2]}".encode()).hexdigest()[:12]
    home = CACHE / digest
    python, done = home / "bin" / "python", home / ".complete"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, whoever else runs the suite here
        if done.is_file():
            return python
        shutil.rmtree(home, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(home)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", WRAPPER_REQUIREMENT],
        ]
        for step in steps:
            try:
                finished = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_BOUND, check=False)
            except subprocess.TimeoutExpired as exc:
                raise WrapperUnavailable(f"installing {WRAPPER_REQUIREMENT} took over {INSTALL_BOUND:.0f} s") from exc
            if finished.returncode != 0:
                tail = " ".join((finished.stderr or finished.stdout).strip().splitlines()[-3:])
                raise WrapperUnavailable(f"cannot install {WRAPPER_REQUIREMENT} into {home}: {tail}")
        done.write_text(WRAPPER_REQUIREMENT + "\n")
    return python


def free_port() -> int:
    """A loopback port free now: the wrapper announces the port it is given, so it cannot take port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WrappedServer:
    """One running wrapped MCP server process."""

    name: str
    version: str
    transport: WrapperTransport
    port: int
    label: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def service(self) -> str:
        """The service the wrapper registers its instance in (group ``DEFAULT_GROUP``)."""
        return f"{self.name}::{self.version}"

    def output(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def alive_until(self, condition: Awaitable[_T]) -> _T:
        """Await ``condition`` (the caller bounds it); fail with the server's output if the process ends first."""
        waiting = asyncio.ensure_future(condition)
        exited = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        raise AssertionError(
            f"the wrapped server {self.name} exited with status {self.process.returncode}:\n{self.output()}"
        )

    async def stop(self) -> None:
        """SIGTERM, as a service manager stops it (the wrapper never deregisters: its connection ends)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_BOUND):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def wrapped_server(
    python: Path,
    nacos: NacosTarget,
    workdir: Path,
    *,
    name: str,
    transport: WrapperTransport,
    label: str,
    version: str = "1.0.0",
) -> AsyncIterator[WrappedServer]:
    """Start ``wrapped_server.py`` registering ``name`` in ``nacos``; stopped (SIGTERM) on leaving."""
    port = free_port()
    home = workdir / f"{label}-home"
    home.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{label}.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "NACOS_MCP_SERVER_SERVER_ADDR": nacos.server_addr,
        "NACOS_MCP_SERVER_SERVICE_IP": "127.0.0.1",
        "NACOS_MCP_SERVER_NAMESPACE": "public",
    }
    if nacos.username and nacos.password:
        env["NACOS_MCP_SERVER_USERNAME"] = nacos.username
        env["NACOS_MCP_SERVER_PASSWORD"] = nacos.password
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(python), str(SERVER_SCRIPT), name, version, transport, str(port), label,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=home,
        )
    server = WrappedServer(name, version, transport, port, label, process, log)
    try:
        yield server
    finally:
        await server.stop()
