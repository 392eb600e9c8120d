"""Every replay scenario under fixtures/nacos-configs/scenarios matches its golden files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mcpgw.adapter.listener import ConfigListener
from mcpgw.adapter.replay import replay
from mcpgw.gateway.cli import main
from mcpgw.remote.base import ServiceKey

SCENARIOS = Path(__file__).resolve().parents[2] / "fixtures" / "nacos-configs" / "scenarios"
ALL = sorted(p for p in SCENARIOS.iterdir() if (p / "scenario.yaml").exists())


def test_there_are_at_least_twelve_scenarios() -> None:
    assert len(ALL) >= 12


@pytest.mark.parametrize("scenario", ALL, ids=[p.name for p in ALL])
async def test_scenario_matches_its_golden_states(scenario: Path) -> None:
    results = await replay(scenario)
    for result in results:
        assert result.expected is not None, f"{result.golden} is missing"
        assert result.ok, result.diff()


def test_replay_command_reports_a_mismatch_with_a_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = SCENARIOS / "server-added"
    target = tmp_path / "server-added"
    (target / "expected").mkdir(parents=True)
    (target / "scenario.yaml").write_text((source / "scenario.yaml").read_text())
    for golden in (source / "expected").iterdir():
        (target / "expected" / golden.name).write_text(golden.read_text().replace("weight=1", "weight=7"))
    assert main(["replay", str(target), "--quiet"]) == 1
    out = capsys.readouterr()
    assert "MISMATCH" in out.out
    assert "-  - http://10.0.3.15:8080 weight=7" in out.out
    assert "+  - http://10.0.3.15:8080 weight=1" in out.out
    assert main(["replay", str(source), "--quiet"]) == 0


async def _noop_release(self: ConfigListener, keep: object) -> None:
    return None


async def _keep_subscriptions(self: ConfigListener, service: ServiceKey | None) -> None:
    """``_set_service`` that forgets to unsubscribe from the service it leaves."""
    if service != self._service and service is not None:
        self._service = None
        await ORIGINAL_SET_SERVICE(self, service)


ORIGINAL_SET_SERVICE = ConfigListener._set_service


@pytest.mark.parametrize(("mutation", "method", "caught_by"), [
    (_noop_release, "_release", ["new-published-version", "credential-reference-removed"]),
    (_keep_subscriptions, "_set_service", ["serviceref-changed"]),
])
async def test_a_listener_that_keeps_stale_watches_fails_the_scenarios_that_drop_them(
    monkeypatch: pytest.MonkeyPatch, mutation: object, method: str, caught_by: list[str]
) -> None:
    """The goldens record what is watched, so a watch left behind is a diff even when what is served is right."""
    monkeypatch.setattr(ConfigListener, method, mutation)
    for name in caught_by:
        results = await replay(SCENARIOS / name)
        failed = [r for r in results if not r.ok]
        assert failed, f"{name} did not notice {method} being broken"
        # What is served is unchanged: only the watches differ.
        for result in failed:
            diff_lines = [line for line in result.diff().splitlines()
                          if line[:1] in "+-" and not line.startswith(("+++", "---"))]
            assert diff_lines and all(re.fullmatch(r"[+-] {4}- [\w.-]+/[\w.@-]+", line) for line in diff_lines), (
                result.diff())
