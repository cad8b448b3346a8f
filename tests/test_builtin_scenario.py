"""The headline claim, on the first three days of the built-in winter week:
heatshift delivers clearly more useful heat than a heat-unaware cluster, misses no
deadline, and every site's energy balances. (The full week is `make simulate`.)"""

from __future__ import annotations

import dataclasses

import pytest

from heatshift.planner import policies
from heatshift.planner.config import PlannerConfig
from heatshift.sim import engine
from heatshift.sim import scenario as scenario_mod

HOUR = 3600.0


@pytest.fixture(scope="module")
def results() -> dict[str, engine.SimResult]:
    week = scenario_mod.load_builtin_scenario()
    opening = dataclasses.replace(week, duration_s=72 * HOUR)
    cfg = PlannerConfig(step_s=HOUR, time_limit_s=1.0)
    return {
        name: engine.simulate(opening, policies.make_policy(name, cfg), replan_every_s=HOUR)
        for name in ("default", "heatshift")
    }


def _useful_kwh(result: engine.SimResult) -> float:
    return sum(site.delivered_kwh for site in result.sites.values())


def test_heatshift_delivers_clearly_more_useful_heat_than_default(
    results: dict[str, engine.SimResult],
) -> None:
    assert _useful_kwh(results["heatshift"]) > 1.1 * _useful_kwh(results["default"])


@pytest.mark.parametrize("policy", ["default", "heatshift"])
def test_no_deadline_missed_and_every_site_balances(
    results: dict[str, engine.SimResult], policy: str
) -> None:
    result = results[policy]
    assert result.deadline_misses == ()
    assert result.rejected_placements == 0
    for totals in result.sites.values():
        assert abs(totals.energy_balance_error_kwh) < 1e-6
