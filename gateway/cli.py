"""The ``mcpgw`` command: serve, validate, replay, state.

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
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import structlog
import uvicorn

from registry.errors import McpgwError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, format="%(message)s", stream=sys.stderr)
    # Third-party request logs carry URLs with query strings (credentials may ride there) and are noisy.
    for noisy in ("httpx", "httpx2", "httpcore", "mcp", "watchfiles", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
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


async def _serve(settings: Any) -> None:
    from gateway.app import Gateway
    from gateway.demo_backend import create_demo_backend

    gateway = Gateway(settings)
    await gateway.source.start()  # fail fast and clearly (unreadable tree, Nacos down, bad credentials)
    await gateway.source.stop()
    servers = []
    if settings.start_demo_backend:
        _check_port_free("127.0.0.1", 18081)
        servers.append(uvicorn.Server(uvicorn.Config(create_demo_backend(), host="127.0.0.1", port=18081,
                                                     log_level="warning", lifespan="off")))
    config = uvicorn.Config(gateway.asgi(), host=settings.host, port=settings.port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=5)
    main = uvicorn.Server(config)
    servers.append(main)
    log = structlog.get_logger("mcpgw")
    source = f"nacos {settings.nacos}" if settings.nacos else f"files {settings.files_root}"
    log.info("gateway.starting", source=source, url=f"http://{settings.host}:{settings.port}/mcp",
             demo_backend=settings.start_demo_backend)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if exc is not None:
            raise exc


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.settings import load_settings

    settings = load_settings(
        args.config,
        {
            "files": args.files, "nacos": args.nacos, "namespace": args.namespace, "username": args.username,
            "password": args.password, "host": args.host, "port": args.port,
            "demo_backend": False if args.no_demo_backend else None,
        },
    )
    configure_logging(settings.log_level, settings.log_format)
    _check_port_free(settings.host, settings.port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings))
    return EXIT_OK


# -- validate ------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from converter.validate import validate_path

    problems = validate_path(args.path)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found in {args.path}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.path}: valid")
    return EXIT_OK


# -- replay --------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from adapter.replay import replay

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


def _table(doc: dict[str, Any]) -> str:
    lines = [f"state version {doc['version']}  ready={doc['ready']}", ""]
    lines.append(f"{'SERVER':<28} {'PHASE':<9} {'SERVING':<10} {'TOOLS':>5}  MESSAGE")
    for status in doc["servers"].values():
        message = status["message"] or ""
        if status.get("last_error"):
            err = status["last_error"]
            message = f"{err.get('file', '')} {err.get('path', '')}: {err.get('reason', '')}".strip()
        lines.append(f"{status['name'][:28]:<28} {status['phase']:<9} {status['applied_version'] or '-':<10} "
                     f"{status['tools']:>5}  {message}")
    lines.append("")
    for path, tools in doc["endpoints"].items():
        lines.append(f"{path}: {', '.join(t['name'] for t in tools) or '(no tools)'}")
    for conflict in doc.get("conflicts") or []:
        lines.append(f"conflict: {conflict['kind']} {conflict['name']} served by {conflict['served_by']}, "
                     f"hidden: {', '.join(conflict['hidden'])}")
    return "\n".join(lines)


def cmd_state(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/admin/state"
    try:
        response = httpx.get(url, timeout=5.0, trust_env=False)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return _fail(f"cannot read the gateway state at {url}: {exc}")
    doc = response.json()
    print(json.dumps(doc, indent=2) if args.json else _table(doc))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcpgw", description="An MCP gateway driven by Nacos MCP-registry configs.")
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
    serve.set_defaults(func=cmd_serve)

    validate = sub.add_parser("validate", help="check a files tree or one Nacos MCP file")
    validate.add_argument("path", type=Path)
    validate.set_defaults(func=cmd_validate)

    replay = sub.add_parser("replay", help="replay a scenario against the real adapter and compare golden states")
    replay.add_argument("scenario", type=Path)
    replay.add_argument("--update", action="store_true", help="rewrite the golden files from the actual states")
    replay.add_argument("--quiet", action="store_true", help="print only step verdicts and diffs")
    replay.set_defaults(func=cmd_replay)

    state = sub.add_parser("state", help="print the state of a running gateway")
    state.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's base URL")
    state.add_argument("--json", action="store_true", help="print JSON instead of a table")
    state.set_defaults(func=cmd_state)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except McpgwError as exc:
        return _fail(str(exc))
    return code


if __name__ == "__main__":
    sys.exit(main())
