"""The ``mcpgw`` command: serve, validate, replay, state, register, publish.

Every failure a user can cause (a bad flag, an unreadable tree, a port in
use, an invalid spec) ends in one line on stderr and a non-zero exit, never
a stack trace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import structlog
import uvicorn

import mcpgw
from mcpgw.registry.errors import McpgwError

if TYPE_CHECKING:
    from mcpgw.adapter.publish_documents import LoadedDocument

# Exit codes, the same for every command (README "Exit codes").
EXIT_OK = 0
EXIT_INVALID = 1
"""Invalid input: a problem in a tree, file or document; a replay step that differs from its golden."""
EXIT_USAGE = 2
"""Wrong flags or settings: nothing was attempted."""
EXIT_TARGET = 3
"""Nacos or the gateway cannot be reached, or rejects the credentials (retrying later may help)."""
EXIT_BROKEN_PIPE = 141
"""The reader of the output went away (``| head``), as a shell reports a command SIGPIPE ended."""


class _LineLogger:
    """structlog's output, each line in one write to whatever ``sys.stdout`` is now.

    structlog's ``PrintLogger`` prints, which writes the line and its newline separately: with unbuffered
    output (``PYTHONUNBUFFERED``) the workers of ``serve --workers``, sharing one pipe, then interleave
    lines. One write of at most PIPE_BUF bytes is atomic.
    """

    _lock = threading.Lock()

    def __init__(self, *args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        with self._lock:
            sys.stdout.write(message + "\n")
            sys.stdout.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """structlog for our events and, through its ``ProcessorFormatter``, for every stdlib logger too
    (uvicorn, the Nacos SDK, the MCP SDK), all on stdout: with ``json`` each line is one JSON object, at every level."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Third-party request logs carry URLs with query strings (credentials may ride there) and are noisy.
    for noisy in ("httpx", "httpx2", "httpcore", "mcp", "watchfiles", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        logger_factory=_LineLogger,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Not cached: a cached module-level logger would keep whichever configuration it first met
        # (tests capture logs after the CLI configured them); an uncached call costs ~1 µs.
        cache_logger_on_first_use=False,
    )


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"mcpgw: error: {message}", file=sys.stderr)
    return code


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise McpgwError(f"port {port} on {host} is already in use; choose another with --port") from exc
            raise McpgwError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


# -- serve ---------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: ``_serve`` drains the gateway on SIGTERM first.

    uvicorn would stop accepting and wait for connections at once, then
    re-raise the signal after a clean stop (exit status 143).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


async def _serve(settings: Any) -> None:
    from mcpgw.gateway.app import WORKER_VARIABLE, Gateway, worker_identity
    from mcpgw.gateway.demo_backend import create_demo_backend

    gateway = Gateway(settings)
    await gateway.source.start()  # fail fast and clearly (unreadable tree, Nacos down, bad credentials)
    await gateway.source.stop()
    servers = []
    worker = worker_identity() if WORKER_VARIABLE in os.environ else None
    sockets = [_reuse_port_socket(settings.host, settings.port)] if worker is not None else None
    if settings.start_demo_backend and (worker is None or worker["index"] == 0):
        _check_port_free("127.0.0.1", 18081)
        servers.append(_Server(uvicorn.Config(create_demo_backend(), host="127.0.0.1", port=18081,
                                              log_level="warning", lifespan="off", log_config=None)))
    # log_config=None: uvicorn's loggers go through configure_logging's handler (JSON stays JSON).
    config = gateway.uvicorn_config(host=settings.host, port=settings.port, log_level="warning",
                                    timeout_graceful_shutdown=5, log_config=None)
    main = _Server(config)
    servers.append(main)
    log = structlog.get_logger("mcpgw")
    source = f"nacos {settings.nacos}" if settings.nacos else f"files {settings.files_root}"
    log.info("gateway.starting", source=source, url=f"http://{settings.host}:{settings.port}/mcp",
             demo_backend=settings.start_demo_backend)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stopping.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    tasks = [asyncio.create_task(s.serve(sockets=sockets if s is main else None)) for s in servers]
    stop = asyncio.create_task(stopping.wait())
    try:
        announced = asyncio.create_task(_announce_listening(main, log))
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        announced.cancel()
        if stop in done:
            log.info("gateway.stopping", signal=received[-1] if received else None,
                     drain_timeout_s=settings.drain_timeout, hint="a second signal stops at once")
            stopping.clear()
            draining = asyncio.create_task(gateway.drain())
            # A second signal cuts the drain short.
            await asyncio.wait([draining, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED)
            draining.cancel()
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stop.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)
    log.info("gateway.stopped")
    for task in tasks:
        exc = task.exception() if task.done() and not task.cancelled() else None
        if exc is not None:
            raise exc


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the port its parent reserved; the kernel spreads connections."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def _die_with_parent() -> None:
    """In a worker, before it runs: SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _worker_argv(argv: list[str]) -> list[str]:
    """``serve``'s own arguments without ``--workers`` and ``--port`` (the workers get the port from the parent)."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in ("--workers", "--port"):
            skip = True
            continue
        if token.startswith(("--workers=", "--port=")):
            continue
        out.append(token)
    return out


