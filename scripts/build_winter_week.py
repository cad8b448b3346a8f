"""Generate the built-in scenario ``winter-week``: six leaf sites, a week warming toward spring.

Usage::

    python3 scripts/build_winter_week.py PATH/TO/philly/jobs.json [--out DIR]

Writes ``scenario.yaml``, one demand CSV per site and ``jobs.csv`` into ``DIR`` (default: the
package data directory ``operator/heatshift/sim/scenarios/winter-week``), then loads the result
with the real loader, plays it with a heat-unaware baseline (each job starts at once on the
least-loaded site that fits) through the real tank physics, prints the calibration numbers and
writes them into the scenario's README (between its ``calibration`` markers).

GPU jobs come from the Microsoft Philly trace (CC BY 4.0; Jeon et al., "Analysis of Large-Scale
Multi-Tenant GPU Clusters for DNN Training Workloads", USENIX ATC 2019): the busiest week of the
subset, real arrival times (shifted to the scenario start) and runtimes, subsampled and capped
to fit six small sites. CPU batch jobs (nightly ETL, CI builds, renders) and each offtaker's
demand (driven by an outdoor temperature that warms over the week, the sun and the building's
daily routine) are synthetic. Deterministic: the same trace gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import math
import random
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from heatshift import model, thermal
from heatshift.sim import scenario as scenario_mod

HOUR = 3600
DAY = 24 * HOUR
DAYS = 7
STEP = 900  # 15 minutes
STEPS = DAYS * DAY // STEP
SEED = 20171023

# The GPU trace: the subset's busiest week (356 jobs, the most GPU-hours), Monday to Monday.
WEEK_START = dt.datetime(2017, 10, 23)
GPU_KEEP = 0.3  # share of the week's Philly jobs kept
MAX_GPUS_PER_JOB = 8  # one 8-GPU server: jobs never span sites
MAX_RUNTIME_S = 24 * HOUR
MIN_RUNTIME_S = 60
CPUS_PER_GPU = 4
GIB_PER_GPU = 24

DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "operator/heatshift/sim/scenarios/winter-week"
)
README_BLOCK = re.compile(r"(<!-- (\w+):begin[^>]*-->\n).*?(<!-- \2:end -->)", re.DOTALL)
"""A generated block of the README: ``<!-- NAME:begin ... -->`` up to ``<!-- NAME:end -->``."""


# --- weather ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Weather:
    """Outdoor temperature (C) and sun (0..1 of a clear sky at noon), per 15-minute step."""

    temp_c: tuple[float, ...]
    sun: tuple[float, ...]


def make_weather(rng: random.Random) -> Weather:
    """A week warming from about -4 C (Monday) to about +9 C (Sunday), coldest near 05:00.

    Hourly AR(1) weather noise on top; each day has its own cloudiness, brighter toward spring.
    """
    hourly_noise = [0.0]
    for _ in range(DAYS * 24 + 1):
        hourly_noise.append(0.9 * hourly_noise[-1] + rng.gauss(0.0, 0.6))
    clear = [min(1.0, max(0.1, rng.uniform(0.15, 0.85) + 0.05 * day)) for day in range(DAYS)]
    temps: list[float] = []
    suns: list[float] = []
    for i in range(STEPS):
        t = i * STEP
        hour = (t % DAY) / HOUR
        day = t // DAY
        trend = -4.0 + 13.0 * t / (DAYS * DAY)
        daily = -3.5 * math.cos(2 * math.pi * (hour - 5.0) / 24.0)
        h, frac = divmod(t / HOUR, 1.0)
        noise = hourly_noise[int(h)] * (1 - frac) + hourly_noise[int(h) + 1] * frac
        sunrise, sunset = 7.6 - 0.03 * day, 18.1 + 0.03 * day
        elevation = math.sin(math.pi * (hour - sunrise) / (sunset - sunrise))
        sun = max(0.0, elevation) * clear[day]
        temps.append(trend + daily + noise + 2.0 * sun)
        suns.append(sun)
    return Weather(tuple(temps), tuple(suns))


# --- offtakers ---------------------------------------------------------------------------


def _clock(t: float) -> tuple[float, bool]:
    """Hour of day and whether it is a weekday (the scenario starts on a Monday, 00:00)."""
    return (t % DAY) / HOUR, int(t // DAY) % 7 < 5


def pool_kw(t: float, temp: float, sun: float) -> float:
    """Steady and high (pool water, hall air); ~35 % more while open (weekdays 06:30-22,
    weekends 08-18)."""
    hour, weekday = _clock(t)
    is_open = 6.5 <= hour < 22 if weekday else 8 <= hour < 18
    base = 11.0 + 0.55 * max(0.0, 20.0 - temp)
    return base * (1.15 if is_open else 0.85) - 1.5 * sun


def flats_kw(t: float, temp: float, sun: float) -> float:
    """Morning peak 06-09 and evening 17-22:30 (space heat, hot water); night setback."""
    hour, weekday = _clock(t)
    space = 0.85 * max(0.0, 18.5 - temp)
    if 6 <= hour < 9:
        space *= 1.45  # morning recovery from the setback
        hot_water = 8.0 if weekday else 5.0
    elif 17 <= hour < 22.5:
        space *= 1.2
        hot_water = 5.0
    elif hour >= 23 or hour < 5.5:
        space *= 0.3  # night setback
        hot_water = 0.8
    else:
        space *= 0.85
        hot_water = 2.5 if weekday else 4.0
    return space + hot_water - 3.0 * sun


def greenhouse_kw(t: float, temp: float, sun: float) -> float:
    """Strong at night (glass; screens closed 19-07); the sun heats it, so near zero at a
    sunny midday."""
    hour, _ = _clock(t)
    night = hour < 7 or hour >= 19
    if night:
        return 1.45 * max(0.0, 17.0 - temp) + 3.0  # energy screens closed
    return max(0.0, 2.2 * max(0.0, 20.0 - temp) - 75.0 * sun)


def heatnet_kw(t: float, temp: float, sun: float) -> float:
    """Large and steady, follows the outdoor temperature; 10 % more 06-10."""
    hour, _ = _clock(t)
    morning = 1.1 if 6 <= hour < 10 else 1.0
    return (7.0 + 1.05 * max(0.0, 16.0 - temp)) * morning


def office_kw(t: float, temp: float, sun: float) -> float:
    """Weekdays 07-18 only, a morning warm-up 07-09; frost protection (near zero) otherwise."""
    hour, weekday = _clock(t)
    if not weekday or not 7 <= hour < 18:
        return 0.3
    warm_up = 1.6 if hour < 9 else 1.0
    return 1.25 * max(0.0, 21.0 - temp) * warm_up - 6.0 * sun


def carehome_kw(t: float, temp: float, sun: float) -> float:
    """Warm day and night; hot water for morning care 07-11 and the kitchen."""
    hour, _ = _clock(t)
    space = 0.55 * max(0.0, 22.0 - temp) * (0.9 if hour >= 22 or hour < 6 else 1.0)
    hot_water = 4.0 if 7 <= hour < 11 else 2.5 if 11 <= hour < 20 else 1.0
    return space + hot_water - 1.0 * sun


# --- sites -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SiteDef:
    name: str
    kind: str
    about: str
    cpu: int
    memory_gib: int
    gpu: int
    idle_watts: int
    watts_per_gpu: int
    watts_per_cpu: int
    efficiency: float
    tank_kwh: int
    loss_per_hour: float
    max_thermal_kw: int
    demand: Callable[[float, float, float], float]
    size: float  # scales the demand model: the share of the building the site heats


SITES = (
    SiteDef(
        "pool-zwolle", "pool", "swimming pool; 5 servers of 8 GPUs (A100 PCIe)",
        384, 3072, 40, 2000, 450, 8, 0.88, 60, 0.010, 20, pool_kw, 0.85,
    ),
    SiteDef(
        "flats-utrecht", "residential", "apartment block; 5 servers of 8 GPUs (L40S)",
        320, 2560, 40, 2000, 550, 7, 0.85, 20, 0.015, 25, flats_kw, 0.5,
    ),
    SiteDef(
        "greenhouse-westland", "greenhouse", "plant-raising greenhouse; 6 servers of 8 GPUs",
        384, 3072, 48, 2400, 600, 9, 0.80, 60, 0.005, 30, greenhouse_kw, 0.45,
    ),
    SiteDef(
        "heatnet-delft", "districtHeating", "district-heating loop; 5 GPU and 4 CPU servers",
        512, 4096, 40, 2800, 550, 8, 0.90, 100, 0.008, 25, heatnet_kw, 0.95,
    ),
    SiteDef(
        "office-eindhoven", "office", "office tower; 6 servers of 8 GPUs (H100 SXM)",
        512, 4096, 48, 3000, 700, 10, 0.78, 20, 0.020, 35, office_kw, 0.5,
    ),
    SiteDef(
        "carehome-groningen", "residential", "care home; 6 servers of 4 GPUs (RTX 6000 Ada)",
        192, 1536, 24, 1200, 300, 6, 0.82, 40, 0.010, 15, carehome_kw, 0.35,
    ),
)  # fmt: skip
DEMAND_SCALE = 0.8  # all demand models at once: the calibration knob


def demand_series(site: SiteDef, weather: Weather, rng: random.Random) -> list[float]:
    """True demand, kW per step: the site's model, scaled, with AR(1) noise of about 6 %."""
    out: list[float] = []
    wobble = 0.0
    for i in range(STEPS):
        wobble = 0.85 * wobble + rng.gauss(0.0, 0.03)
        kw = DEMAND_SCALE * site.size * site.demand(i * STEP, weather.temp_c[i], weather.sun[i])
        out.append(max(0.0, kw * (1.0 + wobble)))
    return out


