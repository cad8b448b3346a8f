"""The useful-heat bound: no schedule that misses no deadline beats it, and it is not loose
where the answer is known.

Random small scenarios are played through the real simulator with random deadline-meeting
schedules and with every policy; the bound (one LP over the whole run) must be at least each
result's useful heat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from heatshift import bench, model
from heatshift.planner import bound as planner_bound
from heatshift.planner import checker, policies
from heatshift.planner import config as planner_config
from heatshift.sim import bound as sim_bound
from heatshift.sim import engine
from heatshift.sim import scenario as scenario_mod

import builders

HOUR = 3600.0
STEP = 900.0


class FixedSchedule:
    """Starts each job at the site and time given, re-offering it until it has started."""

    name = "fixed"
    needs_foresight = False

    def __init__(self, schedule: Mapping[str, tuple[str, float]], jobs: Mapping[str, float]):
        self.schedule = schedule
        self.release = jobs

    def decide(self, snapshot: model.Snapshot) -> model.Plan:
        pending = {j.id for j in snapshot.pending}
        placements = tuple(
            model.Placement(job_id=job_id, site=site, start_s=max(start, snapshot.now_s))
            for job_id, (site, start) in self.schedule.items()
            if job_id in pending or self.release[job_id] > snapshot.now_s
        )
        return model.Plan(
            now_s=snapshot.now_s, placements=placements, status=model.SolveStatus.HEURISTIC
        )


@st.composite
def scenarios(draw: st.DrawFn) -> scenario_mod.Scenario:
    hours = draw(st.sampled_from([1.0, 2.0, 3.0]))
    steps = round(hours * HOUR / STEP)
    sites = [
        builders.site(
            name,
            cpu=16,
            memory_gib=64,
            gpu=draw(st.integers(1, 4)),
            idle_watts=draw(st.floats(0, 2000)),
            watts_per_gpu=draw(st.floats(100, 1000)),
            watts_per_cpu=draw(st.floats(0, 20)),
            efficiency=draw(st.floats(0.5, 1.0)),
            tank_kwh=draw(st.floats(0, 20)),
            loss_per_hour=draw(st.floats(0, 0.2)),
            max_thermal_kw=draw(st.floats(1, 30)),
        )
        for name in ("a", "b", "c")[: draw(st.integers(1, 3))]
    ]
    names = [s.name for s in sites]
    jobs = []
    for i in range(draw(st.integers(0, 6))):
        release = draw(st.floats(0, hours * HOUR))
        allowed = draw(st.none() | st.sets(st.sampled_from(names), min_size=1))
        jobs.append(
            model.JobRequest(
                id=f"j{i}",
                resources=model.Resources(
                    cpu=draw(st.integers(0, 8)), memory_gib=8, gpu=draw(st.integers(0, 2))
                ),
                duration_s=draw(st.floats(60, 3 * HOUR)),
                power_watts=draw(st.none() | st.floats(0, 3000)),
                release_s=release,
                deadline_s=release + draw(st.sampled_from([0.0, 600.0, HOUR, 2 * HOUR])),
                allowed_sites=None if allowed is None else frozenset(allowed),
            )
        )
    demand = {
        s.name: draw(st.lists(st.floats(0, 40), min_size=steps, max_size=steps)) for s in sites
    }
    tank = {s.name: draw(st.floats(0, s.tank.capacity_kwh)) for s in sites}
    return builders.scenario(sites, jobs, hours=hours, step_s=STEP, demand=demand, tank=tank)


def _bound(
    scenario: scenario_mod.Scenario,
    *,
    optimal: bool = True,
    merge_jobs: bool | None = None,
    deadlines: bool = True,
) -> float:
    found = sim_bound.scenario_bound(scenario, merge_jobs=merge_jobs, deadlines=deadlines)
    if optimal:
        expected = (
            planner_bound.BoundStatus.OPTIMAL
            if deadlines
            else planner_bound.BoundStatus.DEADLINES_DROPPED
        )
        assert found.status is expected
    return found.useful_heat_kwh


def _programme_args(
    scenario: scenario_mod.Scenario,
) -> tuple[
    Sequence[model.Site],
    list[float],
    Mapping[str, Sequence[float]],
    Mapping[str, float],
    list[model.JobRequest],
]:
    """``useful_heat_bound``'s arguments for the scenario, as :mod:`heatshift.sim.bound` builds
    them."""
    steps = engine.step_count(scenario)
    return (
        scenario.sites,
        [i * scenario.step_s for i in range(steps + 1)],
        engine.capped_demand_kw(scenario),
        scenario.initial_tank_kwh,
        [j for j in scenario.jobs if engine.fits_somewhere(j, scenario.sites)],
    )


def _at_most(useful: float, bound: float) -> bool:
    return useful <= bound + 1e-6 * (1.0 + bound)


def _random_schedule(
    scenario: scenario_mod.Scenario,
    data: st.DataObject,
    latest: Callable[[model.JobRequest], float],
) -> FixedSchedule:
    """Each job that fits somewhere at a drawn site, started between release and ``latest``."""
    schedule: dict[str, tuple[str, float]] = {}
    for job in scenario.jobs:
        hosts = [
            s.name
            for s in scenario.sites
            if job.may_run_at(s.name) and job.resources.fits_within(s.capacity)
        ]
        if not hosts:
            continue
        # Ends of the window as often as the inside: that is where runs line up with steps.
        where = data.draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
        start = job.release_s + where * (latest(job) - job.release_s)
        schedule[job.id] = (data.draw(st.sampled_from(hosts)), start)
    return FixedSchedule(schedule, {j.id: j.release_s for j in scenario.jobs})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(scenarios(), st.data())
def test_no_deadline_meeting_schedule_beats_the_bound(
    scenario: scenario_mod.Scenario, data: st.DataObject
) -> None:
    policy = _random_schedule(scenario, data, lambda job: job.deadline_s)
    result = engine.simulate(scenario, policy)
    assume(not result.deadline_misses)  # a refused start (site full) can make one late
    useful: float = result.metrics()["useful_heat_kwh"]  # type: ignore[assignment]
    assert _at_most(useful, _bound(scenario))
    # The coarser programme past the size budget (each shape's jobs merged) is a limit too.
    assert _at_most(useful, _bound(scenario, merge_jobs=True))


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.data())
def test_no_schedule_at_all_beats_the_bound_with_deadlines_dropped(
    scenario: scenario_mod.Scenario, data: st.DataObject
) -> None:
    # Starts anywhere from release to the end of the run, deadlines or not: what a plan for
    # an overloaded fleet (where none meets them all) may do.
    end = engine.step_count(scenario) * scenario.step_s
    policy = _random_schedule(scenario, data, lambda job: max(job.release_s, end))
    useful: float = engine.simulate(scenario, policy).metrics()["useful_heat_kwh"]  # type: ignore[assignment]
    for merge_jobs in (False, True):
        assert _at_most(useful, _bound(scenario, merge_jobs=merge_jobs, deadlines=False))


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_merging_jobs_by_shape_only_loosens_the_bound(scenario: scenario_mod.Scenario) -> None:
    exact = sim_bound.scenario_bound(scenario, merge_jobs=False)
    merged = sim_bound.scenario_bound(scenario, merge_jobs=True)
    assume(exact.status is merged.status is planner_bound.BoundStatus.OPTIMAL)
    assert merged.merged and not exact.merged
    assert merged.useful_heat_kwh >= exact.useful_heat_kwh - 1e-6 * (1.0 + exact.useful_heat_kwh)
    assert merged.variables <= exact.variables


def test_jobs_of_one_shape_and_window_merge_without_loss() -> None:
    # Three identical jobs and one of another shape: merging the three changes nothing (any
    # merged solution splits evenly into theirs) but needs a third of their variables.
    site = builders.site("a", gpu=2, idle_watts=0, watts_per_gpu=1000, efficiency=1.0)
    jobs = [builders.job(i, gpu=1, cpu=0, hours=1.0, deadline_h=1.0) for i in ("x", "y", "z")]
    jobs.append(builders.job("w", gpu=0, cpu=2, hours=0.5, deadline_h=0.5))
    demand = {"a": [0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0]}
    scenario = builders.scenario([site], jobs, hours=2.0, demand=demand, tank={"a": 0.0})
    exact = sim_bound.scenario_bound(scenario, merge_jobs=False)
    merged = sim_bound.scenario_bound(scenario, merge_jobs=True)
    assert merged.useful_heat_kwh == pytest.approx(exact.useful_heat_kwh)
    assert merged.variables < exact.variables


def test_a_programme_over_its_size_budget_is_built_with_jobs_merged() -> None:
    scenario = builders.scenario(
        [builders.site("a", gpu=4)],
        [builders.job(f"j{i}", gpu=1, cpu=0, hours=1.0, deadline_h=2.0) for i in range(8)],
        hours=3.0,
        demand={"a": 5.0},
        tank={"a": 0.0},
    )
    args = _programme_args(scenario)
    exact = planner_bound.useful_heat_bound(*args)
    assert not exact.merged
    # A budget the exact programme is over but the merged one fits.
    merged = planner_bound.useful_heat_bound(*args, max_variables=exact.variables - 1)
    assert merged.merged and merged.status is planner_bound.BoundStatus.OPTIMAL
    assert merged.useful_heat_kwh >= exact.useful_heat_kwh - 1e-6


@settings(max_examples=6, deadline=None)
@given(scenarios())
def test_no_policy_beats_the_bound(scenario: scenario_mod.Scenario) -> None:
    # Whichever way the bound came about (the simplex can give up on freak numbers, and the
    # trivial bound stands in), no policy beats it.
    bound = _bound(scenario, optimal=False)
    for name in policies.POLICY_NAMES:
        result = engine.simulate(scenario, policies.make_policy(name))
        if not result.deadline_misses:
            assert _at_most(result.metrics()["useful_heat_kwh"], bound), name  # type: ignore[arg-type]


def test_the_bound_is_exact_when_every_kwh_made_is_wanted() -> None:
    # No losses, demand above anything the site makes: all heat made is delivered, so the
    # limit is the tank's start plus idle heat plus the job's heat inside the run.
    site = builders.site("a", idle_watts=1000, watts_per_gpu=2000, efficiency=0.5, loss_per_hour=0)
    job = builders.job("j", gpu=1, cpu=0, hours=1.5, release_s=HOUR, deadline_h=0.5)
    scenario = builders.scenario([site], [job], hours=2.0, demand={"a": 50.0}, tank={"a": 3.0})
    # The job's 1.5 h from a start in [1 h, 1.5 h] leave at most 1 h inside the run.
    assert _bound(scenario) == pytest.approx(3.0 + 0.5 * 1.0 * 2 + 0.5 * 2.0 * 1.0)


def test_the_bound_counts_what_a_full_site_cannot_run() -> None:
    # Two 1-GPU jobs that must both start now on a 1-GPU site: only one can run at a time,
    # so the bound cannot credit both runs' heat in the first hour.
    site = builders.site(
        "a", gpu=1, idle_watts=0, watts_per_gpu=1000, efficiency=1.0, loss_per_hour=0
    )
    jobs = [builders.job(i, gpu=1, cpu=0, hours=1.0, deadline_h=1.0) for i in ("x", "y")]
    scenario = builders.scenario([site], jobs, hours=1.0, demand={"a": 10.0}, tank={"a": 0.0})
    assert _bound(scenario) == pytest.approx(1.0)


def test_a_job_of_14_nanowatts_on_an_idle_site_still_gets_the_lp_bound() -> None:
    # Found by the property test: a heat coefficient of ~1e-17 kWh made GLOP give up. Raised
    # to a microwatt-hour it is a looser, still valid limit, and the LP solves.
    site = builders.site("a", idle_watts=0.0, efficiency=1.0, loss_per_hour=0.1)
    job = builders.job(
        "j", gpu=0, cpu=1, hours=99 / HOUR, release_s=31.0, deadline_h=1.0, power_watts=1.44e-8
    )
    scenario = builders.scenario(
        [site], [job], hours=1.0, step_s=900.0, demand={"a": 10.0}, tank={"a": 0.0}
    )
    made_kwh = 1.44e-8 * 99 / 3.6e6
    assert made_kwh <= _bound(scenario) < 1e-5


def test_deadlines_no_schedule_meets_leave_the_limit_of_any_schedule() -> None:
    # Both jobs must run throughout the hour on one GPU: no schedule meets both deadlines, so
    # the programme is solved without them. One GPU-hour is all the site can make (the
    # trivial bound, heat made or demanded, would say 2 kWh).
    site = builders.site(
        "a", gpu=1, idle_watts=0, watts_per_gpu=1000, efficiency=1.0, loss_per_hour=0
    )
    jobs = [builders.job(i, gpu=1, cpu=0, hours=2.0, deadline_h=0.0) for i in ("x", "y")]
    scenario = builders.scenario([site], jobs, hours=1.0, demand={"a": 10.0}, tank={"a": 0.0})
    found = sim_bound.scenario_bound(scenario)
    assert found.status is planner_bound.BoundStatus.DEADLINES_DROPPED
    assert found.useful_heat_kwh == pytest.approx(1.0)
    assert "deadlines dropped" in found.how()


def test_an_overloaded_fleets_plan_never_beats_its_horizon_bound() -> None:
    # 1,000 jobs on 20 sites: more work with deadlines than the fleet can start in time, and a
    # programme over the size budget, so the bound is the merged one with deadlines dropped.
    snapshot = bench.generate_snapshot(1000, 20, seed=0)
    cfg = planner_config.PlannerConfig()
    plan = policies.make_policy("heatshift", cfg).decide(snapshot)
    limit = planner_bound.horizon_bound(snapshot, cfg)
    assert limit.bound.status is planner_bound.BoundStatus.DEADLINES_DROPPED
    assert limit.bound.merged
    heat = checker.expected_heat(snapshot, plan.placements, limit.slot_starts, limit.demand_kw)
    assert _at_most(heat.useful_kwh, limit.bound.useful_heat_kwh)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_plans_expected_heat_never_beats_the_horizon_bound(seed: int) -> None:
    snapshot = bench.generate_snapshot(30, 3, seed=seed)
    cfg = planner_config.PlannerConfig(horizon_s=6 * HOUR)
    plan = policies.make_policy("heatshift", cfg).decide(snapshot)
    limit = planner_bound.horizon_bound(snapshot, cfg)
    assert limit.bound.status is planner_bound.BoundStatus.OPTIMAL
    heat = checker.expected_heat(snapshot, plan.placements, limit.slot_starts, limit.demand_kw)
    assert _at_most(heat.useful_kwh, limit.bound.useful_heat_kwh)
    # And every kWh of it is demand the sites' offtakers would take.
    assert (
        limit.bound.useful_heat_kwh
        <= sum(
            d * (limit.slot_starts[k + 1] - limit.slot_starts[k]) / HOUR
            for kw in limit.demand_kw.values()
            for k, d in enumerate(kw)
        )
        + 1e-6
    )


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_a_programme_over_its_size_budget_gives_the_looser_trivial_bound(
    scenario: scenario_mod.Scenario,
) -> None:
    args = _programme_args(scenario)
    trivial = planner_bound.useful_heat_bound(*args, max_variables=0)
    assert trivial.status is planner_bound.BoundStatus.TRIVIAL
    assert trivial.variables == 0
    # The LP raises vanishing energies to a micro-kWh (a looser limit): hence the tolerance.
    lp = planner_bound.useful_heat_bound(*args).useful_heat_kwh
    assert trivial.useful_heat_kwh >= lp - 1e-4