async def _supervise(settings: Any, workers: int, argv: list[str]) -> int:
    """Run ``workers`` gateway processes on one port (SO_REUSEPORT), restart any that dies, drain all on SIGTERM.

    The parent only reserves the port (bound, not listening, so it is never handed a connection) and gives
    every worker the same session secret: one generated here when none is configured, so that a session
    opened by one worker is accepted by all of them.
    """
    import secrets

    from mcpgw.gateway.app import WORKER_VARIABLE

    log = structlog.get_logger("mcpgw")
    reserved = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserved.bind((settings.host, settings.port))
    except OSError as exc:
        raise McpgwError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; choose another "
                         "with --port") from exc
    port = reserved.getsockname()[1]
    env = {**os.environ, "MCPGW_PORT": str(port),
           "MCPGW_SESSION_SECRET": settings.session_secret or secrets.token_urlsafe(32)}
    command = [sys.executable, "-m", "mcpgw", "serve", *_worker_argv(argv)]
    processes: dict[int, asyncio.subprocess.Process] = {}
    stopping = asyncio.Event()

    async def start(index: int) -> None:
        # Their own session: a Ctrl-C reaches the parent only, which forwards one SIGTERM (a worker takes a
        # second signal for "stop at once"); and a parent that dies takes its workers with it (Linux).
        processes[index] = await asyncio.create_subprocess_exec(
            *command, env={**env, WORKER_VARIABLE: f"{index}/{workers}"}, start_new_session=True,
            preexec_fn=_die_with_parent)
        log.info("gateway.worker_started", worker=index, pid=processes[index].pid)

    async def keep(index: int) -> None:
        delay = 0.5
        while True:
            started = time.monotonic()
            code = await processes[index].wait()
            if stopping.is_set():
                return
            log.error("gateway.worker_exited", worker=index, code=code, restart_in_s=delay)
            try:
                async with asyncio.timeout(delay):
                    await stopping.wait()
                return
            except TimeoutError:
                pass
            delay = 0.5 if time.monotonic() - started > 30 else min(delay * 2, 10.0)
            await start(index)

    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stopping.is_set():
            sig = signal.SIGKILL  # a second signal stops at once
        stopping.set()
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(sig if sig is signal.SIGKILL else signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        for index in range(workers):
            await start(index)
        log.info("gateway.workers", url=f"http://{settings.host}:{port}/mcp", workers=workers,
                 pids=[p.pid for p in processes.values()])
        await asyncio.gather(*(keep(i) for i in range(workers)))
        await asyncio.gather(*(p.wait() for p in processes.values()))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for process in processes.values():
            if process.returncode is None:
                process.kill()
        reserved.close()
    log.info("gateway.stopped", workers=workers)
    return EXIT_OK


async def _announce_listening(server: _Server, log: Any) -> None:
    """Log where the gateway listens once uvicorn accepts connections (with ``--port 0``: the port it got)."""
    await server.listening.wait()
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets:
            host, port = sock.getsockname()[:2]
            log.info("gateway.listening", url=f"http://{host}:{port}/mcp")


def cmd_serve(args: argparse.Namespace) -> int:
    from mcpgw.gateway.app import WORKER_VARIABLE
    from mcpgw.gateway.settings import load_settings, unknown_environment

    settings = load_settings(
        args.config,
        {
            "files": args.files, "nacos": args.nacos, "namespace": args.namespace, "username": args.username,
            "password": args.password, "host": args.host, "port": args.port,
            "demo_backend": False if args.no_demo_backend else None,
        },
    )
    configure_logging(settings.log_level, settings.log_format)
    for variable in unknown_environment():
        structlog.get_logger("mcpgw").warning("settings.unknown_variable", variable=variable,
                    hint="not a setting of this mcpgw: ignored (see `mcpgw settings`)")
    workers = args.workers
    if workers is not None and not 1 <= workers <= 64:
        return _fail(f"--workers must be between 1 and 64, not {workers}", EXIT_USAGE)
    if workers is not None and workers > 1:
        if not hasattr(socket, "SO_REUSEPORT"):
            return _fail("--workers needs SO_REUSEPORT, which this system does not have", EXIT_USAGE)
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_supervise(settings, workers, args.argv))
        return EXIT_OK
    if WORKER_VARIABLE not in os.environ:
        _check_port_free(settings.host, settings.port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings))
    return EXIT_OK


