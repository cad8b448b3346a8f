"""Waiting must buy heat: a held job starts now unless the hold is expected to buy heat."""

from __future__ import annotations

from heatshift import model
from heatshift.planner import checker, heataware, holds, policies
from heatshift.planner.config import PlannerConfig
from heatshift.sim import engine

import builders

HOUR = 3600.0
STEP = 900.0


def _slots(hours: int) -> list[float]:
    return [k * STEP for k in range(hours * 4 + 1)]


def test_a_hold_that_buys_no_heat_starts_now() -> None:
    # The site wants far more than it can make all day: heat made now is as useful as later.
    site = builders.site("a", max_thermal_kw=200)
    snap = builders.snapshot(
        [site], [builders.state("a", demand_kw=150)], [builders.job("j", hours=1)]
    )
    held = [model.Placement(job_id="j", site="a", start_s=2 * HOUR)]
    placements, notes = holds.start_unprofitable_holds(snap, held, _slots(6), {"a": [150.0] * 24})
    assert [(p.job_id, p.site, p.start_s) for p in placements] == [("j", "a", 0.0)]
    assert notes == ["1 held job(s) started now: holding them was expected to buy no heat"]


def test_a_hold_that_buys_heat_is_kept() -> None:
    # No demand for two hours, then plenty; no tank to carry heat over: heat made now is lost.
    site = builders.site("a", tank_kwh=0, max_thermal_kw=200)
    snap = builders.snapshot([site], [builders.state("a")], [builders.job("j", hours=1)])
    held = [model.Placement(job_id="j", site="a", start_s=2 * HOUR)]
    demand = {"a": [0.0] * 8 + [150.0] * 16}
    placements, notes = holds.start_unprofitable_holds(snap, held, _slots(6), demand)
    assert placements == held
    assert notes == []
    assert checker.expected_heat(snap, placements, _slots(6), demand).useful_kwh > (
        checker.expected_heat(
            snap, [held[0].model_copy(update={"start_s": 0.0})], _slots(6), demand
        ).useful_kwh
    )


def test_an_unplaced_job_starts_now_where_it_fits_beside_later_starts() -> None:
    # One GPU: a later start holds it from 1 h, so a 2-hour unplaced job cannot start now,
    # while a 1-hour one can (it ends as the other starts).
    site = builders.site("a", gpu=1, max_thermal_kw=200)
    jobs = [builders.job(i, hours=h) for i, h in (("later", 1.0), ("long", 2.0), ("short", 1.0))]
    snap = builders.snapshot([site], [builders.state("a", demand_kw=150)], jobs)
    # "later" buys heat where it is (its start stays); then room for one more at once.
    later = model.Placement(job_id="later", site="a", start_s=1 * HOUR)
    placements, _ = holds.start_unprofitable_holds(
        snap, [later], _slots(6), {"a": [0.0] * 4 + [150.0] * 20}
    )
    starts = {p.job_id: p.start_s for p in placements}
    assert starts["later"] == 1 * HOUR
    assert starts.get("short") == 0.0
    assert "long" not in starts
    assert not checker.check_plan(
        snap, model.Plan(now_s=0, placements=tuple(placements), status=model.SolveStatus.HEURISTIC)
    )


def test_when_every_site_wants_all_the_heat_jobs_wait_no_longer_than_heat_unaware() -> None:
    sites = [builders.site(n, gpu=16, cpu=128, memory_gib=512, max_thermal_kw=400) for n in "abc"]
    scenario = builders.random_trace(3, sites, hours=12, jobs=40, demand_kw=300.0)
    cfg = PlannerConfig(time_limit_s=60.0, search_effort=PlannerConfig().deterministic_time)
    waits = {}
    for name in ("default", "heatshift"):
        result = engine.simulate(scenario, policies.make_policy(name, cfg))
        assert not result.deadline_misses
        waits[name] = result.mean_wait_s
    assert waits["heatshift"] <= waits["default"] + 15 * 60


def test_the_planner_starts_work_at_once_when_heat_is_wanted_everywhere() -> None:
    sites = [builders.site(n, max_thermal_kw=400) for n in "ab"]
    states = [builders.state(n, demand_kw=300, forecast=[300.0] * 96) for n in "ab"]
    jobs = [builders.job(f"j{i}", hours=2, deadline_h=10) for i in range(6)]
    plan = heataware.plan(builders.snapshot(sites, states, jobs), PlannerConfig(time_limit_s=10))
    assert {p.job_id for p in plan.placements if p.start_s == 0.0} == {j.id for j in jobs}


def test_an_even_hold_at_a_site_with_heat_to_spare_is_kept() -> None:
    # Nothing wanted all day: starting now or later dumps the same heat, but the site does
    # not want all it makes, so the planner's hold stands (later plans may find it a use).
    site = builders.site("a", tank_kwh=0)
    snap = builders.snapshot([site], [builders.state("a")], [builders.job("j", hours=1)])
    held = [model.Placement(job_id="j", site="a", start_s=2 * HOUR)]
    placements, notes = holds.start_unprofitable_holds(snap, held, _slots(6), {"a": [0.0] * 24})
    assert placements == held
    assert notes == []
