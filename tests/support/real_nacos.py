"""A real Nacos 3 server for the test suite, started through ``deploy/nacos/run.sh``.

The protocol double (``nacos_double.py``) was written by the same hands as the
code it tests, so it shares their blind spots; every Nacos test therefore also
runs against the real server.  The suite starts it once per session on free
ports, with its data in a directory of its own, and keeps that directory across
``restart()`` (stored configs survive, as they do in a production Nacos; the
ephemeral instances do not, and their clients register them again).

Where it comes from: ``run.sh`` builds a small Maven project once (Maven
Central's ``io.github.pig-mesh.nacos`` server modules) and caches it.  When the
build cannot run (no Maven, Maven Central out of reach) the tests that need the
server are skipped with that reason; ``MCPGW_REAL_NACOS=0`` skips them on
purpose (also with the reason), and ``NACOS_ADDR`` points them at a server
someone else runs (no restarts there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_SH = REPO_ROOT / "deploy" / "nacos" / "run.sh"
VERSION = "3.1.0-bugfix"
"""The Nacos release ``deploy/nacos/pom.xml`` builds."""
PASSWORD = "mcpgw-test-password"
START_BOUND = 240.0
"""A first start on a new machine includes the Maven download; later ones take about 10 s."""
BUILD_BOUND = 900.0

_READY = "mcpgw-nacos: ready "
_DEFAULT_JAVA_OPTS = "-Xms256m -Xmx768m"
"""run.sh's default heap, kept when properties are added to the JVM options."""


class NacosUnavailable(Exception):
    """The real Nacos cannot be built or started here; the message says why."""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_nacos_port() -> int:
    """An HTTP port whose companions (gRPC +1000 and +1001, console +2000) are free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port > 62000:
            continue
        if all(_port_free(p) for p in (port, port + 1000, port + 1001, port + 2000)):
            return port
    raise NacosUnavailable("no free set of ports for Nacos (HTTP, gRPC +1000/+1001, console +2000)")


def build() -> None:
    """Build the server once (cached by run.sh); raise ``NacosUnavailable`` with run.sh's reason."""
    try:
        done = subprocess.run(
            ["bash", str(RUN_SH), "--build"], capture_output=True, text=True, timeout=BUILD_BOUND, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NacosUnavailable(f"building the real Nacos took over {BUILD_BOUND:.0f} s") from exc
    if done.returncode != 0:
        reason = " ".join(done.stderr.strip().splitlines()[-3:]) or f"run.sh --build exited {done.returncode}"
        raise NacosUnavailable(reason)


class RealNacos:
    """One Nacos process at a fixed set of ports and a data directory kept across restarts."""

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        ai_enabled: bool = True,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """``properties`` are Nacos settings (``application.properties`` keys) given as JVM system properties."""
        self.home = home
        self.port = port if port is not None else free_nacos_port()
        self.ai_enabled = ai_enabled
        self.properties = dict(properties or {})
        self.username = "nacos"
        self.password = PASSWORD
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._output: list[str] = []

    @property
    def server_addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, within: float = START_BOUND) -> None:
        """Start and return once run.sh says the server is ready (API up, admin password set)."""
        if self.running:
            return
        env = {
            **os.environ,
            "NACOS_HOME": str(self.home),
            "NACOS_PASSWORD": self.password,
            "NACOS_AI_ENABLED": "true" if self.ai_enabled else "false",
        }
        if self.properties:
            options = [f"-D{key}={value}" for key, value in sorted(self.properties.items())]
            env["NACOS_JAVA_OPTS"] = " ".join([env.get("NACOS_JAVA_OPTS") or _DEFAULT_JAVA_OPTS, *options])
        self._output = []
        process = subprocess.Popen(
            ["bash", str(RUN_SH), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # a Ctrl-C of pytest must not reach Nacos before the fixture stops it
        )
        self._process = process
        ready = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self._output.append(line.rstrip())
                if line.startswith(_READY):
                    ready.set()
            ready.set()  # the process ended: start() looks at why

        self._reader = threading.Thread(target=read, name=f"nacos-{self.port}-stdout", daemon=True)
        self._reader.start()
        if not ready.wait(within) or not self.running:
            tail = "\n".join(self._output[-20:])
            self.stop()
            raise NacosUnavailable(f"Nacos on port {self.port} did not become ready within {within:.0f} s:\n{tail}")

    def stop(self) -> None:
        """SIGTERM and wait: run.sh stops the JVM, which closes its contexts and ports."""
        process, self._process = self._process, None
        reader, self._reader = self._reader, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if reader is not None:
            reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def output(self) -> list[str]:
        return list(self._output)


@contextlib.contextmanager
def running_nacos(home: Path, *, ai_enabled: bool = True) -> Iterator[RealNacos]:
    build()
    nacos = RealNacos(home, ai_enabled=ai_enabled)
    nacos.start()
    try:
        yield nacos
    finally:
        nacos.stop()
