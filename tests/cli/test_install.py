"""mcpgw as a user installs it: a wheel built from this checkout, installed into a fresh venv outside it.

The wheel is built by pip (``pip wheel .``, with build isolation, as ``pip install .`` would) and installed
without its dependencies into a new venv that borrows this venv's installed packages through a ``.pth`` line
(so the test needs no download beyond the build backend). Run from a folder outside the checkout, the
installed ``mcpgw`` must import from the new venv only, ship its demo tree and console, add no other
top-level package, and ``mcpgw serve`` must serve the demo: a tool call answered by the demo backend.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from mcp.client import Client

import mcpgw
from tests.gateway import text

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(CHECKOUT)],
                   check=True, cwd=root, timeout=600)
    [wheel] = wheels.glob("mcpgw-*.whl")
    target = root / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # This venv's dependencies, but not its editable mcpgw: .pth files on a borrowed path are not run.
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, cwd=root, timeout=300)
    return target


def run(venv_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv_dir / "bin" / args[0]), *args[1:]], capture_output=True, text=True,
                          cwd=venv_dir.parent, timeout=60, check=False)


def test_the_installed_package_is_one_top_level_mcpgw_with_its_data(installed: Path) -> None:
    version = run(installed, "mcpgw", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"mcpgw {mcpgw.__version__}"
    module = run(installed, "python", "-m", "mcpgw", "--version")
    assert module.returncode == 0 and module.stdout.strip() == f"mcpgw {mcpgw.__version__}"
    probe = run(installed, "python", "-c",
                "import mcpgw, mcpgw.gateway.app, mcpgw.gateway.settings as s, importlib.util as u;"
                "print(mcpgw.__file__); print(s.DEMO_TREE); print(u.find_spec('gateway'), u.find_spec('adapter'))")
    assert probe.returncode == 0, probe.stderr
    package_file, demo_tree, bare = probe.stdout.splitlines()
    assert package_file.startswith(str(installed)) and not package_file.startswith(str(CHECKOUT))
    assert Path(demo_tree).is_relative_to(installed) and (Path(demo_tree) / "config/public").is_dir()
    assert bare == "None None"
    site = Path(package_file).parent.parent
    assert (site / "mcpgw/gateway/console/index.html").is_file()
    assert (site / "mcpgw/py.typed").is_file()
    assert not any((site / name).exists() for name in ("adapter", "gateway", "registry", "remote", "converter"))
    license_files = list(site.glob("mcpgw-*.dist-info/licenses/LICENSE"))
    assert license_files, "the wheel carries no LICENSE"
    validate = run(installed, "mcpgw", "validate", demo_tree)
    assert validate.returncode == 0, validate.stdout + validate.stderr


async def test_mcpgw_serve_from_the_installed_package_serves_the_demo_end_to_end(installed: Path) -> None:
    env = {**os.environ, "MCPGW_PORT": "0", "MCPGW_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        str(installed / "bin" / "mcpgw"), "serve", cwd=installed.parent, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        url = ""
        async with asyncio.timeout(30):
            while not url:
                line = (await process.stdout.readline()).decode()
                assert line, f"mcpgw serve ended: {(await process.stderr.read()).decode()}" if process.stderr else ""
                found = re.search(r'"url": "(http://[^"]+)".*gateway.listening', line)
                url = found.group(1) if found else ""
        async with asyncio.timeout(20), Client(url, mode="legacy", cache=None) as session:
            names = {tool.name for tool in (await session.list_tools()).tools}
            assert {"weather_get_forecast", "gateway-info_greet"} <= names
            forecast = await session.call_tool("weather_get_forecast", {"city": "Hangzhou", "days": 2})
            assert forecast.is_error is not True and "Hangzhou" in text(forecast)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await process.wait()
    assert process.returncode == 0