# --- jobs --------------------------------------------------------------------------------

Row = dict[str, str]


def _row(
    job_id: str,
    submit: float,
    duration: float,
    cpu: int,
    memory: int,
    gpu: int = 0,
    power: float | None = None,
    max_delay: float | None = None,
    sites: Sequence[str] = (),
    priority: int | None = None,
) -> Row:
    return {
        "id": job_id,
        "submit_s": str(int(submit)),
        "duration_s": str(max(MIN_RUNTIME_S, int(duration))),
        "cpu": str(cpu),
        "memory_gib": str(memory),
        "gpu": str(gpu),
        "power_watts": "" if power is None else str(int(power)),
        "max_delay_s": "" if max_delay is None else str(int(max_delay)),
        "sites": ";".join(sites),
        "priority": "" if priority is None else str(priority),
    }


def philly_jobs(trace: Path, rng: random.Random) -> list[Row]:
    """The kept GPU jobs of the week: real arrivals and runtimes, capped."""
    records = json.loads(trace.read_text())
    start, end = WEEK_START, WEEK_START + dt.timedelta(days=DAYS)
    week = []
    for job in records:
        submitted = dt.datetime.fromisoformat(job["submitted_time"])
        if start <= submitted < end and job.get("runtime"):
            week.append((submitted, str(job["id"]), job))
    week.sort(key=lambda r: (r[0], r[1]))
    big_gpu_sites = ("pool-zwolle", "heatnet-delft", "office-eindhoven")
    rows = []
    for submitted, job_id, job in week:
        if rng.random() >= GPU_KEEP:
            continue
        gpus = max(1, min(int(job["num_gpus"]), MAX_GPUS_PER_JOB))
        runtime = min(float(job["runtime"]) * 60.0, MAX_RUNTIME_S)
        # Training is flexible: most may wait hours; some are paper-deadline urgent.
        delay = rng.choice([2, 4, 6, 6, 8, 8, 12, 12, None, None])
        priority = rng.choices([0, 1, 2, 3], weights=[15, 65, 15, 5])[0]
        # A few need the large-memory GPUs of three sites.
        sites = big_gpu_sites if rng.random() < 0.12 else ()
        rows.append(
            _row(
                "philly-" + job_id.rsplit("_", 1)[-1],
                (submitted - start).total_seconds(),
                runtime,
                CPUS_PER_GPU * gpus,
                GIB_PER_GPU * gpus,
                gpus,
                max_delay=None if delay is None else delay * HOUR,
                sites=sites,
                priority=priority,
            )
        )
    return rows


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth; the means here are small.
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _ci_rate_per_hour(hour: int, weekday: bool) -> float:
    """CI builds per hour: working hours, a dip at lunch, a few at night and at weekends."""
    if not weekday:
        return 1.0 if 10 <= hour < 22 else 0.2
    profile = {
        7: 4, 8: 12, 9: 22, 10: 26, 11: 24, 12: 12, 13: 20, 14: 25, 15: 26, 16: 22, 17: 14,
        18: 6, 19: 4, 20: 3, 21: 2,
    }  # fmt: skip
    return float(profile.get(hour, 0.5))


