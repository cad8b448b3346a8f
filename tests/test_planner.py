"""The planner's invariants and heat-aware behaviour.

Every plan goes through the solver-independent checker. Property tests (hypothesis)
draw random fleets: capacity is never exceeded, no job whose deadline could be met is
late, every urgent job starts now, plans are deterministic.
"""

from __future__ import annotations

import math
import random

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatshift import bench, bounds, model
from heatshift.planner import checker, grid, heataware, policies
from heatshift.planner.config import PlannerConfig

import builders as b

FAST = PlannerConfig(time_limit_s=1.0)
# The same search effort as FAST, with wall-clock room to spare on a loaded machine: the
# deterministic limit, not the clock, must be what ends each search.
REPEATABLE = PlannerConfig(time_limit_s=30.0, search_effort=FAST.deterministic_time)
STEP = FAST.step_s
# Two-hour slots from now on: short jobs run in lanes inside a slot.
COARSE = PlannerConfig(time_limit_s=1.0, fine_span_s=0, coarse_step_s=2 * 3600.0)
# The list schedule alone, coarsened from a handful of jobs on.
LIST_SCHEDULED = COARSE.model_copy(
    update={"max_start_variables": 0, "max_list_schedule_options": 100}
)
# Every way the heat-aware planner can make a plan, beside the policies themselves.
PLANNER_SETTINGS = (COARSE, LIST_SCHEDULED)


@st.composite
def fleets(draw: st.DrawFn, ample: bool = False) -> model.Snapshot:
    """A random fleet; with ``ample`` every site can hold every job at once."""
    n_sites = draw(st.integers(1, 3))
    n_jobs = draw(st.integers(0, 14))
    gpus = 8 * n_jobs + 2 if ample else draw(st.integers(2, 16))
    sites = [
        b.site(
            f"s{i}",
            gpu=gpus,
            cpu=8 * max(n_jobs, 4),
            memory_gib=32 * max(n_jobs, 4),
            tank_kwh=draw(st.sampled_from([0.0, 20.0, 80.0])),
        )
        for i in range(n_sites)
    ]
    states = [
        b.state(
            s.name,
            demand_kw=draw(st.floats(0, 60)),
            tank_kwh=draw(st.floats(0, 1)) * s.tank.capacity_kwh,
            forecast=draw(st.lists(st.floats(0, 60), min_size=1, max_size=96)),
            heat_aware=draw(st.booleans()) or True,
        )
        for s in sites
    ]
    pending = []
    for j in range(n_jobs):
        allowed = draw(st.sampled_from([None, {"s0"}, {"s0", "s1"}]))
        pending.append(
            b.job(
                f"j{j}",
                gpu=draw(st.sampled_from([0, 1, 2, 4, 8])),
                cpu=draw(st.sampled_from([1, 4, 8])),
                hours=draw(st.sampled_from([0.1, 0.5, 1, 3, 8, 30])),
                deadline_h=draw(st.sampled_from([0.05, 0.5, 2, 6, 20, 40])),
                release_s=-draw(st.sampled_from([0, 600, 3600])),
                sites=allowed,
                priority=draw(st.integers(0, 3)),
            )
        )
    running = [
        model.RunningJob(
            id=f"r{i}",
            site=sites[i % n_sites].name,
            resources=model.Resources(cpu=1, memory_gib=4, gpu=1),
            power_watts=400,
            end_s=draw(st.sampled_from([900.0, 7200.0, 90000.0])),
        )
        for i in range(draw(st.integers(0, 2)))
    ]
    return b.snapshot(sites, states, pending, running)


def avoidable_lates(snapshot: model.Snapshot, plan: model.Plan) -> list[checker.Violation]:
    """Late starts of jobs whose deadline had not passed yet at planning time."""
    deadlines = {j.id: j.deadline_s for j in snapshot.pending}
    return [
        v
        for v in checker.check_plan(snapshot, plan)
        if v.kind == "late" and deadlines[v.job_id] >= snapshot.now_s
    ]


def assert_sound(snapshot: model.Snapshot, plan: model.Plan, allow_late: bool) -> None:
    violations = checker.check_plan(snapshot, plan)
    hard = [v for v in violations if v.kind != "late"]
    assert not hard, hard
    if not allow_late:
        assert not avoidable_lates(snapshot, plan)
    placed = {p.job_id for p in plan.placements}
    unschedulable = {u.job_id for u in plan.unschedulable}
    assert not placed & unschedulable
    now_ids = {p.job_id for p in plan.starting_before(snapshot.now_s + STEP)}
    for job in snapshot.pending:
        if job.id in unschedulable:
            continue
        if job.deadline_s < snapshot.now_s + STEP and not allow_late:
            assert job.id in now_ids, f"{job.id} must start now"


