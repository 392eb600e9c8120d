"""Self-registration: a backend announces itself in Nacos for as long as it runs.

The design we follow has servers connect themselves instead of an operator
listing them: a backend (or a sidecar in front of it) registers one
*ephemeral* instance of its service, the gateway's subscription on that
service sees it within milliseconds, and the instance goes away when the
process stops.  Ephemeral is the point: Nacos ties such an instance to the
client's connection, so a process that dies without deregistering (SIGKILL,
OOM, a lost host) still disappears once the connection drops, instead of
leaving a persistent instance that takes traffic forever.

Everything about talking to Nacos (address parsing, the login that fails
fast on wrong credentials, the gRPC probe that fails fast when Nacos is
down, the SDK client per namespace with explicit cache and log directories,
re-registration after a reconnect, error translation) is ``NacosSource``'s;
this module only adds the lifecycle around one instance:

- ``registered(...)`` is an async context manager: validated inputs, a
  registration when entered, a deregistration when left (also on error or
  cancellation).  If the deregistration itself fails it is logged, not
  raised: closing the connection right after makes Nacos drop the ephemeral
  instance anyway.
- ``run_until_signal(...)`` is what ``mcpgw register`` runs: it holds the
  registration until SIGTERM or SIGINT (or a given event), then deregisters
  and returns normally, so the process exits 0.

The default ``ip`` is the local address the host would use to reach Nacos
(no packet is sent): the address other Nacos clients, like the gateway,
can most likely reach; ``127.0.0.1`` when there is no route.  Behind NAT or
in a container with a published port, pass the reachable one explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import structlog

from registry.errors import McpgwError, SourceError
from remote.base import DEFAULT_GROUP, DEFAULT_NAMESPACE, ServiceKey
from remote.nacos import NacosSource

log = structlog.get_logger(__name__)

MAX_WEIGHT = 10000.0  # Nacos rejects instance weights outside 0..10000
LOOPBACK = "127.0.0.1"
_DISCARD_PORT = 9  # any port does: connecting a UDP socket only picks a route


class InvalidRegistration(McpgwError, ValueError):
    """A self-registration that cannot be sent as given (bad port, weight, metadata, ...)."""


def _frozen(metadata: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(metadata))


@dataclass(frozen=True, slots=True)
class SelfRegistration:
    """What to register, and where; checked when built.

    ``ip=None`` means the host's outward address (see the module docstring).
    ``state_dir`` holds the SDK's cache and logs; ``None`` uses a temporary
    directory removed on exit.
    """

    server_addr: str
    service: str
    port: int
    ip: str | None = None
    weight: float = 1.0
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    group: str = DEFAULT_GROUP
    namespace: str = DEFAULT_NAMESPACE
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    state_dir: Path | None = None
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise InvalidRegistration(
                f"cannot register service {self.service!r} with Nacos at {self.server_addr!r}: "
                f"{'; '.join(problems)}. Fix the arguments and try again."
            )
        object.__setattr__(self, "metadata", _frozen(self.metadata))

    @property
    def service_key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.group, self.service)


def _problems(spec: SelfRegistration) -> list[str]:
    problems = []
    if not spec.server_addr.strip():
        problems.append("the Nacos address is empty (give host:port, e.g. 127.0.0.1:8848)")
    if not spec.service.strip():
        problems.append("the service name is empty")
    if not spec.group.strip():
        problems.append("the group is empty")
    if not spec.namespace.strip():
        problems.append("the namespace is empty")
    if isinstance(spec.port, bool) or not isinstance(spec.port, int) or not 1 <= spec.port <= 65535:
        problems.append(f"port {spec.port!r} is not an integer in 1-65535")
    if spec.ip is not None and (not spec.ip.strip() or any(c.isspace() for c in spec.ip)):
        problems.append(f"ip {spec.ip!r} is not an address")
    if not (isinstance(spec.weight, int | float) and math.isfinite(spec.weight) and 0 <= spec.weight <= MAX_WEIGHT):
        problems.append(f"weight {spec.weight!r} is not a number in 0-{MAX_WEIGHT:g}")
    for key, value in spec.metadata.items():
        if not isinstance(key, str) or not key.strip() or not isinstance(value, str):
            problems.append(f"metadata entry {key!r} must map a non-empty text key to a text value")
    if bool(spec.username) != bool(spec.password):
        problems.append("give both a username and a password, or neither")
    if not spec.connect_timeout > 0:
        problems.append(f"connect timeout {spec.connect_timeout!r} is not a positive number of seconds")
    return problems


def parse_metadata(items: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; the value may itself contain ``=``; a repeated key is an error."""
    parsed: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise InvalidRegistration(f"metadata {item!r} is not key=value: write it as --metadata version=1.2")
        if key in parsed:
            raise InvalidRegistration(f"metadata key {key!r} is given twice: keep one --metadata {key}=...")
        parsed[key] = value
    return parsed


