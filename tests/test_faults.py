"""Fault scenarios on real processes (a short run of ``parkgate bench faults``): nothing lost,
nothing counted twice. The full runs (×20, ×100, 10,000 events) are the benchmark's."""

from __future__ import annotations

import pytest

from bench.faults import run_scenario

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("scenario", "runs"), [("broker_kill", 2), ("edge_kill", 3), ("network_cut", 1), ("collector_kill", 2)]
)
def test_fault_loses_and_duplicates_nothing(scenario: str, runs: int) -> None:
    result = run_scenario(scenario, runs=runs, gates=1, rate=50.0, cut_events=200, seed=7)
    assert result["events"] > 0
    assert result["drained"], result
    assert (result["lost"], result["duplicated"], result["occupancy_error"]) == (0, 0, 0), result
    assert result["stored"] == result["events"]