def cpu_jobs(rng: random.Random) -> list[Row]:
    """Synthetic CPU batch work: nightly ETL, CI builds, overnight renders."""
    rows: list[Row] = []
    warehouse = ("heatnet-delft", "office-eindhoven")  # where the data lives
    for day in range(DAYS):
        base = day * DAY
        weekday = day < 5
        # Nightly ETL: a burst after midnight; must be done for the morning reports.
        for n in range(rng.randint(28, 40) if weekday else rng.randint(12, 18)):
            rows.append(
                _row(
                    f"etl-d{day + 1}-{n:03d}",
                    base + HOUR * rng.uniform(0.25, 2.5),
                    rng.lognormvariate(math.log(2400), 0.6),
                    rng.choice([8, 8, 16, 16, 32]),
                    rng.choice([32, 64, 128]),
                    max_delay=rng.choice([3, 4, 4, 6]) * HOUR,
                    sites=warehouse if rng.random() < 0.25 else (),
                    priority=None,  # the default, 1
                )
            )
        # CI builds: short, wanted soon; release builds are urgent.
        for hour in range(24):
            for _ in range(_poisson(rng, _ci_rate_per_hour(hour, weekday))):
                release = rng.random() < 0.08  # release builds: urgent
                team = rng.random() < 0.25  # the platform team's builds go first
                rows.append(
                    _row(
                        f"ci-{len(rows):05d}",
                        base + hour * HOUR + rng.uniform(0, HOUR),
                        rng.lognormvariate(math.log(900), 0.5),
                        rng.choice([4, 8, 8, 16]),
                        rng.choice([8, 16, 32]),
                        max_delay=(1 if release else rng.choice([2, 2, 3])) * HOUR,
                        priority=3 if release else 2 if team else 1,
                    )
                )
        # Renders and simulations: submitted late afternoon, flexible, measured power for some.
        for _ in range(rng.randint(12, 20) if weekday else rng.randint(4, 8)):
            cores = rng.choice([32, 48, 64])
            delay_h = rng.choice([8, 10, 12, None])
            rows.append(
                _row(
                    f"render-{len(rows):05d}",
                    base + HOUR * min(23.9, max(0.0, rng.gauss(17.0, 2.0))),
                    HOUR * rng.uniform(2.0, 9.0),
                    cores,
                    rng.choice([64, 128, 256]),
                    power=cores * rng.uniform(6.5, 9.5) if rng.random() < 0.5 else None,
                    max_delay=None if delay_h is None else delay_h * HOUR,
                    priority=rng.choices([0, 1], weights=[40, 60])[0],
                )
            )
    return rows