@dataclass(frozen=True, slots=True)
class RegisteredInstance:
    """The instance as registered: what a test or a log line needs to find it in Nacos."""

    server_addr: str
    service: ServiceKey
    ip: str
    port: int
    weight: float
    metadata: Mapping[str, str]

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def __str__(self) -> str:
        return f"{self.address} in service {self.service} at Nacos {self.server_addr}"


def outward_ip(towards: str) -> str:
    """The local address used to reach ``towards`` (a host name or IP); ``127.0.0.1`` if there is no route.

    Connecting a UDP socket sends nothing; it only asks the kernel for a route.
    Blocking (it may resolve a name): call it off the event loop.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((towards, _DISCARD_PORT))
            address: str = probe.getsockname()[0]
    except OSError:
        return LOOPBACK
    return address if address and address != "0.0.0.0" else LOOPBACK


def _nacos_host(server_addr: str) -> str:
    first = server_addr.split(",")[0].strip().removeprefix("http://").removeprefix("https://")
    return first.rsplit(":", 1)[0] if first.count(":") == 1 else first


@contextlib.contextmanager
def _state_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="mcpgw-register-", ignore_cleanup_errors=True) as temporary:
        yield Path(temporary)


@contextlib.asynccontextmanager
async def hold(registration: SelfRegistration) -> AsyncIterator[RegisteredInstance]:
    """Register ``registration`` as an ephemeral instance for the duration of the block.

    Raises ``SourceUnavailable`` (Nacos unreachable), ``SourceAuthError``
    (wrong credentials, no permission) or ``SourceError`` (refused) before
    the block runs; never leaves a connection or a task behind.
    """
    ip = registration.ip
    if ip is None:
        ip = await asyncio.to_thread(outward_ip, _nacos_host(registration.server_addr))
    with _state_dir(registration.state_dir) as state_dir:
        source = NacosSource(
            registration.server_addr,
            namespace=registration.namespace,
            username=registration.username,
            password=registration.password,
            cache_dir=state_dir / "nacos-cache",
            log_dir=state_dir / "logs",
            connect_timeout=registration.connect_timeout,
        )
        await source.start()
        try:
            key = registration.service_key
            await source.register_instance(
                key, ip, registration.port, registration.weight, dict(registration.metadata), ephemeral=True
            )
            instance = RegisteredInstance(
                registration.server_addr, key, ip, registration.port, registration.weight, registration.metadata
            )
            log.info("registration.registered", service=str(key), address=instance.address,
                     weight=registration.weight, metadata_keys=sorted(registration.metadata))
            try:
                yield instance
            finally:
                await _deregister(source, instance, registration.connect_timeout)
        finally:
            await source.stop()


async def _deregister(source: NacosSource, instance: RegisteredInstance, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            await source.deregister_instance(instance.service, instance.ip, instance.port, ephemeral=True)
    except (SourceError, TimeoutError) as exc:
        # Closing the connection (next) makes Nacos drop the ephemeral instance all the same.
        log.warning("registration.deregister_failed", service=str(instance.service), address=instance.address,
                    error=str(exc) or "timed out")
        return
    log.info("registration.deregistered", service=str(instance.service), address=instance.address)


def registered(
    server_addr: str,
    *,
    service: str,
    port: int,
    ip: str | None = None,
    weight: float = 1.0,
    metadata: Mapping[str, str] | None = None,
    group: str = DEFAULT_GROUP,
    namespace: str = DEFAULT_NAMESPACE,
    username: str | None = None,
    password: str | None = None,
    state_dir: Path | None = None,
    connect_timeout: float = 5.0,
) -> contextlib.AbstractAsyncContextManager[RegisteredInstance]:
    """``async with registered("127.0.0.1:8848", service="weather-api", port=8000) as instance: ...``

    Raises ``InvalidRegistration`` at once for bad arguments; see ``hold`` for the rest.
    """
    return hold(
        SelfRegistration(
            server_addr, service, port, ip=ip, weight=weight, metadata=metadata or {}, group=group,
            namespace=namespace, username=username, password=password, state_dir=state_dir,
            connect_timeout=connect_timeout,
        )
    )


async def run_until_signal(
    registration: SelfRegistration,
    *,
    on_registered: Callable[[RegisteredInstance], None] | None = None,
    on_deregistered: Callable[[RegisteredInstance], None] | None = None,
    stop: asyncio.Event | None = None,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> RegisteredInstance:
    """Hold the registration until one of ``signals`` arrives (or ``stop`` is set), then deregister.

    The handlers are installed before registering, so a signal during
    start-up also ends in a clean deregistration, and the previous handlers
    are restored afterwards.  Must run in the main thread's event loop.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with hold(registration) as instance:
            if on_registered is not None:
                on_registered(instance)
            await stop.wait()
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)
    if on_deregistered is not None:
        on_deregistered(instance)
    return instance