# -- validate ------------------------------------------------------------------


def _is_publish_path(path: Path) -> bool:
    """A publish document (YAML, or JSON not named like a Nacos file), or a directory of them (not a files tree)."""
    from mcpgw.adapter.publish_documents import DOCUMENT_SUFFIXES
    from mcpgw.converter.validate import kind_of

    if path.is_dir():
        return not (path / "config").is_dir() and any(
            p.is_file() and p.suffix in DOCUMENT_SUFFIXES for p in path.iterdir())
    in_naming = len(path.parts) >= 4 and path.parts[-4] == "naming"
    return path.is_file() and path.suffix in DOCUMENT_SUFFIXES and kind_of(path.name) is None and not in_naming


def _publish_problems(path: Path) -> list[str]:
    from mcpgw.adapter.publish_documents import check_documents

    checking = Progress("checked")
    try:
        _, problems = check_documents(path, on_checked=checking)
    finally:
        checking.close()
    return [problem.describe() for problem in problems]


def cmd_validate(args: argparse.Namespace) -> int:
    from mcpgw.converter.validate import validate_path

    try:
        problems: list[Any] = (_publish_problems(args.path) if _is_publish_path(args.path)
                               else validate_path(args.path))
    except Exception as exc:  # a bug of ours: still one sentence, never a traceback
        return _fail(f"validate failed internally on {args.path} ({type(exc).__name__}); please report it",
                     EXIT_INVALID)
    for problem in problems:
        print(_shown(problem))
    if problems:
        print(f"{len(problems)} problem(s) found in {args.path}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.path}: valid")
    return EXIT_OK


