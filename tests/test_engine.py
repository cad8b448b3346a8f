"""The fleet simulator: physics bookkeeping, plan application and scoring.

Tiny hand-built scenarios and tiny hand-written policies, so every number can be
worked out by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatshift import model
from heatshift.sim import engine

import builders

HOUR = 3600.0
STEP = 900.0


# --- builders -----------------------------------------------------------------------


make_scenario = builders.scenario


def quiet_site(name: str = "a", **kw: float) -> model.Site:
    """A site whose numbers are easy: no idle power, 1 kW per GPU, all heat recovered."""
    args: dict[str, float] = {
        "cpu": 8,
        "memory_gib": 64,
        "gpu": 4,
        "idle_watts": 0,
        "watts_per_gpu": 1000,
        "watts_per_cpu": 0,
        "efficiency": 1.0,
        "tank_kwh": 10,
        "loss_per_hour": 0.0,
        "max_thermal_kw": 100,
    }
    args.update(kw)
    return builders.site(
        name,
        cpu=args["cpu"],
        memory_gib=args["memory_gib"],
        gpu=int(args["gpu"]),
        idle_watts=args["idle_watts"],
        watts_per_gpu=args["watts_per_gpu"],
        watts_per_cpu=args["watts_per_cpu"],
        efficiency=args["efficiency"],
        tank_kwh=args["tank_kwh"],
        loss_per_hour=args["loss_per_hour"],
        max_thermal_kw=args["max_thermal_kw"],
    )


def job(
    job_id: str,
    *,
    release_s: float = 0.0,
    deadline_s: float | None = None,
    duration_s: float = HOUR,
    gpu: int = 1,
    cpu: float = 1,
    power_watts: float | None = None,
    sites: set[str] | None = None,
) -> model.JobRequest:
    return model.JobRequest(
        id=job_id,
        resources=model.Resources(cpu=cpu, memory_gib=1, gpu=gpu),
        duration_s=duration_s,
        power_watts=power_watts,
        release_s=release_s,
        deadline_s=release_s + 6 * HOUR if deadline_s is None else deadline_s,
        allowed_sites=None if sites is None else frozenset(sites),
    )


# --- test policies ------------------------------------------------------------------


class StartAllAt:
    """Starts every released pending job at one site, now: over-commits when it is full."""

    needs_foresight = False

    def __init__(self, site: str, name: str = "start-all") -> None:
        self.site = site
        self.name = name
        self.snapshots: list[model.Snapshot] = []

    def decide(self, snapshot: model.Snapshot) -> model.Plan:
        self.snapshots.append(snapshot)
        return model.Plan(
            now_s=snapshot.now_s,
            placements=tuple(
                model.Placement(job_id=j.id, site=self.site, start_s=snapshot.now_s)
                for j in snapshot.pending
                if j.release_s <= snapshot.now_s
            ),
            status=model.SolveStatus.HEURISTIC,
        )


class Never:
    """Never starts anything."""

    name = "never"

    def __init__(self, needs_foresight: bool = False) -> None:
        self.needs_foresight = needs_foresight
        self.snapshots: list[model.Snapshot] = []

    def decide(self, snapshot: model.Snapshot) -> model.Plan:
        self.snapshots.append(snapshot)
        return model.Plan(now_s=snapshot.now_s, status=model.SolveStatus.EMPTY)


class Scripted:
    """Returns the same placements at every decision (the simulator must not repeat them)."""

    name = "scripted"
    needs_foresight = False

    def __init__(self, placements: Sequence[tuple[str, str, float]]) -> None:
        self.placements = tuple(
            model.Placement(job_id=j, site=s, start_s=t) for j, s, t in placements
        )
        self.calls: list[float] = []

    def decide(self, snapshot: model.Snapshot) -> model.Plan:
        self.calls.append(snapshot.now_s)
        return model.Plan(
            now_s=snapshot.now_s,
            placements=tuple(p for p in self.placements if p.start_s >= snapshot.now_s - 1e-9)
            if self.calls[1:]
            else self.placements,
            status=model.SolveStatus.HEURISTIC,
        )


def peak_usage(
    result: engine.SimResult, jobs: Sequence[model.JobRequest], site: str
) -> tuple[float, float, int]:
    """Most CPU, memory and GPUs running at ``site`` at once, from the start times."""
    by_id = {j.id: j for j in jobs}
    runs = [
        (s.start_s, s.start_s + by_id[i].duration_s, by_id[i].resources)
        for i, s in result.starts.items()
        if s.site == site
    ]
    peak = (0.0, 0.0, 0)
    for t, _, _ in runs:
        live = [r for start, end, r in runs if start <= t < end]
        use = (
            sum(r.cpu for r in live),
            sum(r.memory_gib for r in live),
            sum(r.gpu for r in live),
        )
        peak = (max(peak[0], use[0]), max(peak[1], use[1]), max(peak[2], use[2]))
    return peak


# --- energy ---------------------------------------------------------------------------


def test_energy_balances_per_site_on_a_hand_checked_case() -> None:
    site = quiet_site(tank_kwh=1.0)
    jobs = [job("j1", gpu=2, duration_s=HOUR)]
    result = engine.simulate(make_scenario([site], jobs, demand={"a": 1.0}), StartAllAt("a"))
    totals = result.sites["a"]
    # 2 kW for one hour, 1 kW demand over two hours; a 1 kWh tank.
    assert totals.recovered_kwh == pytest.approx(2.0)
    assert totals.demand_kwh == pytest.approx(2.0)
    assert totals.delivered_kwh == pytest.approx(1.0 + 1.0)  # tank carries 1 kWh over
    assert totals.dumped_kwh == pytest.approx(0.0)
    assert totals.tank_end_kwh == pytest.approx(0.0)
    assert abs(totals.energy_balance_error_kwh) < 1e-6


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 5 * HOUR),  # release
            st.floats(60, 4 * HOUR),  # duration
            st.integers(0, 5),  # gpus (5 fits nowhere)
            st.sampled_from(["a", "b"]),  # where the policy puts it
        ),
        max_size=12,
    ),
    st.lists(st.floats(0, 40), min_size=24, max_size=24),
    st.floats(0, 20),
    st.floats(0, 0.2),
)
def test_energy_balances_and_capacity_holds_for_any_trace(
    trace: list[tuple[float, float, int, str]],
    demand: list[float],
    initial_tank: float,
    loss: float,
) -> None:
    sites = [
        quiet_site("a", tank_kwh=20, loss_per_hour=loss, idle_watts=200, max_thermal_kw=25),
        quiet_site("b", tank_kwh=5, efficiency=0.8, gpu=2),
    ]
    jobs = [
        job(f"j{i}", release_s=r, duration_s=d, gpu=g, deadline_s=r + 0.5 * HOUR)
        for i, (r, d, g, _) in enumerate(trace)
    ]
    where = {f"j{i}": s for i, (*_, s) in enumerate(trace)}

    class Mixed:
        name = "mixed"
        needs_foresight = False

        def decide(self, snapshot: model.Snapshot) -> model.Plan:
            return model.Plan(
                now_s=snapshot.now_s,
                placements=tuple(
                    model.Placement(job_id=j.id, site=where[j.id], start_s=snapshot.now_s)
                    for j in snapshot.pending
                ),
                status=model.SolveStatus.HEURISTIC,
            )

    scenario = make_scenario(
        sites,
        jobs,
        hours=6,
        demand={"a": demand, "b": demand[::-1]},
        tank={"a": initial_tank},
    )
    result = engine.simulate(scenario, Mixed())
    for site in sites:
        totals = result.sites[site.name]
        assert abs(totals.energy_balance_error_kwh) < 1e-6
        assert totals.delivered_kwh <= totals.demand_kwh + 1e-9
        assert all(
            0 <= e <= site.tank.capacity_kwh + 1e-9 for e in result.series[site.name].tank_kwh
        )
        cpu, mem, gpu = peak_usage(result, jobs, site.name)
        assert cpu <= site.capacity.cpu and mem <= site.capacity.memory_gib
        assert gpu <= site.capacity.gpu
    assert set(result.unschedulable) == {j.id for j in jobs if j.resources.gpu > 4}
    assert not set(result.unschedulable) & set(result.starts)


def test_demand_is_capped_at_the_offtakers_rating() -> None:
    site = quiet_site(max_thermal_kw=10, tank_kwh=0)
    policy = Never()
    result = engine.simulate(make_scenario([site], demand={"a": 100.0}, hours=1), policy)
    assert result.series["a"].demand_kw == (10.0,) * 4
    assert result.sites["a"].demand_kwh == pytest.approx(10.0)
    assert result.sites["a"].boiler_kwh == pytest.approx(10.0)
    # The meter reads what the building wants; capping is the planner's business.
    assert policy.snapshots[0].states["a"].demand_kw == 100.0


def test_a_job_that_starts_mid_step_counts_its_energy_pro_rata() -> None:
    site = quiet_site(tank_kwh=0)
    # Placed to start half-way through the first step; runs 600 s: 450 s, then 150 s.
    jobs = [job("j", duration_s=600, power_watts=4000)]
    result = engine.simulate(make_scenario([site], jobs, hours=1), Scripted([("j", "a", 450.0)]))
    assert result.starts["j"] == engine.JobStart("a", 450.0)
    assert result.series["a"].it_kw[:3] == pytest.approx((2.0, 4000 * 150 / 900 / 1000, 0.0))
    assert result.sites["a"].recovered_kwh == pytest.approx(4.0 * 600 / 3600)


def test_it_power_comes_from_the_power_model_without_an_explicit_figure() -> None:
    site = quiet_site(idle_watts=500, watts_per_gpu=1000, watts_per_cpu=10, efficiency=0.5)
    jobs = [job("j", gpu=2, cpu=4, duration_s=2 * HOUR)]
    result = engine.simulate(make_scenario([site], jobs, hours=1), StartAllAt("a"))
    assert result.series["a"].it_kw == pytest.approx((2.54,) * 4)
    assert result.sites["a"].recovered_kwh == pytest.approx(0.5 * 2.54)


# --- applying plans -------------------------------------------------------------------


def test_over_commit_is_refused_and_counted_and_capacity_is_never_exceeded() -> None:
    site = quiet_site(gpu=4)
    jobs = [job(f"j{i}", gpu=2, duration_s=HOUR, deadline_s=3 * HOUR) for i in range(3)]
    result = engine.simulate(make_scenario([site], jobs, hours=3), StartAllAt("a"))
    assert peak_usage(result, jobs, "a")[2] == 4
    # The third waits for room: refused at each decision of the first hour.
    assert result.rejected_placements == 4
    assert result.starts["j2"].start_s == HOUR
    assert result.deadline_misses == ()


def test_placements_at_a_site_the_job_may_not_use_are_refused() -> None:
    sites = [quiet_site("a"), quiet_site("b")]
    jobs = [job("j", sites={"b"})]
    result = engine.simulate(make_scenario(sites, jobs, hours=1), Scripted([("j", "a", 0.0)]))
    assert "j" not in result.starts
    assert result.rejected_placements == 1


def test_placements_of_unknown_or_unreleased_jobs_are_refused() -> None:
    jobs = [job("later", release_s=HOUR)]
    policy = Scripted([("ghost", "a", 0.0), ("later", "a", 0.0)])
    result = engine.simulate(make_scenario([quiet_site()], jobs, hours=2), policy)
    assert result.rejected_placements == 2
    assert "later" not in result.starts


def test_a_plans_future_placements_are_followed_between_decisions() -> None:
    jobs = [job("j")]
    policy = Scripted([("j", "a", 1800.0)])
    result = engine.simulate(make_scenario([quiet_site()], jobs), policy, replan_every_s=HOUR)
    assert policy.calls == [0.0, HOUR]
    assert result.starts["j"] == engine.JobStart("a", 1800.0)
    assert result.decisions == 2
    assert result.rejected_placements == 0


def test_a_start_a_hair_before_a_step_boundary_starts_at_that_boundary() -> None:
    jobs = [job("j")]
    policy = Scripted([("j", "a", STEP - 1e-7)])
    scenario = make_scenario([quiet_site()], jobs, hours=1)
    result = engine.simulate(scenario, policy, replan_every_s=HOUR)
    assert result.starts["j"].start_s == pytest.approx(STEP)
    assert result.rejected_placements == 0


def test_replanning_interval_is_rounded_up_to_whole_steps() -> None:
    policy = Never()
    engine.simulate(make_scenario([quiet_site()], hours=2), policy, replan_every_s=1000.0)
    assert [s.now_s for s in policy.snapshots] == [0.0, 1800.0, 3600.0, 5400.0]


def test_finished_jobs_free_their_resources() -> None:
    site = quiet_site(gpu=1)
    jobs = [job("j1", duration_s=1000), job("j2", duration_s=HOUR)]
    result = engine.simulate(make_scenario([site], jobs), StartAllAt("a"))
    assert result.starts["j1"].start_s == 0.0
    assert result.starts["j2"].start_s == 2 * STEP  # first boundary after j1 ended at 1000 s
    assert result.jobs_completed == 2


# --- arrivals and deadlines -----------------------------------------------------------


def test_an_urgent_arrival_gets_a_decision_at_its_release() -> None:
    jobs = [job("urgent", release_s=300.0, deadline_s=600.0, power_watts=3600.0)]
    policy = StartAllAt("a")
    result = engine.simulate(make_scenario([quiet_site(tank_kwh=0)], jobs, hours=1), policy)
    assert result.starts["urgent"] == engine.JobStart("a", 300.0)
    assert result.deadline_misses == ()
    assert result.urgent_decisions == 1
    assert [s.now_s for s in policy.snapshots] == [0.0, 300.0, 900.0, 1800.0, 2700.0]
    assert policy.snapshots[1].pending == tuple(jobs)
    # Energy from its start, not from the step's.
    assert result.series["a"].it_kw[0] == pytest.approx(3.6 * 600 / 900)


def test_an_arrival_that_can_wait_for_the_next_decision_does() -> None:
    jobs = [job("calm", release_s=300.0, deadline_s=900.0)]
    policy = StartAllAt("a")
    result = engine.simulate(make_scenario([quiet_site()], jobs, hours=1), policy)
    assert result.starts["calm"].start_s == 900.0
    assert result.urgent_decisions == 0


def test_with_slow_replanning_an_arrival_urgent_before_the_next_decision_is_decided() -> None:
    jobs = [job("j", release_s=1000.0, deadline_s=2000.0)]
    policy = StartAllAt("a")
    result = engine.simulate(
        make_scenario([quiet_site()], jobs, hours=2), policy, replan_every_s=HOUR
    )
    assert result.starts["j"].start_s == 1000.0
    assert [s.now_s for s in policy.snapshots] == [0.0, 1000.0, HOUR]


def test_deadline_misses_count_late_starts_and_jobs_never_started() -> None:
    jobs = [
        job("late", deadline_s=600.0),
        job("never", deadline_s=HOUR),
        job("beyond", deadline_s=10 * HOUR),  # its deadline is after the scenario's end
        job("on-time", deadline_s=1800.0),
    ]
    policy = Scripted([("late", "a", 900.0), ("on-time", "a", 1800.0)])
    result = engine.simulate(make_scenario([quiet_site()], jobs, hours=2), policy)
    assert set(result.deadline_misses) == {"late", "never"}
    assert result.metrics()["deadline_misses"] == 2
    # Waits: 900 and 1800 for the two started, the end of the run for the other two.
    assert result.mean_wait_s == pytest.approx((900 + 1800 + 7200 + 7200) / 4)


def test_unschedulable_jobs_are_reported_not_dropped_and_not_misses() -> None:
    sites = [quiet_site("a", gpu=4), quiet_site("b", gpu=2)]
    jobs = [
        job("too-big", gpu=8, deadline_s=600.0),
        job("nowhere", sites={"gone"}, deadline_s=600.0),
        job("too-big-for-b", gpu=4, sites={"b"}, deadline_s=600.0),
        job("fine", gpu=1),
    ]
    policy = StartAllAt("a")
    result = engine.simulate(make_scenario(sites, jobs, hours=1), policy)
    assert set(result.unschedulable) == {"too-big", "nowhere", "too-big-for-b"}
    assert result.deadline_misses == ()
    metrics = result.metrics()
    assert metrics["jobs_total"] == 4
    assert metrics["jobs_unschedulable"] == 3
    assert {j.id for j in policy.snapshots[0].pending} == {"fine"}


# --- what policies see ----------------------------------------------------------------


def test_normal_snapshots_hold_the_meters_view_only() -> None:
    demand = [float(i) for i in range(16)]
    jobs = [job("now"), job("soon", release_s=HOUR)]
    policy = Never()
    engine.simulate(make_scenario([quiet_site()], jobs, hours=4, demand={"a": demand}), policy)
    first, fifth = policy.snapshots[0], policy.snapshots[4]
    assert first.states["a"].demand_history is None
    assert first.states["a"].demand_forecast is None
    assert [j.id for j in first.pending] == ["now"]
    assert fifth.now_s == HOUR
    assert fifth.states["a"].demand_kw == 4.0
    assert fifth.states["a"].demand_forecast is None
    history = fifth.states["a"].demand_history
    assert history is not None and history.kw == (0.0, 1.0, 2.0, 3.0)
    assert history.end_s == HOUR
    assert [j.id for j in fifth.pending] == ["now", "soon"]


def test_foresight_snapshots_hold_the_true_future_and_arrivals_in_the_horizon() -> None:
    demand = [float(i) for i in range(16)]
    jobs = [job("now"), job("soon", release_s=HOUR), job("later", release_s=3 * HOUR)]
    policy = Never(needs_foresight=True)
    engine.simulate(
        make_scenario([quiet_site()], jobs, hours=4, demand={"a": demand}),
        policy,
        horizon_s=2 * HOUR,
    )
    first = policy.snapshots[0]
    forecast = first.states["a"].demand_forecast
    assert forecast is not None
    assert forecast.start_s == 0.0 and forecast.kw == tuple(demand[:8])
    assert [j.id for j in first.pending] == ["now", "soon"]
    # Near the end the forecast stops with the scenario.
    last = policy.snapshots[-1]
    assert last.states["a"].demand_forecast is not None
    assert last.states["a"].demand_forecast.kw == (15.0,)
    assert [j.id for j in last.pending] == ["now", "soon", "later"]


def test_running_jobs_appear_in_snapshots_until_they_end() -> None:
    jobs = [job("j", duration_s=1000, power_watts=1234)]
    policy = StartAllAt("a")
    engine.simulate(make_scenario([quiet_site()], jobs, hours=1), policy)
    (running,) = policy.snapshots[1].running
    assert running == model.RunningJob(
        id="j", site="a", resources=jobs[0].resources, power_watts=1234, end_s=1000
    )
    assert policy.snapshots[2].running == ()


def test_tank_state_in_snapshots_follows_the_physics() -> None:
    site = quiet_site(tank_kwh=10)
    jobs = [job("j", power_watts=4000, duration_s=HOUR)]
    policy = StartAllAt("a")
    result = engine.simulate(make_scenario([site], jobs, hours=1), policy)
    seen = [s.states["a"].tank_energy_kwh for s in policy.snapshots[1:]]
    assert seen == pytest.approx(list(result.series["a"].tank_kwh[:-1]))
    assert seen == pytest.approx([1.0, 2.0, 3.0])


# --- heat reuse counts only heat recovered in the run (issue 13) ----------------------


def test_heat_reuse_above_100_percent_from_a_full_tank_is_not_reuse() -> None:
    # A full tank and a little idle heat: the building takes 2 kWh, 0.2 kWh was recovered.
    site = quiet_site(tank_kwh=10, idle_watts=100)
    scenario = make_scenario([site], demand={"a": 1.0}, tank={"a": 10.0})
    result = engine.simulate(scenario, Never())
    totals, metrics = result.sites["a"], result.metrics()
    assert totals.delivered_kwh == pytest.approx(2.0)
    assert totals.recovered_kwh == pytest.approx(0.2)
    assert totals.delivered_kwh / totals.recovered_kwh == pytest.approx(10.0)  # the old "1000 %"
    assert 0 < totals.reused_kwh < totals.recovered_kwh
    ratio = metrics["heat_reuse_ratio"]
    assert isinstance(ratio, float) and 0.0 < ratio < 0.2
    assert metrics["initial_tank_kwh"] == 10.0
    assert metrics["useful_heat_kwh"] == pytest.approx(2.0)  # still all heat delivered


def test_with_an_empty_tank_at_the_start_every_delivered_kwh_is_reuse() -> None:
    site = quiet_site(tank_kwh=5, loss_per_hour=0.05)
    jobs = [job("j", gpu=3, duration_s=HOUR)]
    scenario = make_scenario([site], jobs, demand={"a": [1.0, 0, 0, 0, 2, 2, 2, 2]})
    totals = engine.simulate(scenario, StartAllAt("a")).sites["a"]
    assert totals.reused_kwh == pytest.approx(totals.delivered_kwh)


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.floats(0, 5 * HOUR), st.floats(60, 4 * HOUR), st.integers(0, 4)),
        max_size=10,
    ),
    st.lists(st.floats(0, 40), min_size=24, max_size=24),
    st.tuples(st.floats(0, 20), st.floats(0, 5)),
    st.floats(0, 0.3),
    st.sampled_from(["start-all", "never"]),
)
def test_heat_reuse_ratio_is_within_0_and_1_and_energy_is_conserved(
    trace: list[tuple[float, float, int]],
    demand: list[float],
    initial: tuple[float, float],
    loss: float,
    policy_name: str,
) -> None:
    sites = [
        quiet_site("a", tank_kwh=20, loss_per_hour=loss, idle_watts=300, max_thermal_kw=25),
        quiet_site("b", tank_kwh=5, efficiency=0.8, gpu=2, loss_per_hour=loss),
    ]
    jobs = [
        job(f"j{i}", release_s=r, duration_s=d, gpu=g, deadline_s=r + HOUR)
        for i, (r, d, g) in enumerate(trace)
    ]
    scenario = make_scenario(
        sites,
        jobs,
        hours=6,
        demand={"a": demand, "b": demand[::-1]},
        tank={"a": initial[0], "b": initial[1]},
    )
    policy = StartAllAt("a") if policy_name == "start-all" else Never()
    result = engine.simulate(scenario, policy)
    m = result.metrics()
    ratio = m["heat_reuse_ratio"]
    assert isinstance(ratio, float) and 0.0 <= ratio <= 1.0
    numbers = {k: v for k, v in m.items() if isinstance(v, float)}
    assert numbers["initial_tank_kwh"] + numbers["recoverable_heat_kwh"] == pytest.approx(
        numbers["useful_heat_kwh"]
        + numbers["dumped_heat_kwh"]
        + numbers["tank_loss_kwh"]
        + numbers["final_tank_kwh"],
        abs=1e-6,
    )
    for totals in result.sites.values():
        assert -1e-9 <= totals.reused_kwh <= min(totals.recovered_kwh, totals.delivered_kwh) + 1e-9


# --- results --------------------------------------------------------------------------


def test_metrics_have_exactly_the_documented_keys() -> None:
    result = engine.simulate(
        make_scenario([quiet_site()], [job("j")], demand={"a": 1.0}), StartAllAt("a")
    )
    metrics = result.metrics()
    assert list(metrics) == builders.SIMULATE_RESULT_KEYS
    assert metrics["policy"] == "start-all"
    assert metrics["heat_reuse_ratio"] == pytest.approx(
        result.sites["a"].delivered_kwh / result.sites["a"].recovered_kwh
    )
    demand, useful = metrics["demand_kwh"], metrics["useful_heat_kwh"]
    assert isinstance(demand, float) and isinstance(useful, float)
    assert metrics["boiler_heat_kwh"] == pytest.approx(demand - useful)
    assert len(result.plan_seconds) == result.decisions == 8
    assert metrics["plan_seconds_max"] == max(result.plan_seconds)


def test_series_have_one_value_per_step() -> None:
    result = engine.simulate(make_scenario([quiet_site(), quiet_site("b")], hours=2), Never())
    assert result.times_s == tuple(i * STEP for i in range(8))
    for series in result.series.values():
        for values in (series.demand_kw, series.delivered_kw, series.tank_kwh, series.it_kw):
            assert len(values) == 8


def test_progress_reports_fractions_up_to_one() -> None:
    seen: list[float] = []
    report: Callable[[float], None] = seen.append
    engine.simulate(make_scenario([quiet_site()], hours=1), Never(), progress=report)
    assert seen == [0.25, 0.5, 0.75, 1.0]


def test_one_1_kw_job_for_an_hour_at_a_0_5_kw_demand_has_ere_0_5_and_avoids_0_56_kwh_of_gas() -> (
    None
):
    # 1 kWh of IT, all recovered; the building takes 0.5 kW for 2 h: 1 kWh delivered in all
    # (0.5 while the job runs, 0.5 from the tank after), all of it recovered in the run, so
    # ERE = (1 - 1) / 1 = 0; gas at 0.9 and 0.202 kg/kWh by default.
    result = engine.simulate(
        make_scenario([quiet_site()], [job("j")], demand={"a": 0.5}), StartAllAt("a")
    )
    figures = result.site_ledger()["a"]
    assert figures["it_energy_kwh"] == pytest.approx(1.0)
    assert figures["heat_delivered_kwh"] == pytest.approx(1.0)
    assert figures["ere"] == pytest.approx(0.0)
    assert figures["fuel_avoided_kwh"] == pytest.approx(1.0 / 0.9)
    assert figures["co2_avoided_kg"] == pytest.approx(1.0 / 0.9 * 0.202)
    metrics = result.metrics()
    assert metrics["ere"] == pytest.approx(0.0)
    assert metrics["fuel_avoided_kwh"] == pytest.approx(figures["fuel_avoided_kwh"])


def test_half_the_heat_dumped_gives_an_ere_of_0_5() -> None:
    # 1 kWh of IT in the first hour, the building takes 0.5 kW and there is no tank: 0.5 kWh
    # reused, 0.5 kWh dumped, ERE = (1 - 0.5) / 1.
    result = engine.simulate(
        make_scenario([quiet_site(tank_kwh=0)], [job("j")], demand={"a": 0.5}), StartAllAt("a")
    )
    figures = result.site_ledger()["a"]
    assert figures["heat_delivered_kwh"] == pytest.approx(0.5)
    assert figures["heat_dumped_kwh"] == pytest.approx(0.5)
    assert figures["ere"] == pytest.approx(0.5)
