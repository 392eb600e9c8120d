"""Every replay scenario under fixtures/nacos-configs/scenarios matches its golden files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcpgw.adapter.replay import replay
from mcpgw.gateway.cli import main

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