@settings(max_examples=25)
@given(fleets())
def test_capacity_and_allowed_sites_always_hold(snapshot: model.Snapshot) -> None:
    for name in policies.POLICY_NAMES:
        plan = policies.make_policy(name, FAST).decide(snapshot)
        assert_sound(snapshot, plan, allow_late=True)
    for cfg in PLANNER_SETTINGS:
        assert_sound(snapshot, heataware.plan(snapshot, cfg), allow_late=True)


@settings(max_examples=25)
@given(fleets(ample=True))
def test_no_deadline_is_missed_when_capacity_allows(snapshot: model.Snapshot) -> None:
    for name in policies.POLICY_NAMES:
        plan = policies.make_policy(name, FAST).decide(snapshot)
        assert_sound(snapshot, plan, allow_late=False)
    for cfg in PLANNER_SETTINGS:
        assert_sound(snapshot, heataware.plan(snapshot, cfg), allow_late=False)


@settings(max_examples=10)
@given(fleets())
def test_plans_are_deterministic_for_a_seed(snapshot: model.Snapshot) -> None:
    for cfg in (REPEATABLE, LIST_SCHEDULED):
        first = heataware.plan(snapshot, cfg)
        second = heataware.plan(snapshot, cfg)
        assert first.placements == second.placements
        assert first.status == second.status


@settings(max_examples=10)
@given(fleets(), st.randoms(use_true_random=False))
def test_plans_do_not_depend_on_the_order_jobs_are_listed_in(
    snapshot: model.Snapshot, rng: random.Random
) -> None:
    shuffled = list(snapshot.pending)
    rng.shuffle(shuffled)
    reordered = snapshot.model_copy(update={"pending": tuple(shuffled)})
    for cfg in (REPEATABLE, LIST_SCHEDULED):
        assert heataware.plan(snapshot, cfg).placements == heataware.plan(reordered, cfg).placements


def test_jobs_go_where_heat_is_wanted() -> None:
    sites = [b.site("warm", tank_kwh=0), b.site("cold", tank_kwh=0)]
    states = [
        b.state("warm", demand_kw=0.0, forecast=[0.0] * 96),
        b.state("cold", demand_kw=40.0, forecast=[40.0] * 96),
    ]
    jobs = [b.job(f"j{i}", gpu=2, hours=2, deadline_h=1) for i in range(4)]
    plan = heataware.plan(b.snapshot(sites, states, jobs), FAST)
    assert_sound(b.snapshot(sites, states, jobs), plan, allow_late=False)
    assert {p.site for p in plan.placements} == {"cold"}
    assert plan.expected_useful_heat_kwh > 0


def test_a_flexible_job_waits_for_demand_and_an_urgent_one_does_not() -> None:
    # No demand for the next 4 h, then 30 kW; no tank to bank heat in.
    forecast = [0.0] * 16 + [30.0] * 80
    sites = [b.site("office", tank_kwh=0)]
    states = [b.state("office", demand_kw=0.0, forecast=forecast)]
    flexible = b.job("flexible", gpu=4, hours=2, deadline_h=10)
    urgent = b.job("urgent", gpu=4, hours=2, deadline_h=0.1)
    snapshot = b.snapshot(sites, states, [flexible, urgent])
    plan = heataware.plan(snapshot, FAST)
    assert_sound(snapshot, plan, allow_late=False)
    starts = {p.job_id: p.start_s for p in plan.placements}
    assert starts["urgent"] == 0.0
    assert starts.get("flexible", float("inf")) >= 4 * b.HOUR
    assert not plan.starting_before(STEP) or all(
        p.job_id == "urgent" for p in plan.starting_before(STEP)
    )


def test_a_site_without_metering_is_worth_no_heat() -> None:
    sites = [b.site("blind", tank_kwh=0), b.site("metered", tank_kwh=0)]
    states = [
        b.state("blind", demand_kw=50.0, forecast=[50.0] * 96, heat_aware=False),
        b.state("metered", demand_kw=20.0, forecast=[20.0] * 96),
    ]
    jobs = [b.job("j", gpu=2, hours=1, deadline_h=0.1)]
    plan = heataware.plan(b.snapshot(sites, states, jobs), FAST)
    assert [p.site for p in plan.placements] == ["metered"]


