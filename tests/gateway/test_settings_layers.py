"""Settings come in layers (defaults < file < environment < flags) and every error names where it came from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mcpgw.gateway.cli import main
from mcpgw.gateway.settings import Settings, SettingsError, load_settings, settings_table, unknown_environment

README = Path(__file__).resolve().parents[2] / "README.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mcpgw.yaml"
    path.write_text(text)
    return path


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    config = write(tmp_path, "port: 9001\nhost: 0.0.0.0\nlog-level: debug\n"
                             "sessions: {max_total: 5, max_per_client: 2}\n")
    from_file = load_settings(config, {}, env={})
    assert (from_file.port, from_file.host, from_file.log_level) == (9001, "0.0.0.0", "debug")
    env = {"MCPGW_PORT": "9002", "mcpgw_log_level": "warning", "MCPGW_SESSIONS": "max_total: 7"}
    from_env = load_settings(config, {}, env=env)
    assert (from_env.port, from_env.host, from_env.log_level) == (9002, "0.0.0.0", "warning")
    # A section from the environment replaces the file's section as a whole (it is one setting).
    assert (from_env.sessions.max_total, from_env.sessions.max_per_client) == (7, 100)
    from_flags = load_settings(config, {"port": 9003, "host": None}, env=env)
    assert (from_flags.port, from_flags.host) == (9003, "0.0.0.0")
    assert type(from_flags) is Settings
    assert load_settings(None, {}, env={}) == Settings()


def test_every_problem_is_reported_at_once_naming_its_flag_variable_or_file_key(tmp_path: Path) -> None:
    config = write(tmp_path, "prot: 8080\nsessions:\n  max_total: 0\nlog_format: xml\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, {"port": 70000}, env={"MCPGW_DRAIN_TIMEOUT": "soon", "MCPGW_BALANCING": "[1, 2"})
    lines = str(caught.value).splitlines()
    assert len(lines) == 6, lines
    assert f"config file {config}: unknown setting 'prot'; did you mean 'port'?" in lines
    assert any(line.startswith(f"config file {config}, key sessions.max_total: ") and "greater than or equal to 1"
               in line for line in lines)
    assert any(line.startswith(f"config file {config}, key log_format: ") and "'console' or 'json'" in line
               for line in lines)
    assert any(line.startswith("flag --port: ") and "65535" in line for line in lines)
    assert any(line.startswith("environment variable MCPGW_DRAIN_TIMEOUT: ") and "'soon'" in line for line in lines)
    assert any(line.startswith("environment variable MCPGW_BALANCING: ") and "JSON or YAML" in line for line in lines)
    assert not any("Extra inputs are not permitted" in line for line in lines)


def test_an_unreadable_or_malformed_file_is_one_sentence_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read config file .*missing\.yaml"):
        load_settings(tmp_path / "missing.yaml", {}, env={})
    with pytest.raises(SettingsError, match=r"must be a YAML mapping of settings .*not a list"):
        load_settings(write(tmp_path, "- port\n"), {}, env={})


def test_variables_that_name_no_setting_are_found_for_a_warning() -> None:
    env = {"MCPGW_PROT": "1", "MCPGW_PORT": "2", "MCPGW_REAL_NACOS": "0", "PATH": "/bin"}
    assert unknown_environment(env) == ["MCPGW_PROT"]


def test_the_readme_settings_table_is_the_one_the_model_generates_and_documents_every_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = README.read_text()
    found = re.search(r"<!-- settings-table:start[^>]*-->\n(.*?)<!-- settings-table:end -->", text, re.S)
    assert found is not None, "README lost its settings table markers"
    assert found.group(1) == settings_table(), "README's settings table is stale: paste the output of `mcpgw settings`"
    rows = [line for line in settings_table().splitlines()[2:]]
    for name in Settings.model_fields:
        assert any(row.startswith(f"| `{name}") for row in rows), name
    undocumented = [row.split("|")[1] for row in rows if row.rstrip().endswith("|  |")]
    assert undocumented == []
    assert main(["settings"]) == 0
    assert capsys.readouterr().out == settings_table()
