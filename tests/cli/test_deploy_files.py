"""The Dockerfile and the compose file, checked against the code they run (no Docker engine runs here).

They rot silently: a renamed setting, a new package folder the image does not copy, a flag `serve` no
longer takes. Each of those fails here.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path

import yaml

from mcpgw.gateway.cli import build_parser
from mcpgw.gateway.settings import Settings, env_name, load_settings

CHECKOUT = Path(__file__).resolve().parents[2]
SETTINGS_VARIABLES = {env_name(name) for name in Settings.model_fields}


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, argument) of the final stage onwards and the build stage, continuation lines joined."""
    joined = (CHECKOUT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, argument = line.partition(" ")
            found.append((instruction.upper(), argument.strip()))
    return found


def test_the_image_copies_every_package_folder_and_runs_a_command_serve_accepts() -> None:
    instructions = dockerfile()
    copied = {arg.split()[0] for op, arg in instructions if op == "COPY" and "--from" not in arg}
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    uncopied = [f for f in folders if not any(f == c or f.startswith(c.rstrip("/") + "/") for c in copied)]
    assert uncopied == []
    for source in copied:
        assert (CHECKOUT / source).exists(), source
    envs = {}
    for op, arg in instructions:
        if op == "ENV":
            for pair in shlex.split(arg):
                key, _, value = pair.partition("=")
                envs[key] = value
    assert {k for k in envs if k.startswith("MCPGW_")} <= SETTINGS_VARIABLES
    entrypoint = json.loads(next(arg for op, arg in instructions if op == "ENTRYPOINT"))
    command = json.loads(next(arg for op, arg in reversed(instructions) if op == "CMD"))
    assert entrypoint == ["mcpgw"]
    assert build_parser().parse_args(command).command == "serve"
    assert envs["MCPGW_HOST"] == "0.0.0.0"
    health = next(arg for op, arg in instructions if op == "HEALTHCHECK")
    assert f"127.0.0.1:{envs['MCPGW_PORT']}/readyz" in health


def test_the_compose_file_runs_the_gateway_against_its_nacos_with_settings_that_exist() -> None:
    compose = yaml.safe_load((CHECKOUT / "deploy/docker-compose.yml").read_text())
    services = compose["services"]
    gateway = services["mcpgw"]
    assert (CHECKOUT / "deploy" / gateway["build"]["context"] / gateway["build"]["dockerfile"]).is_file()
    assert set(gateway["environment"]) <= SETTINGS_VARIABLES
    args = build_parser().parse_args(gateway["command"])
    assert args.command == "serve" and args.nacos == "nacos:8848"
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown service {needed}"
    published = {int(p.split(":")[1]) for p in services["nacos"]["ports"]}
    assert {8848, 8848 + 1000} <= published  # the SDK derives the gRPC port from the HTTP one
    assert "8080:8080" in gateway["ports"]
    # Port publishing makes every caller non-loopback: the gateway must be given credentials to serve them.
    settings = load_settings(None, {"nacos": args.nacos}, env={k: str(v) for k, v in gateway["environment"].items()})
    assert settings.auth.api_keys and settings.auth.admin_digest() is not None