def test_deadlines_hold_when_every_site_is_heat_unaware() -> None:
    sites = [b.site("a"), b.site("b")]
    states = [b.state(s.name, heat_aware=False) for s in sites]
    jobs = [b.job(f"j{i}", gpu=4, deadline_h=0.1) for i in range(4)]
    snapshot = b.snapshot(sites, states, jobs)
    plan = heataware.plan(snapshot, FAST)
    assert_sound(snapshot, plan, allow_late=False)
    assert len(plan.starting_before(STEP)) == 4


def test_a_job_that_fits_nowhere_is_reported_not_dropped() -> None:
    sites = [b.site("small", gpu=4)]
    states = [b.state("small", demand_kw=10)]
    jobs = [b.job("huge", gpu=16), b.job("nowhere", sites={"gone"}), b.job("fine")]
    plan = heataware.plan(b.snapshot(sites, states, jobs), FAST)
    reasons = {u.job_id: u.reason for u in plan.unschedulable}
    assert set(reasons) == {"huge", "nowhere"}
    assert "gpu=16" in reasons["huge"]
    assert "gone" in reasons["nowhere"]


def test_the_deadline_guard_holds_back_a_job_with_slack_to_start_an_urgent_one() -> None:
    sites = [b.site("only", gpu=4)]
    states = [b.state("only", demand_kw=30, forecast=[30.0] * 96)]
    relaxed = b.job("relaxed", gpu=4, deadline_h=10)
    urgent = b.job("urgent", gpu=4, deadline_h=0.1)
    snapshot = b.snapshot(sites, states, [relaxed, urgent])
    wrong = [model.Placement(job_id="relaxed", site="only", start_s=0.0)]
    from heatshift.planner import greedy

    fixed, notes = greedy.enforce_deadlines(snapshot, wrong, STEP)
    assert [p.job_id for p in fixed] == ["urgent"]
    assert notes


def test_a_solver_out_of_time_still_gives_a_sound_plan() -> None:
    sites = [b.site(f"s{i}") for i in range(3)]
    states = [b.state(s.name, demand_kw=20, forecast=[20.0] * 96) for s in sites]
    jobs = [b.job(f"j{i}", gpu=1, deadline_h=0.1 if i % 3 == 0 else 8) for i in range(30)]
    snapshot = b.snapshot(sites, states, jobs)
    plan = heataware.plan(snapshot, PlannerConfig(time_limit_s=0.001))
    assert plan.status in {
        model.SolveStatus.FALLBACK,
        model.SolveStatus.FEASIBLE,
        model.SolveStatus.OPTIMAL,
    }
    assert_sound(snapshot, plan, allow_late=False)


def _large_snapshot() -> model.Snapshot:
    sites = [b.site(f"s{i}", gpu=64, cpu=512, memory_gib=2048) for i in range(12)]
    states = [
        b.state(s.name, demand_kw=10 + i, forecast=[10.0 + i] * 96) for i, s in enumerate(sites)
    ]
    jobs = [
        b.job(f"j{i}", gpu=i % 3, hours=0.5 + i % 7, deadline_h=1 + i % 20, priority=i % 4)
        for i in range(400)
    ]
    return b.snapshot(sites, states, jobs)


def test_a_snapshot_over_the_solver_budget_is_list_scheduled() -> None:
    snapshot = _large_snapshot()
    plan = heataware.plan(snapshot, PlannerConfig(max_start_variables=2000))
    assert_sound(snapshot, plan, allow_late=False)
    assert plan.status is model.SolveStatus.HEURISTIC
    assert any("list schedule" in n for n in plan.notes)
    assert len(plan.placements) == len(snapshot.pending)


def test_a_snapshot_over_the_list_budget_is_coarsened_to_it() -> None:
    snapshot = _large_snapshot()
    cfg = PlannerConfig(max_start_variables=2000, max_list_schedule_options=2000)
    plan = heataware.plan(snapshot, cfg)
    assert_sound(snapshot, plan, allow_late=False)
    note = next(n for n in plan.notes if "classes" in n)
    assert int(note.rsplit(": ", 1)[1].split()[0]) <= 2000, note


