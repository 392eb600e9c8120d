"""Balancing strategies found by name through the ``mcpgw.balancers`` entry points, as an installed plugin adds them."""

from __future__ import annotations

import importlib.metadata
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcpgw.gateway.settings import SettingsError, load_settings
from mcpgw.registry.balancing import (
    ENTRY_POINT_GROUP,
    STRATEGIES,
    BalancingConfigError,
    BalancingPolicy,
    ClusterRuntime,
    available_strategies,
    make_balancer,
    refresh_strategies,
)
from mcpgw.registry.models import Instance
from mcpgw.registry.server_register import McpServer, ServerRegister


def install_plugin(site: Path, distribution: str, entry_points: dict[str, str], module: str, source: str) -> None:
    """What ``pip install`` of a package with ``[project.entry-points."mcpgw.balancers"]`` leaves in site-packages."""
    info = site / f"{distribution}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "site-packages"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    refresh_strategies()
    yield directory
    monkeypatch.undo()
    refresh_strategies()


LAST = """
    class Last:
        def pick(self, instances, key=None, exclude=()):
            candidates = [i for i in instances if i.id not in exclude]
            return candidates[-1] if candidates else None

        def on_start(self, instance_id):
            pass

        def on_finish(self, instance_id, *, ok, latency_s):
            pass

    def factory(*, rng, clock):
        return Last()
"""


def test_the_built_ins_are_registered_through_the_entry_point_group_like_any_plugin() -> None:
    names = {e.name for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert set(STRATEGIES) <= names
    assert available_strategies()[: len(STRATEGIES)] == STRATEGIES


def test_an_installed_plugin_is_found_by_name_everywhere_a_strategy_is_named(site: Path, tmp_path: Path) -> None:
    assert "always_last" not in available_strategies()
    install_plugin(site, "mcpgw_last", {"always-last": "mcpgw_last_plugin:factory"}, "mcpgw_last_plugin", LAST)
    assert "always_last" not in available_strategies()  # the scan is cached until refreshed
    refresh_strategies()
    assert "always_last" in available_strategies()
    pool = tuple(Instance(id=f"i{n}", host="10.0.0.1", port=9000 + n) for n in range(3))
    assert make_balancer("Always-Last").pick(pool).id == "i2"  # type: ignore[union-attr]
    # In a cluster's runtime (the data plane) ...
    runtime = ClusterRuntime("c", BalancingPolicy(strategy="always_last"))
    runtime.update_instances(pool)
    assert [runtime.pick().id for _ in range(3)] == ["i2"] * 3  # type: ignore[union-attr]
    # ... in the design's register ...
    register = ServerRegister(strategy="always_last")
    for instance in pool:
        register.register(McpServer(id=instance.id, name="svc", host=instance.host, port=instance.port))
    assert register.get_server_by_load_balance("svc").id == "i2"  # type: ignore[union-attr]
    # ... and in the settings an operator writes.
    settings_file = tmp_path / "mcpgw.yaml"
    settings_file.write_text("balancing:\n  strategy: always-last\n  services:\n    svc: {strategy: round-robin}\n")
    settings = load_settings(settings_file, {}, env={})
    assert settings.balancing.strategy == "always_last"


def test_a_plugin_that_cannot_be_loaded_is_a_clear_error_naming_it(site: Path) -> None:
    install_plugin(site, "mcpgw_broken", {"broken": "mcpgw_broken_plugin:factory"}, "mcpgw_broken_plugin",
                   "import no_such_module_anywhere\n")
    install_plugin(site, "mcpgw_bad", {"no-pick": "mcpgw_bad_plugin:factory"}, "mcpgw_bad_plugin",
                   "def factory(*, rng, clock):\n    return object()\n")
    refresh_strategies()
    with pytest.raises(BalancingConfigError) as caught:
        make_balancer("broken")
    message = str(caught.value)
    assert "mcpgw_broken_plugin:factory" in message and ENTRY_POINT_GROUP in message
    assert "ModuleNotFoundError" in message and "Fix or uninstall" in message
    with pytest.raises(BalancingConfigError, match="'no_pick' made object, which has no pick"):
        make_balancer("no-pick")
    # A broken plugin harms only those who name it.
    assert make_balancer("round_robin") is not None


def test_an_unknown_strategy_in_the_settings_lists_the_installed_plugins(site: Path, tmp_path: Path) -> None:
    install_plugin(site, "mcpgw_last", {"always-last": "mcpgw_last_plugin:factory"}, "mcpgw_last_plugin", LAST)
    refresh_strategies()
    settings_file = tmp_path / "mcpgw.yaml"
    settings_file.write_text("balancing:\n  strategy: fastest\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(settings_file, {}, env={})
    message = str(caught.value)
    assert "'fastest'" in message and "always_last" in message and "round_robin" in message
