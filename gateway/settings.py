"""Gateway settings: defaults < YAML file < environment (MCPGW_*) < command-line flags.

One frozen model validated at start-up, so a bad value is a one-line error
before anything listens, never a surprise later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry.errors import McpgwError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_TREE = REPO_ROOT / "fixtures" / "nacos-configs" / "demo"


class SettingsError(McpgwError):
    """A setting that cannot be used; the message names it."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    files: Path | None = None
    nacos: str | None = Field(default=None, description="HOST:PORT of a Nacos 3 server")
    namespace: str = "public"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    discovery_interval: float = Field(default=10.0, gt=0)
    aggregate_naming: Literal["prefix", "bare"] = "prefix"
    aggregate_separator: str = Field(default="_", min_length=1, max_length=3)
    upstream_timeout: float = Field(default=30.0, gt=0)
    demo_backend: bool | None = None
    """Start the bundled demo REST backend; default: when serving the bundled demo tree."""
    state_dir: Path = Path(".mcpgw")
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def serves_demo(self) -> bool:
        return self.files is None and self.nacos is None

    @property
    def files_root(self) -> Path:
        return self.files if self.files is not None else DEMO_TREE

    @property
    def start_demo_backend(self) -> bool:
        return self.demo_backend if self.demo_backend is not None else self.serves_demo


_ENV_PREFIX = "MCPGW_"


def load_settings(config_file: Path | None, overrides: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    merged: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = yaml.safe_load(config_file.read_text()) or {}
        except OSError as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {config_file} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"config file {config_file} must be a YAML mapping of settings")
        merged.update({k.replace("-", "_"): v for k, v in data.items()})
    environ = os.environ if env is None else env
    for field_name in Settings.model_fields:
        value = environ.get(_ENV_PREFIX + field_name.upper())
        if value is not None:
            merged[field_name] = value
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from exc
    if settings.files is not None and settings.nacos is not None:
        raise SettingsError("choose one source: --files DIR or --nacos HOST:PORT, not both")
    return settings