def test_short_jobs_share_a_long_slot_one_after_another() -> None:
    # One GPU and two-hour slots: held one per slot, six half-hour jobs would need six
    # slots; run back to back in a lane they need two, all within the 4 h horizon.
    sites = [b.site("pool", gpu=1, cpu=4, memory_gib=16, tank_kwh=0)]
    states = [b.state("pool", demand_kw=30.0, forecast=[30.0] * 96)]
    jobs = [b.job(f"j{i}", gpu=1, cpu=1, hours=0.5, deadline_h=6) for i in range(6)]
    snapshot = b.snapshot(sites, states, jobs)
    plan = heataware.plan(snapshot, COARSE.model_copy(update={"horizon_s": 4 * 3600.0}))
    assert_sound(snapshot, plan, allow_late=False)
    assert sorted(p.start_s / 3600 for p in plan.placements) == [0, 0.5, 1, 1.5, 2, 2.5]


def test_the_list_schedule_runs_short_jobs_in_lanes_too() -> None:
    # Short jobs on one GPU, list-scheduled: held one per two-hour slot, at most 12
    # could run in the day.
    sites = [b.site("pool", gpu=1, cpu=4, memory_gib=16, tank_kwh=0)]
    states = [b.state("pool", demand_kw=30.0, forecast=[30.0] * 96)]
    jobs = [
        b.job(
            f"j{i}",
            gpu=1,
            cpu=1 + i % 2,
            hours=(0.25, 0.5)[i // 2 % 2],
            deadline_h=30,
            priority=i // 4 % 4,
        )
        for i in range(32)
    ]
    snapshot = b.snapshot(sites, states, jobs)
    plan = heataware.plan(snapshot, LIST_SCHEDULED)
    assert plan.status is model.SolveStatus.HEURISTIC
    assert_sound(snapshot, plan, allow_late=False)
    assert len(plan.starting_before(24 * 3600.0)) > 12


def test_the_starting_plan_alone_already_seeks_heat() -> None:
    # With almost no search effort the plan is (close to) the solver's starting plan.
    sites = [b.site("warm", tank_kwh=0), b.site("cold", tank_kwh=0)]
    states = [
        b.state("warm", demand_kw=0.0, forecast=[0.0] * 96),
        b.state("cold", demand_kw=40.0, forecast=[40.0] * 96),
    ]
    jobs = [b.job(f"j{i}", gpu=2, hours=2, deadline_h=1) for i in range(4)]
    snapshot = b.snapshot(sites, states, jobs)
    plan = heataware.plan(snapshot, PlannerConfig(time_limit_s=1.0, search_effort=1e-6))
    assert_sound(snapshot, plan, allow_late=False)
    assert {p.site for p in plan.placements} == {"cold"}


def test_a_job_whose_deadline_lies_past_the_horizon_may_wait_past_it() -> None:
    # No demand for the whole 24 h horizon: a big job due in 30 h would only dump its
    # heat now, which costs more than the day's wait.
    sites = [b.site("office", tank_kwh=0)]
    states = [b.state("office", demand_kw=0.0, forecast=[0.0] * 96)]
    snapshot = b.snapshot(sites, states, [b.job("patient", gpu=8, hours=6, deadline_h=30)])
    plan = heataware.plan(snapshot, FAST)
    assert plan.placements == ()


def test_a_job_arriving_after_the_last_slot_is_not_counted_late() -> None:
    # Foresight snapshots hold future arrivals; one released after the last slot starts
    # cannot be placed yet, and must not drag the objective down as if it were late.
    sites = [b.site("pool", tank_kwh=0)]
    states = [b.state("pool", demand_kw=20.0, forecast=[20.0] * 96)]
    now_job = b.job("now", gpu=2, hours=2, deadline_h=1)
    late_arrival = b.job("later", gpu=2, hours=1, release_s=23.5 * 3600, deadline_h=1)
    snapshot = b.snapshot(sites, states, [now_job, late_arrival])
    plan = heataware.plan(snapshot, FAST)
    assert [p.job_id for p in plan.placements] == ["now"]
    assert plan.objective is not None and plan.objective > 0


# --- bounded by its inputs (issue 13) ------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"horizon_s": 1e-9}, "the planning horizon must be between 5m and 168h"),
        ({"horizon_s": 2_000_000 * 3600.0}, "the planning horizon must be between 5m and 168h"),
        ({"step_s": 1e-300}, "the planning step must be between 1m and 24h"),
        ({"step_s": 0.001}, "the planning step must be between 1m and 24h"),
        ({"coarse_step_s": 1.0}, "the planning step must be between 1m and 24h"),
        ({"time_limit_s": 3600.0}, "the solver time limit must be longer than 0s and at most 5m"),
        ({"time_limit_s": 0.0}, "the solver time limit must be longer than 0s"),
        ({"useful_heat_weight": 1e308}, "less than or equal to 1000000"),
        ({"horizon_s": math.inf}, "finite number"),
        ({"workers": 10_000}, "less than or equal to 64"),
        ({"max_start_variables": 10**12}, "less than or equal to 10000000"),
    ],
)
def test_planner_config_outside_its_bounds_is_rejected_naming_the_bound(
    settings: dict[str, float], expected: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=expected):
        PlannerConfig(**settings)