# -- replay --------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from mcpgw.adapter.replay import replay

    configure_logging("error")
    results = asyncio.run(replay(args.scenario, update=args.update))
    failed = 0
    for result in results:
        mark = "ok" if result.ok else ("MISSING GOLDEN" if result.expected is None else "MISMATCH")
        print(f"--- step {result.index}: {result.name} [{mark}]")
        if not args.quiet:
            print(result.actual, end="")
        if not result.ok:
            failed += 1
            if result.expected is not None:
                print(result.diff(), end="")
    if failed:
        print(f"{failed} of {len(results)} step(s) differ from their golden files", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


# -- state ---------------------------------------------------------------------


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _shown(text: object) -> str:
    """Text from the gateway as a terminal may print it: control characters (and broken ones) escaped."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", str(text))


def _table(doc: dict[str, Any]) -> str:
    lines = [f"state version {doc['version']}  ready={doc['ready']}", ""]
    lines.append(f"{'SERVER':<28} {'PHASE':<9} {'SERVING':<10} {'TOOLS':>5}  MESSAGE")
    for status in doc["servers"].values():
        message = status["message"] or ""
        if status.get("last_error"):
            err = status["last_error"]
            where = " ".join(str(err.get(part) or "") for part in ("file", "path")).strip()
            tool = f" tool {err['tool']}" if err.get("tool") else ""
            message = f"{where}{tool}: {err.get('reason', '')}".strip()
        lines.append(f"{_shown(status['name'])[:28]:<28} {status['phase']:<9} "
                     f"{_shown(status['applied_version'] or '-'):<10} {status['tools']:>5}  {_shown(message)}")
        for warning in status.get("warnings") or ():
            lines.append(f"{'':<28} {'warning':<9} {'':<10} {'':>5}  {_shown(warning)}")
    for problem in doc.get("source_problems") or ():
        lines.append(f"source problem: {_shown(problem['where'])}: {_shown(problem['problem'])}")
    listing_problem = (doc.get("discovery") or {}).get("listing_problem")
    if listing_problem:
        lines.append(f"discovery: {_shown(listing_problem)}")
    lines.append("")
    for path, tools in doc["endpoints"].items():
        lines.append(f"{_shown(path)}: {_shown(', '.join(t['name'] for t in tools)) or '(no tools)'}")
    for conflict in doc.get("conflicts") or []:
        lines.append(_shown(f"conflict: {conflict['kind']} {conflict['name']} served by {conflict['served_by']}, "
                            f"hidden: {', '.join(conflict['hidden'])}"))
    return "\n".join(lines)


def _local_gateway_url() -> str:
    """The gateway this shell would start: ``MCPGW_HOST`` / ``MCPGW_PORT`` as ``serve`` reads them."""
    import os

    host = os.environ.get("MCPGW_HOST", "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    port = os.environ.get("MCPGW_PORT", "").strip() or "8080"
    return f"http://{'[' + host + ']' if ':' in host and not host.startswith('[') else host}:{port}"


def cmd_state(args: argparse.Namespace) -> int:
    base = args.url if args.url is not None else _local_gateway_url()
    url = base.rstrip("/") + "/admin/state"
    token = args.token if args.token is not None else os.environ.get("MCPGW_ADMIN_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(url, timeout=5.0, trust_env=False, headers=headers)
        response.raise_for_status()
        doc = response.json()
    except httpx.HTTPStatusError as exc:
        refused = exc.response.status_code in (401, 403)
        return _fail(f"the gateway at {base} answered {exc.response.status_code} for /admin/state"
                     + ("; give its admin token (--token, or MCPGW_ADMIN_TOKEN)" if refused else ""), EXIT_TARGET)
    except httpx.HTTPError as exc:
        return _fail(f"cannot read the gateway state at {url}: {exc or type(exc).__name__}; is it running "
                     "(mcpgw serve), and on this address (--url, or MCPGW_HOST / MCPGW_PORT)?", EXIT_TARGET)
    except ValueError:
        return _fail(f"the answer of {url} is not JSON; is this an mcpgw gateway?", EXIT_TARGET)
    print(json.dumps(doc, indent=2) if args.json else _table(doc))
    return EXIT_OK


# -- register ------------------------------------------------------------------


def cmd_register(args: argparse.Namespace) -> int:
    import os

    from mcpgw.adapter.registration import RegisteredInstance, SelfRegistration, parse_metadata, run_until_signal

    if args.gateway is not None:
        return _register_with_gateway(args)
    if args.token is not None or args.ttl is not None:
        return _fail("--token and --ttl go with --gateway; a Nacos registration ends with its connection")
    # The environment keeps the password out of the process list; only used alongside a username.
    password = args.password if args.password is not None else os.environ.get("MCPGW_PASSWORD")
    registration = SelfRegistration(
        args.nacos, args.service, args.port, ip=args.ip, weight=args.weight,
        metadata=parse_metadata(args.metadata), group=args.group,
        namespace=args.namespace if args.namespace is not None else "public",
        username=args.username, password=password if args.username else args.password,
    )
    configure_logging("warning")

    def announce_registered(instance: RegisteredInstance) -> None:
        print(f"registered {instance} (ephemeral); SIGTERM or Ctrl-C deregisters it", flush=True)

    def announce_deregistered(instance: RegisteredInstance) -> None:
        print(f"deregistered {instance.address} from service {instance.service}", flush=True)

    asyncio.run(run_until_signal(registration, on_registered=announce_registered,
                                 on_deregistered=announce_deregistered))
    return EXIT_OK


def _register_with_gateway(args: argparse.Namespace) -> int:
    import os

    from mcpgw.adapter.registration import ConnectedInstance, GatewayConnection, parse_metadata, run_until_signal

    if args.namespace is not None or args.username is not None or args.password is not None:
        return _fail("--namespace, --username and --password go with --nacos; the gateway serves one namespace "
                     "and takes a connect token (--token or MCPGW_CONNECT_TOKEN)")
    # The environment keeps the token out of the process list.
    token = args.token if args.token is not None else os.environ.get("MCPGW_CONNECT_TOKEN") or None
    connection = GatewayConnection(
        args.gateway, args.service, args.port, ip=args.ip, weight=args.weight,
        metadata=parse_metadata(args.metadata), group=args.group, token=token,
        ttl=args.ttl if args.ttl is not None else 30.0,
    )
    configure_logging("warning")

    def announce_connected(instance: ConnectedInstance) -> None:
        print(f"registered {instance} (lease {instance.ttl:g}s, renewed every {instance.ttl / 3:.3g}s); "
              "SIGTERM or Ctrl-C deregisters it", flush=True)

    def announce_disconnected(instance: ConnectedInstance) -> None:
        print(f"deregistered {instance.address} from service {instance.service}", flush=True)

    asyncio.run(run_until_signal(connection, on_registered=announce_connected,
                                 on_deregistered=announce_disconnected))
    return EXIT_OK


# -- publish -------------------------------------------------------------------



def _publish_usage(args: argparse.Namespace, nacos: str | None) -> str | None:
    operation = args.set_latest or args.delete_version or args.delete
    if args.path is None and args.server is None:
        return "give a publish document or a directory of them (or --server NAME with --set-latest, " \
               "--delete-version or --delete)"
    if args.path is not None and args.server is not None:
        return "give either a document path or --server NAME, not both"
    if args.server is not None and not operation:
        return "--server names a server for --set-latest, --delete-version or --delete; to publish, give a document"
    if args.files is not None and args.raw:
        return "--raw writes configs to Nacos and --files writes a files tree: choose one"
    if args.files is None and not nacos:
        return "give the target: --nacos HOST:PORT (or MCPGW_NACOS), or --files DIR"
    return None


class Progress:
    """Progress of a long run on stderr: a bar on a terminal (tqdm), a count every tenth otherwise.

    Runs of fewer than ``quiet_below`` items say nothing; lines printed through ``say`` keep the bar intact.
    """

    def __init__(self, label: str, *, quiet_below: int = 10, stream: Any = None) -> None:
        self._label = label
        self._quiet_below = quiet_below
        self._stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._step = 0

    def __call__(self, done: int, total: int) -> None:
        if total < self._quiet_below:
            return
        if self._stream.isatty():
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=self._label, unit="doc", file=self._stream, leave=False)
            self._bar.update(done - self._bar.n)
            if done >= total:
                self.close()
            return
        step = max(1, total // 10)
        if done == total or done // step > self._step:
            self._step = done // step
            print(f"mcpgw: {self._label} {done}/{total}", file=self._stream, flush=True)

    def say(self, line: str, *, file: Any = None) -> None:
        out = file if file is not None else sys.stdout
        if self._bar is not None:
            self._bar.write(line, file=out)
        else:
            print(line, file=out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


async def _run_publish(
    args: argparse.Namespace, documents: list[LoadedDocument], target_options: dict[str, Any]
) -> None:
    from mcpgw.adapter.publish import Outcome, Publisher
    from mcpgw.adapter.publish_targets import FilesTarget, PublishTarget, nacos_target

    progress = Progress("published")
    done = 0

    def say(outcome: Outcome) -> None:
        nonlocal done
        progress.say(outcome.message)
        for warning in outcome.warnings:
            progress.say(f"mcpgw: warning: {warning}", file=sys.stderr)
        done += 1
        progress(done, len(documents))

    async def run(target: PublishTarget) -> None:
        publisher = Publisher(target, namespace=target_options["namespace"], dry_run=args.dry_run)
        if not (args.set_latest or args.delete_version or args.delete):
            try:
                await publisher.publish_all(documents, draft=args.draft, on_outcome=say)
            finally:
                progress.close()
            return
        for name in [args.server] if args.server else [d.name for d in documents]:
            if args.set_latest:
                outcome = await publisher.set_latest(name, args.set_latest)
            elif args.delete_version:
                outcome = await publisher.delete_version(name, args.delete_version)
            else:
                outcome = await publisher.delete(name)
            say(outcome)

    if args.files is not None:
        await run(FilesTarget(args.files))
        return
    async with nacos_target(target_options.pop("nacos"), raw=args.raw, **target_options) as target:
        await run(target)


def cmd_publish(args: argparse.Namespace) -> int:
    import os

    from mcpgw.adapter.publish_documents import InvalidDocuments, load_documents
    from mcpgw.registry.errors import SourceError

    nacos = args.nacos or os.environ.get("MCPGW_NACOS")
    usage = _publish_usage(args, nacos)
    if usage is not None:
        return _fail(usage, EXIT_USAGE)
    namespace = args.namespace or os.environ.get("MCPGW_NAMESPACE") or "public"
    target_options = {
        "nacos": nacos,
        "namespace": namespace,
        "username": args.username or os.environ.get("MCPGW_USERNAME"),
        # The environment keeps the password out of the process list.
        "password": args.password if args.password is not None else os.environ.get("MCPGW_PASSWORD"),
    }
    configure_logging("warning")
    try:
        checking = Progress("checked")
        try:
            documents = (load_documents(args.path, namespace=namespace, on_checked=checking)
                         if args.path is not None else [])
        finally:
            checking.close()
        asyncio.run(_run_publish(args, documents, target_options))
    except InvalidDocuments as exc:
        for problem in exc.problems:
            print(f"mcpgw: error: {problem.describe()}", file=sys.stderr)
        print(f"mcpgw: {len(exc.problems)} problem(s); nothing was published", file=sys.stderr)
        return EXIT_INVALID
    except SourceError as exc:
        return _fail(str(exc), EXIT_TARGET)
    except McpgwError as exc:
        return _fail(str(exc), EXIT_INVALID)
    return EXIT_OK


def cmd_import_openapi(args: argparse.Namespace) -> int:
    from mcpgw.adapter.openapi_import import OpenApiImportError, import_openapi

    try:
        result = import_openapi(args.file, server=args.server, service=args.service, group=args.group,
                                version=args.server_version, strict=args.strict, protocol=args.protocol)
    except OpenApiImportError as exc:
        return _fail(str(exc), EXIT_INVALID)
    if args.strict and result.warnings:
        for warning in result.warnings:
            print(f"mcpgw: error: {warning}", file=sys.stderr)
        return _fail(f"{len(result.warnings)} problem(s) with --strict; nothing was written", EXIT_INVALID)
    for warning in result.warnings:
        print(f"mcpgw: warning: {warning}", file=sys.stderr)
    text = result.yaml(args.file.name)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror or exc}", EXIT_INVALID)
    tools = len(result.document["tools"])
    print(f"mcpgw: {tools} tool(s) from {result.operations} operation(s)"
          + (f" written to {args.output}" if args.output else ""), file=sys.stderr)
    for credential in result.credentials:
        print(f"mcpgw: the tools read a credential from the Nacos config {credential}: create it before serving",
              file=sys.stderr)
    return EXIT_OK


def cmd_settings(args: argparse.Namespace) -> int:
    from mcpgw.gateway.settings import settings_table

    print(settings_table(), end="")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcpgw", description="An MCP gateway driven by Nacos MCP-registry configs.")
    parser.add_argument("--version", action="version", version=f"mcpgw {mcpgw.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (default: the bundled demo tree and demo backend)")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--files", type=Path, metavar="DIR", help="a files tree in the Nacos layout, watched live")
    source.add_argument("--nacos", metavar="HOST:PORT", help="a Nacos 3 server")
    serve.add_argument("--namespace", help="Nacos namespace (default public)")
    serve.add_argument("--username")
    serve.add_argument("--password")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file (MCPGW_* env vars also work)")
    serve.add_argument("--no-demo-backend", action="store_true", help="do not start the bundled demo REST backend")
    serve.add_argument("--workers", type=int, metavar="N", help="run N gateway processes on the port (SO_REUSEPORT), "
                       "each following the source, sharing one session secret (generated when none is set); "
                       "SIGTERM drains them all (default 1)")
    serve.set_defaults(func=cmd_serve)

    validate = sub.add_parser("validate", help="check a files tree or one Nacos MCP file")
    validate.add_argument("path", type=Path)
    validate.set_defaults(func=cmd_validate)

    settings = sub.add_parser("settings", help="list every setting: file key, environment variable, flag, default")
    settings.set_defaults(func=cmd_settings)

    replay = sub.add_parser("replay", help="replay a scenario against the real adapter and compare golden states")
    replay.add_argument("scenario", type=Path)
    replay.add_argument("--update", action="store_true", help="rewrite the golden files from the actual states")
    replay.add_argument("--quiet", action="store_true", help="print only step verdicts and diffs")
    replay.set_defaults(func=cmd_replay)

    state = sub.add_parser("state", help="print the state of a running gateway")
    state.add_argument("--url", help="the gateway's base URL (default: http://127.0.0.1:8080, or the "
                       "MCPGW_HOST / MCPGW_PORT a local serve uses)")
    state.add_argument("--json", action="store_true", help="print JSON instead of a table")
    state.add_argument("--token", help="the gateway's admin token, when it has one (default: MCPGW_ADMIN_TOKEN; "
                       "the variable keeps it out of the process list)")
    state.set_defaults(func=cmd_state)

    register = sub.add_parser(
        "register", help="register this host as an instance of a service, in Nacos or with a gateway, until stopped"
    )
    register_with = register.add_mutually_exclusive_group(required=True)
    register_with.add_argument("--nacos", metavar="HOST:PORT", help="the Nacos server (an ephemeral instance)")
    register_with.add_argument("--gateway", metavar="URL", help="a gateway's base URL, e.g. http://127.0.0.1:8080 "
                               "(its connect API, no Nacos: a lease renewed every ttl/3 seconds)")
    register.add_argument("--service", required=True, metavar="NAME", help="the service (a serviceRef's serviceName)")
    register.add_argument("--port", required=True, type=int, help="the port the backend listens on")
    register.add_argument("--ip", help="the address to register (default: this host's address towards Nacos "
                          "or the gateway)")
    register.add_argument("--weight", type=float, default=1.0, help="load-balancing weight, 0-10000 (default 1)")
    register.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                          help="instance metadata, repeatable (e.g. --metadata protocol=https)")
    register.add_argument("--group", default="DEFAULT_GROUP", help="the service's group (default DEFAULT_GROUP)")
    register.add_argument("--namespace", help="Nacos namespace (default public)")
    register.add_argument("--username")
    register.add_argument("--password", help="or set MCPGW_PASSWORD")
    register.add_argument("--token", help="with --gateway: its connect token (or set MCPGW_CONNECT_TOKEN)")
    register.add_argument("--ttl", type=float, metavar="SECONDS",
                          help="with --gateway: the lease, renewed every ttl/3 seconds (default 30)")
    register.set_defaults(func=cmd_register)

    publish = sub.add_parser(
        "publish", help="publish MCP servers from YAML/JSON documents to Nacos or a files tree",
        description="Publish one document per MCP server (a file, or every *.yaml/*.yml/*.json of a directory). "
        "Every document is validated before anything is written. Exit 0 on success, 1 on invalid input or a "
        "refused operation, 2 on usage errors, 3 when the target is unreachable or rejects the credentials.",
    )
    publish.add_argument("path", type=Path, nargs="?", help="a publish document or a directory of them")
    publish.add_argument("--server", metavar="NAME", help="the server for --set-latest/--delete-version/--delete "
                         "(instead of a document)")
    publish_to = publish.add_mutually_exclusive_group()
    publish_to.add_argument("--nacos", metavar="HOST:PORT", help="a Nacos 3 server (or MCPGW_NACOS)")
    publish_to.add_argument("--files", type=Path, metavar="DIR", help="write a files tree in the Nacos layout")
    publish.add_argument("--raw", action="store_true",
                         help="write the three configs directly (Nacos 2.x) instead of using the Nacos 3 admin API")
    publish.add_argument("--namespace", help="Nacos namespace (default public, or MCPGW_NAMESPACE)")
    publish.add_argument("--username", help="or MCPGW_USERNAME")
    publish.add_argument("--password", help="or MCPGW_PASSWORD")
    operation = publish.add_mutually_exclusive_group()
    operation.add_argument("--draft", action="store_true", help="publish without making it the latest version")
    operation.add_argument("--set-latest", metavar="VERSION", help="serve this existing version")
    operation.add_argument("--delete-version", metavar="VERSION", help="delete one version that is not served")
    operation.add_argument("--delete", action="store_true", help="delete the server and all its versions")
    publish.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
    publish.set_defaults(func=cmd_publish)

    importing = sub.add_parser("import", help="make publish documents from other descriptions of an API")
    import_from = importing.add_subparsers(dest="format", required=True, metavar="FORMAT")
    openapi = import_from.add_parser(
        "openapi", help="a publish document from an OpenAPI 3.0/3.1 or Swagger 2.0 document",
        description="Print (or write to -o) a publish document with one REST-to-MCP tool per operation of an "
        "OpenAPI 3.0/3.1 or Swagger 2.0 document (YAML or JSON; $refs to files next to it are followed). "
        "Warnings (skipped operations, the validator's findings) go to standard error. Exit 0 on success, 1 when "
        "the document cannot be imported, 2 on usage errors.",
    )
    openapi.add_argument("file", type=Path, help="the OpenAPI or Swagger document")
    openapi.add_argument("--server", metavar="NAME", help="the MCP server's name (default: from info.title)")
    openapi.add_argument("--service", metavar="NAME", help="the Nacos service whose instances serve the API "
                         "(default: the document's absolute server URL)")
    openapi.add_argument("--group", default="DEFAULT_GROUP", help="the service's group (default DEFAULT_GROUP)")
    openapi.add_argument("--protocol", choices=("http", "https"), help="how the gateway calls the backend (default: "
                         "http with --service, else the scheme of the document's server URL)")
    openapi.add_argument("--version", dest="server_version", metavar="VERSION",
                         help="the version to publish (default: info.version)")
    openapi.add_argument("--strict", action="store_true", help="refuse the document on any validator finding or "
                         "skipped operation instead of warning")
    openapi.add_argument("-o", "--output", type=Path, metavar="OUT", help="write here instead of standard output")
    openapi.set_defaults(func=cmd_import_openapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(given)
    args.argv = given[given.index("serve") + 1:] if "serve" in given else []
    try:
        code: int = args.func(args)
    except McpgwError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        # The reader went away (``mcpgw validate tree | head``): the rest of the output is not wanted, and the
        # status is what a shell gives a command SIGPIPE ended (never 0: the output was cut short).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
