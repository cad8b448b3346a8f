"""Deadlines first: holding work never costs a deadline a heat-unaware cluster would meet.

The regression case of the issue: a burst of long 4-GPU jobs with no slack (and a short
1-GPU one) arrives mid-slot at a fleet that held work for heat it can see coming.
"""

from __future__ import annotations

from heatshift import model
from heatshift.planner import classes, grid, heataware, policies
from heatshift.planner.config import PlannerConfig
from heatshift.sim import engine

import builders

HOUR = 3600.0
REPEATABLE = PlannerConfig(time_limit_s=60.0, search_effort=PlannerConfig().deterministic_time)


def _job(job_id: str, gpu: int, hours: float, release_h: float, slack_h: float) -> model.JobRequest:
    return model.JobRequest(
        id=job_id,
        resources=model.Resources(cpu=4 * gpu, memory_gib=16 * gpu, gpu=gpu),
        duration_s=hours * HOUR,
        release_s=release_h * HOUR,
        deadline_s=(release_h + slack_h) * HOUR,
    )


def test_a_burst_of_no_slack_arrivals_at_a_fleet_full_of_held_work_starts_on_time() -> None:
    # Heat is wanted from hour 4 on (the oracle sees it), none before and no tank: worth
    # holding four 3-hour 2-GPU jobs to run into it. At 4:06 and 4:12 two 18-hour 4-GPU
    # jobs with no slack arrive, at 4:18 a 16-minute 1-GPU one: the held work must not
    # fill the 9 GPUs when they come (before the fix they started 9 and 3 minutes late).
    site = builders.site("a", gpu=9, cpu=72, memory_gib=512, tank_kwh=0, max_thermal_kw=100)
    jobs = [_job(f"slack{i}", 2, 3.0, 0.1, 8.0) for i in range(4)]
    jobs += [_job("burst-a", 4, 18.0, 4.1, 0.0), _job("burst-b", 4, 18.0, 4.2, 0.0)]
    jobs.append(_job("tiny", 1, 16 / 60, 4.3, 0.0))
    scenario = builders.scenario([site], jobs, hours=24, demand={"a": [0.0] * 16 + [100.0] * 80})
    misses = {
        name: engine.simulate(scenario, policies.make_policy(name, REPEATABLE)).deadline_misses
        for name in ("default", "heatshift", "oracle")
    }
    assert misses == {"default": (), "heatshift": (), "oracle": ()}


def test_an_arrival_that_cannot_wait_for_the_next_slot_is_planned_at_its_release() -> None:
    # A foresight snapshot at 0: a no-slack job arrives at 0:06, inside the first slot.
    site = builders.site("a", gpu=4)
    urgent = _job("urgent", 4, 2.0, 0.1, 0.0)
    snap = builders.snapshot([site], [builders.state("a", demand_kw=10)], [urgent])
    g = grid.build_grid(0.0, REPEATABLE)
    (job_class,) = classes.build_classes([urgent], g)
    assert job_class.release_slot == 0
    # It holds the GPUs from the slot's start to its own end.
    assert job_class.duration_s == urgent.duration_s + 0.1 * HOUR
    plan = heataware.plan(snap, REPEATABLE)
    assert [(p.job_id, p.start_s) for p in plan.placements] == [("urgent", 0.1 * HOUR)]


def test_a_plan_that_misses_a_deadline_holds_nothing_for_heat() -> None:
    # Heat is wanted from hour 4 on, so a CPU job with 12 h of slack is held for it: until two
    # no-slack 2-GPU jobs want the site's 2 GPUs at once. One of them is late whatever
    # happens; then the held job starts now (the CPUs have room) and waits for no heat.
    site = builders.site("a", gpu=2, cpu=32, memory_gib=256, tank_kwh=0, max_thermal_kw=100)
    state = builders.state("a", forecast=[0.0] * 16 + [100.0] * 80)
    slack = model.JobRequest(
        id="slack",
        resources=model.Resources(cpu=8, memory_gib=8, gpu=0),
        duration_s=2 * HOUR,
        release_s=0.0,
        deadline_s=12 * HOUR,
    )
    urgent = [_job(f"urgent-{i}", 2, 4.0, 0.0, 0.0) for i in range(2)]

    def starts(jobs: list[model.JobRequest]) -> dict[str, float]:
        plan = heataware.plan(builders.snapshot([site], [state], jobs), REPEATABLE)
        return {p.job_id: p.start_s for p in plan.placements}

    assert starts([slack, urgent[0]])["slack"] >= 4 * HOUR  # held for the heat
    congested = heataware.plan(builders.snapshot([site], [state], [slack, *urgent]), REPEATABLE)
    placed = {p.job_id: p for p in congested.placements}
    assert placed["slack"].start_s == 0.0
    assert "nothing waits for heat" in placed["slack"].reason
    assert any("cannot start every job by its deadline" in n for n in congested.notes)