def test_planner_config_at_its_bounds_is_accepted() -> None:
    for horizon, step in (
        (bounds.PLANNING_HORIZON.low_s, bounds.PLANNING_STEP.low_s),
        (bounds.PLANNING_HORIZON.high_s, bounds.PLANNING_STEP.high_s),
    ):
        cfg = PlannerConfig(horizon_s=horizon, step_s=step, coarse_step_s=step)
        assert (cfg.horizon_s, cfg.step_s) == (horizon, step)


def test_snapshot_at_a_time_past_2100_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="now_s"):
        model.Snapshot(now_s=1e300, sites=(), states={})
    with pytest.raises(pydantic.ValidationError, match="now_s"):
        model.Snapshot(now_s=math.nan, sites=(), states={})


def test_a_job_duration_or_priority_past_its_bound_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="a job's expected duration must be"):
        b.job("j", hours=99999999)
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 10"):
        model.JobRequest(
            id="j",
            resources=model.Resources(),
            duration_s=60,
            release_s=0,
            deadline_s=0,
            priority=11,
        )


def test_an_unvalidated_snapshot_outside_the_bounds_is_refused_before_planning() -> None:
    site = b.site("a")
    good = model.Snapshot(now_s=0.0, sites=(site,), states={"a": b.state("a")})
    bad_time = model.Snapshot.model_construct(**{**dict(good), "now_s": 1e300})
    tiny_step = model.DemandSeries.model_construct(start_s=0.0, step_s=1e-300, kw=(1.0,))
    bad_series = model.Snapshot.model_construct(
        **{
            **dict(good),
            "states": {"a": b.state("a").model_copy(update={"demand_forecast": tiny_step})},
        }
    )
    with pytest.raises(heataware.SnapshotOutOfBounds, match="its time 1e\\+300"):
        heataware.plan(bad_time, FAST)
    with pytest.raises(heataware.SnapshotOutOfBounds, match="site a's demand forecast: a fore"):
        heataware.plan(bad_series, FAST)
    assert heataware.input_problem(good) is None


def test_a_grid_where_float_steps_vanish_is_an_error_not_an_endless_loop() -> None:
    with pytest.raises(ValueError, match="float steps vanish"):
        grid.build_grid(1e300, FAST)
    assert grid.build_grid(0.0, FAST).slots == 6 * 4 + 18  # 6 h of 15 min, then hours


def test_a_plan_cut_by_the_wall_clock_says_so() -> None:
    # A work budget no wall clock this short lets the solver reach, and no early stop at
    # a gap: the clock ends the search, and the plan must say so.
    snapshot = bench.generate_snapshot(120, 4, seed=3)
    cfg = PlannerConfig(time_limit_s=0.05, search_effort=50.0, gap_limit=0.0)
    plan = heataware.plan(snapshot, cfg)
    assert plan.status in {model.SolveStatus.TIMED_OUT, model.SolveStatus.FALLBACK}
    assert any("wall-clock limit" in note for note in plan.notes)
    # Congested: one job finds no room in time even with a full search, and is planned late.
    assert_sound(snapshot, plan, allow_late=True)


def test_a_plan_ended_by_its_work_budget_does_not_claim_a_timeout() -> None:
    snapshot = bench.generate_snapshot(40, 3, seed=5)
    plan = heataware.plan(snapshot, REPEATABLE)
    assert plan.status in {model.SolveStatus.OPTIMAL, model.SolveStatus.FEASIBLE}
    assert not any("wall-clock" in note for note in plan.notes)