# --- writing -----------------------------------------------------------------------------


def write_files(out: Path, demand: dict[str, list[float]], jobs: list[Row]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for site in SITES:
        with (out / f"{site.name}.csv").open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["t_s", "kw"])
            for i, kw in enumerate(demand[site.name]):
                writer.writerow([i * STEP, f"{kw:.2f}"])
    with (out / "jobs.csv").open("w", newline="") as f:
        dict_writer = csv.DictWriter(f, fieldnames=scenario_mod.JOB_COLUMNS, lineterminator="\n")
        dict_writer.writeheader()
        dict_writer.writerows(jobs)
    lines = [
        "# Generated by scripts/build_winter_week.py from the Philly trace; see README.md.",
        f"apiVersion: {scenario_mod.API_VERSION}",
        "kind: Scenario",
        "metadata:",
        "  name: winter-week",
        "  description: Six leaf sites over a week warming from winter toward spring.",
        "spec:",
        f"  duration: {DAYS * 24}h",
        f"  step: {STEP // 60}m",
        "  defaultMaxDelay: 12h",
        "  sites:",
    ]
    for s in SITES:
        lines += [
            f"  - name: {s.name}  # {s.about}",
            f"    capacity: {{cpu: {s.cpu}, memoryGiB: {s.memory_gib}, gpu: {s.gpu}}}",
            f"    power: {{idleWatts: {s.idle_watts}, wattsPerGPU: {s.watts_per_gpu}, "
            f"wattsPerCPU: {s.watts_per_cpu}}}",
            f"    heatRecoveryEfficiency: {s.efficiency}",
            f"    tank: {{capacityKWh: {s.tank_kwh}, initialKWh: {s.tank_kwh / 2:g}, "
            f"lossPerHour: {s.loss_per_hour}}}",
            "    offtaker:",
            f"      kind: {s.kind}",
            f"      maxThermalKW: {s.max_thermal_kw}",
            "      demand:",
            f"        csv: {{path: {s.name}.csv, timeColumn: t_s, kwColumn: kw, scale: 1.0}}",
        ]
    lines += ["  jobs:", "    csv: {path: jobs.csv}", ""]
    (out / "scenario.yaml").write_text("\n".join(lines))


