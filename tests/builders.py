"""Fluent-ish builders for test objects (the Kueue wrappers idea): readable tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from heatshift import model
from heatshift.sim import scenario as scenario_mod

HOUR = 3600.0

# One result of `heatshift simulate --json`, in order (the output format).
SIMULATE_RESULT_KEYS = [
    "policy",
    "useful_heat_kwh",
    "recoverable_heat_kwh",
    "dumped_heat_kwh",
    "boiler_heat_kwh",
    "demand_kwh",
    "heat_reuse_ratio",
    "initial_tank_kwh",
    "final_tank_kwh",
    "tank_loss_kwh",
    "deadline_misses",
    "jobs_total",
    "jobs_completed",
    "jobs_unschedulable",
    "mean_wait_s",
    "plan_seconds_p50",
    "plan_seconds_max",
    "it_energy_kwh",
    "ere",
    "fuel_avoided_kwh",
    "co2_avoided_kg",
]


def site(
    name: str,
    *,
    cpu: float = 64,
    memory_gib: float = 256,
    gpu: int = 8,
    idle_watts: float = 300,
    watts_per_gpu: float = 500,
    watts_per_cpu: float = 8,
    efficiency: float = 0.85,
    tank_kwh: float = 40,
    loss_per_hour: float = 0.01,
    max_thermal_kw: float = 60,
    kind: model.OfftakerKind = model.OfftakerKind.POOL,
) -> model.Site:
    return model.Site(
        name=name,
        capacity=model.Resources(cpu=cpu, memory_gib=memory_gib, gpu=gpu),
        power=model.PowerModel(
            idle_watts=idle_watts, watts_per_gpu=watts_per_gpu, watts_per_cpu=watts_per_cpu
        ),
        heat_recovery_efficiency=efficiency,
        tank=model.Tank(capacity_kwh=tank_kwh, loss_per_hour=loss_per_hour),
        offtaker=model.Offtaker(kind=kind, max_thermal_kw=max_thermal_kw),
    )


def state(
    name: str,
    *,
    demand_kw: float = 0.0,
    tank_kwh: float = 0.0,
    forecast: list[float] | None = None,
    forecast_step_s: float = 900.0,
    now_s: float = 0.0,
    heat_aware: bool = True,
) -> model.SiteState:
    return model.SiteState(
        site=name,
        tank_energy_kwh=tank_kwh,
        demand_kw=demand_kw,
        demand_forecast=None
        if forecast is None
        else model.DemandSeries(start_s=now_s, step_s=forecast_step_s, kw=tuple(forecast)),
        heat_aware=heat_aware,
        reason="" if heat_aware else "metering down",
    )


def job(
    job_id: str,
    *,
    gpu: int = 1,
    cpu: float = 4,
    memory_gib: float = 16,
    hours: float = 1.0,
    release_s: float = 0.0,
    deadline_h: float = 6.0,
    sites: set[str] | None = None,
    priority: int = 1,
    power_watts: float | None = None,
) -> model.JobRequest:
    return model.JobRequest(
        id=job_id,
        resources=model.Resources(cpu=cpu, memory_gib=memory_gib, gpu=gpu),
        duration_s=hours * HOUR,
        release_s=release_s,
        deadline_s=release_s + deadline_h * HOUR,
        allowed_sites=None if sites is None else frozenset(sites),
        priority=priority,
        power_watts=power_watts,
    )


def snapshot(
    sites: list[model.Site],
    states: list[model.SiteState],
    pending: list[model.JobRequest],
    running: list[model.RunningJob] | None = None,
    now_s: float = 0.0,
) -> model.Snapshot:
    return model.Snapshot(
        now_s=now_s,
        sites=tuple(sites),
        states={s.site: s for s in states},
        pending=tuple(pending),
        running=tuple(running or ()),
    )


def scenario(
    sites: Sequence[model.Site],
    jobs: Sequence[model.JobRequest] = (),
    *,
    hours: float = 2.0,
    step_s: float = 900.0,
    demand: Mapping[str, float | Sequence[float]] | None = None,
    tank: Mapping[str, float] | None = None,
) -> scenario_mod.Scenario:
    """A scenario over ``hours``; demand per site as a constant or one value per step."""
    steps = round(hours * HOUR / step_s)
    series = {}
    for s in sites:
        given_kw = (demand or {}).get(s.name, 0.0)
        kw = (
            (float(given_kw),) * steps
            if isinstance(given_kw, int | float)
            else tuple(float(v) for v in given_kw)
        )
        series[s.name] = model.DemandSeries(start_s=0.0, step_s=step_s, kw=kw)
    return scenario_mod.Scenario(
        name="tiny",
        source=None,
        duration_s=hours * HOUR,
        step_s=step_s,
        sites=tuple(sites),
        initial_tank_kwh={s.name: (tank or {}).get(s.name, 0.0) for s in sites},
        demand=series,
        jobs=tuple(sorted(jobs, key=lambda j: j.release_s)),
    )


def random_trace(
    seed: int,
    sites: Sequence[model.Site],
    *,
    hours: float,
    jobs: int,
    demand_kw: float | Mapping[str, float | Sequence[float]],
    step_s: float = 900.0,
    slack_h: tuple[float, float] = (1.0, 12.0),
) -> scenario_mod.Scenario:
    """A seeded scenario over ``sites``: ``jobs`` CPU and GPU jobs (15 min to 6 h, arriving
    through the run) and the demand given (one figure for every site, or per site)."""
    import random

    rng = random.Random(seed)
    trace = []
    for i in range(jobs):
        gpu = rng.choice((0, 0, 1, 2, 4))
        release = rng.uniform(0, hours * HOUR * 0.8)
        trace.append(
            model.JobRequest(
                id=f"job-{i:03d}",
                resources=model.Resources(
                    cpu=4 * max(gpu, 1) * rng.choice((1, 2)), memory_gib=16 * max(gpu, 1), gpu=gpu
                ),
                duration_s=rng.uniform(0.25, 6.0) * HOUR,
                release_s=release,
                deadline_s=release + rng.uniform(*slack_h) * HOUR,
                priority=rng.randint(0, 3),
            )
        )
    demand = demand_kw if isinstance(demand_kw, Mapping) else {s.name: demand_kw for s in sites}
    return scenario(sites, trace, hours=hours, step_s=step_s, demand=demand)


def bursty_trace(
    seed: int,
    sites: Sequence[model.Site],
    *,
    hours: float,
    jobs_per_hour: float = 3.0,
    burst_every_h: float = 12.0,
) -> scenario_mod.Scenario:
    """A trace that fills the fleet: slack jobs through the run, and bursts of long 4-GPU jobs
    with little or no slack (and short 1-GPU ones with none), demand swinging by the hour."""
    import random

    rng = random.Random(seed)
    base = random_trace(seed, sites, hours=hours, jobs=int(jobs_per_hour * hours), demand_kw=0.0)
    jobs = list(base.jobs)
    for burst in range(int(hours // burst_every_h)):
        at = (rng.uniform(0.5, 0.9) + burst) * burst_every_h * HOUR
        for i, slack_h in enumerate((0.0, 0.0, 2.0, 12.0, 0.0)):
            gpu, run_h = (1, 16 / 60) if i == 4 else (4, 18.0)
            release = at + rng.uniform(0, 0.5) * HOUR
            jobs.append(
                model.JobRequest(
                    id=f"burst-{burst}-{i}",
                    resources=model.Resources(cpu=4 * gpu, memory_gib=16 * gpu, gpu=gpu),
                    duration_s=run_h * HOUR,
                    release_s=release,
                    deadline_s=release + slack_h * HOUR,
                )
            )
    steps = round(hours * HOUR / 900.0)
    demand = {
        s.name: [rng.choice((0.0, 5.0, 40.0)) if k % 4 == 0 else 0.0 for k in range(steps)]
        for s in sites
    }
    for s in sites:  # each value holds for the hour
        kw = demand[s.name]
        demand[s.name] = [kw[k - k % 4] for k in range(steps)]
    return scenario(sites, jobs, hours=hours, demand=demand)