# --- calibration: a heat-unaware baseline through the real physics ------------------------


@dataclasses.dataclass
class SiteTotals:
    true_demand_kwh: float = 0.0
    demand_kwh: float = 0.0  # capped at maxThermalKW
    recoverable_kwh: float = 0.0
    delivered_kwh: float = 0.0
    dumped_kwh: float = 0.0
    jobs: int = 0


def _share_after(
    running: list[tuple[float, model.Resources]], t: float, need: model.Resources, site: model.Site
) -> float:
    """The site's fullest dimension (CPU, memory, GPU) at ``t`` once ``need`` is added."""
    used = need
    for end, r in running:
        if end > t:
            used = used.plus(r)
    cap = site.capacity
    return max(
        used.cpu / cap.cpu if cap.cpu else (math.inf if used.cpu else 0.0),
        used.memory_gib / cap.memory_gib
        if cap.memory_gib
        else (math.inf if used.memory_gib else 0.0),
        used.gpu / cap.gpu if cap.gpu else (math.inf if used.gpu else 0.0),
    )


def baseline(sc: scenario_mod.Scenario) -> tuple[dict[str, SiteTotals], dict[str, float]]:
    """Start every job at release on the least-loaded site it fits (waiting if none does)."""
    steps = round(sc.duration_s / sc.step_s)
    step = sc.step_s
    watts = {s.name: [s.power.idle_watts * step] * steps for s in sc.sites}  # joules per step
    gpu_s = [0.0] * steps
    cpu_s = [0.0] * steps
    running: dict[str, list[tuple[float, model.Resources]]] = {s.name: [] for s in sc.sites}
    ends: list[float] = []
    totals = {s.name: SiteTotals() for s in sc.sites}
    waited, late, max_wait = 0, 0, 0.0
    for job in sc.jobs:
        t = job.release_s
        while True:
            best: tuple[float, model.Site] | None = None
            for s in sc.sites:
                if not job.may_run_at(s.name) or not job.resources.fits_within(s.capacity):
                    continue
                share = _share_after(running[s.name], t, job.resources, s)
                if share <= 1.0 + 1e-9 and (best is None or share < best[0]):
                    best = (share, s)
            if best is not None:
                break
            later = [e for e in ends if e > t]
            if not later:
                break
            t = min(later)
        if best is None:
            continue
        site = best[1]
        if t > job.release_s:
            waited += 1
            max_wait = max(max_wait, t - job.release_s)
            late += t > job.deadline_s
        end = t + job.duration_s
        running[site.name].append((end, job.resources))
        ends.append(end)
        totals[site.name].jobs += 1
        w = site.job_watts(job.resources, job.power_watts)
        first = int(t // step)
        for i in range(first, min(steps, math.ceil(end / step))):
            overlap = min(end, (i + 1) * step) - max(t, i * step)
            if overlap > 0:
                watts[site.name][i] += w * overlap
                gpu_s[i] += job.resources.gpu * overlap
                cpu_s[i] += job.resources.cpu * overlap
    hours = step / HOUR
    for s in sc.sites:
        energy = sc.initial_tank_kwh[s.name]
        tot = totals[s.name]
        for i in range(steps):
            true_kw = sc.demand[s.name].kw[i]
            demand_kwh = thermal.capped_demand_kw(s, true_kw) * hours
            recovered_kwh = s.heat_recovery_efficiency * watts[s.name][i] / 3.6e6
            flows = thermal.exchange_heat(s.tank, energy, recovered_kwh, demand_kwh, hours)
            energy = flows.energy_after_kwh
            tot.true_demand_kwh += true_kw * hours
            tot.demand_kwh += demand_kwh
            tot.recoverable_kwh += recovered_kwh
            tot.delivered_kwh += flows.delivered_kwh
            tot.dumped_kwh += flows.dumped_kwh
    gpus = sum(s.capacity.gpu for s in sc.sites)
    cpus = sum(s.capacity.cpu for s in sc.sites)
    util = {
        "gpu_mean": sum(gpu_s) / (steps * step * gpus),
        "gpu_peak": max(gpu_s) / (step * gpus),
        "cpu_mean": sum(cpu_s) / (steps * step * cpus),
        "cpu_peak": max(cpu_s) / (step * cpus),
        "waited": waited,
        "late": late,
        "max_wait_h": max_wait / HOUR,
    }
    return totals, util


def calibration_report(sc: scenario_mod.Scenario) -> str:
    totals, util = baseline(sc)
    gpu_jobs = sum(1 for j in sc.jobs if j.resources.gpu)
    demand = sum(t.demand_kwh for t in totals.values())
    true_demand = sum(t.true_demand_kwh for t in totals.values())
    recoverable = sum(t.recoverable_kwh for t in totals.values())
    delivered = sum(t.delivered_kwh for t in totals.values())
    dumped = sum(t.dumped_kwh for t in totals.values())
    gpu_use = f"mean {util['gpu_mean']:.0%}, peak {util['gpu_peak']:.0%}"
    cpu_use = f"mean {util['cpu_mean']:.0%}, peak {util['cpu_peak']:.0%}"
    lines = [
        f"- jobs: {len(sc.jobs)} ({gpu_jobs} GPU from the Philly trace, "
        f"{len(sc.jobs) - gpu_jobs} synthetic CPU), "
        f"{sum(1 for j in sc.jobs if j.allowed_sites)} restricted to some sites",
        f"- GPU-hours: {sum(j.resources.gpu * j.duration_s for j in sc.jobs) / HOUR:,.0f}, "
        f"core-hours: {sum(j.resources.cpu * j.duration_s for j in sc.jobs) / HOUR:,.0f}",
        f"- demand: {demand:,.0f} kWh capped at maxThermalKW ({true_demand:,.0f} kWh true)",
        f"- recoverable heat (heat-unaware placement, idle included): {recoverable:,.0f} kWh "
        f"= {recoverable / demand:.0%} of capped demand",
        f"- utilisation (heat-unaware): GPU {gpu_use}; CPU {cpu_use}",
        f"- heat-unaware baseline: delivered {delivered:,.0f} kWh "
        f"({delivered / recoverable:.0%} of recoverable), dumped {dumped:,.0f} kWh "
        f"({dumped / recoverable:.0%}), boiler {demand - delivered:,.0f} kWh "
        f"({(demand - delivered) / demand:.0%} of demand)",
        f"- heat-unaware baseline: {util['waited']:.0f} jobs waited for room "
        f"(longest {util['max_wait_h']:.1f} h), {util['late']:.0f} started after their deadline",
        "",
        "| site | kind | GPUs | demand kWh (capped) | true kWh | mean kW (capped) | "
        "recoverable kWh | dumped kWh (heat-unaware) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sc.sites:
        t = totals[s.name]
        lines.append(
            f"| {s.name} | {s.offtaker.kind.value} | {s.capacity.gpu} | {t.demand_kwh:,.0f} | "
            f"{t.true_demand_kwh:,.0f} | {t.demand_kwh / (sc.duration_s / HOUR):.1f} | "
            f"{t.recoverable_kwh:,.0f} | {t.dumped_kwh:,.0f} |"
        )
    days = []
    for d in range(DAYS):
        cut = slice(d * DAY // STEP, (d + 1) * DAY // STEP)
        kwh = sum(sum(sc.demand[s.name].kw[cut]) for s in sc.sites) * STEP / HOUR
        days.append(f"day {d + 1} {kwh:,.0f}")
    lines += ["", "True demand per day (kWh): " + ", ".join(days) + "."]
    return "\n".join(lines)


def sites_table(sc: scenario_mod.Scenario) -> str:
    """The README's table of the sites, from the loaded scenario and the demand models."""
    shapes = {s.name: " ".join((s.demand.__doc__ or "").split()) for s in SITES}
    lines = [
        "| site | offtaker | demand | GPUs (W each) | CPU cores (W each) | memory GiB | idle W "
        "| η | tank kWh (start; loss/h) | max kW |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sc.sites:
        tank = (
            f"{s.tank.capacity_kwh:g} ({sc.initial_tank_kwh[s.name]:g}; {s.tank.loss_per_hour:.1%})"
        )
        lines.append(
            f"| `{s.name}` | {s.offtaker.kind.value} | {shapes[s.name]} "
            f"| {s.capacity.gpu} ({s.power.watts_per_gpu:g}) "
            f"| {s.capacity.cpu:g} ({s.power.watts_per_cpu:g}) | {s.capacity.memory_gib:g} "
            f"| {s.power.idle_watts:g} | {s.heat_recovery_efficiency:g} | {tank} "
            f"| {s.offtaker.max_thermal_kw:g} |"
        )
    return "\n".join(lines)


def update_readme(out: Path, blocks: dict[str, str]) -> None:
    """Rewrite the README's generated blocks (the prose around them is written by hand)."""
    readme = out / "README.md"
    if not readme.exists():
        return

    def fill(match: re.Match[str]) -> str:
        body = blocks.get(match.group(2))
        if body is None:
            return match.group(0)
        return f"{match.group(1)}{body}\n{match.group(3)}"

    readme.write_text(README_BLOCK.sub(fill, readme.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", type=Path, help="the Philly subset's jobs.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)

    weather = make_weather(random.Random(f"{SEED}-weather"))
    demand_rng = random.Random(f"{SEED}-demand")
    demand = {s.name: demand_series(s, weather, demand_rng) for s in SITES}
    jobs = philly_jobs(args.trace, random.Random(f"{SEED}-philly")) + cpu_jobs(
        random.Random(f"{SEED}-cpu")
    )
    jobs.sort(key=lambda r: (int(r["submit_s"]), r["id"]))
    write_files(args.out, demand, jobs)

    sc = scenario_mod.load_scenario(args.out / "scenario.yaml")
    report = calibration_report(sc)
    print(report)
    update_readme(args.out, {"sites": sites_table(sc), "calibration": report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
