"""Generated planning problems for ``heatshift bench planner``.

:func:`generate_snapshot` builds a seeded, realistic Snapshot: sites of varied size and
heat demand (with three days of demand history, as metering would give), pending jobs
of mixed shapes (CPU and 1/2/4/8-GPU, 10 min to 24 h, deadlines 1-24 h ahead, some
limited to a few sites, priorities 0-3) and some jobs already running. Pure: the same
arguments give the same snapshot. Called by :mod:`heatshift.cli` and tests.
"""

from __future__ import annotations

import math
import random

from heatshift import model

HOUR = 3600.0
MINUTE = 60.0

# (cpu cores, GPUs): small edge rooms to a large plant room.
_SITE_SIZES: tuple[tuple[int, int], ...] = ((64, 8), (128, 16), (192, 16), (256, 24), (384, 32))
_KINDS = tuple(model.OfftakerKind)
_GPU_COUNTS = (1, 2, 4, 8)
_GPU_WEIGHTS = (4, 3, 2, 1)


def generate_snapshot(
    jobs: int,
    sites: int,
    *,
    seed: int = 0,
    now_s: float = 0.0,
    history_days: int = 3,
    history_step_s: float = 15 * MINUTE,
) -> model.Snapshot:
    """A snapshot with ``sites`` sites and ``jobs`` pending jobs, seeded by ``seed``."""
    if jobs < 0 or sites < 1:
        raise ValueError("need jobs >= 0 and sites >= 1")
    rng = random.Random(seed)
    site_list = [_site(rng, i) for i in range(sites)]
    states = {s.name: _state(rng, s, now_s, history_days, history_step_s) for s in site_list}
    pending = tuple(_job(rng, i, site_list, now_s) for i in range(jobs))
    running = tuple(_running(rng, site_list, now_s))
    return model.Snapshot(
        now_s=now_s, sites=tuple(site_list), states=states, pending=pending, running=running
    )


def _site(rng: random.Random, i: int) -> model.Site:
    cpu, gpu = rng.choice(_SITE_SIZES)
    kind = _KINDS[i % len(_KINDS)] if i < len(_KINDS) else rng.choice(_KINDS)
    return model.Site(
        name=f"site-{i:02d}-{kind.value.lower()}",
        capacity=model.Resources(cpu=cpu, memory_gib=cpu * 4, gpu=gpu),
        power=model.PowerModel(
            idle_watts=rng.choice((300, 400, 600, 900)),
            watts_per_gpu=rng.choice((400, 550, 700)),
            watts_per_cpu=rng.choice((6, 8, 10)),
        ),
        heat_recovery_efficiency=round(rng.uniform(0.75, 0.92), 2),
        tank=model.Tank(
            capacity_kwh=rng.choice((10, 20, 40, 60, 80)),
            loss_per_hour=round(rng.uniform(0.005, 0.02), 3),
        ),
        offtaker=model.Offtaker(kind=kind, max_thermal_kw=rng.choice((15, 20, 30, 45, 60))),
    )


def _daily_profile(kind: model.OfftakerKind, hour: float) -> float:
    """Relative demand (0..1) by hour of day, by kind of building."""
    if kind is model.OfftakerKind.OFFICE:
        return 0.8 if 7 <= hour < 18 else 0.1
    if kind is model.OfftakerKind.RESIDENTIAL:
        # Morning and evening peaks.
        return (
            0.35 + 0.3 * math.exp(-((hour - 7) ** 2) / 4) + 0.35 * math.exp(-((hour - 19) ** 2) / 6)
        )
    if kind is model.OfftakerKind.GREENHOUSE:
        return 0.8 if hour < 7 or hour >= 19 else 0.3  # heated at night
    if kind is model.OfftakerKind.POOL:
        return 0.6 if 6 <= hour < 22 else 0.35
    return 0.55 + 0.15 * math.cos((hour - 6) / 24 * 2 * math.pi)  # district heating


def _state(
    rng: random.Random, site: model.Site, now_s: float, days: int, step_s: float
) -> model.SiteState:
    peak = site.offtaker.max_thermal_kw * rng.uniform(0.4, 0.9)
    steps = round(days * 86400 / step_s)
    start = now_s - steps * step_s
    kw = tuple(
        round(
            max(
                0.0,
                peak * _daily_profile(site.offtaker.kind, ((start + k * step_s) % 86400) / HOUR),
            )
            * rng.uniform(0.9, 1.1),
            2,
        )
        for k in range(steps)
    )
    now_kw = peak * _daily_profile(site.offtaker.kind, (now_s % 86400) / HOUR)
    return model.SiteState(
        site=site.name,
        tank_energy_kwh=round(site.tank.capacity_kwh * rng.uniform(0.1, 0.7), 2),
        demand_kw=round(now_kw * rng.uniform(0.9, 1.1), 2),
        demand_history=model.DemandSeries(start_s=start, step_s=step_s, kw=kw) if kw else None,
    )


def _shape(rng: random.Random) -> model.Resources:
    if rng.random() < 0.5:
        cpu = rng.choice((2, 4, 8, 16, 32, 64))
        return model.Resources(cpu=cpu, memory_gib=cpu * 4, gpu=0)
    gpu = rng.choices(_GPU_COUNTS, weights=_GPU_WEIGHTS)[0]
    return model.Resources(cpu=gpu * 8, memory_gib=gpu * 64, gpu=gpu)


def _duration(rng: random.Random) -> float:
    # Log-uniform from 10 minutes to 24 hours: many short jobs, a few very long ones.
    return round(math.exp(rng.uniform(math.log(10 * MINUTE), math.log(24 * HOUR))))


def _job(rng: random.Random, i: int, sites: list[model.Site], now_s: float) -> model.JobRequest:
    resources = _shape(rng)
    holders = [s.name for s in sites if resources.fits_within(s.capacity)]
    allowed = None
    if holders and rng.random() < 0.1:
        allowed = frozenset(rng.sample(holders, k=min(len(holders), rng.choice((1, 2)))))
    release = now_s - round(rng.uniform(0, 2 * HOUR))
    return model.JobRequest(
        id=f"{'gpu' if resources.gpu else 'cpu'}-{i:05d}",
        resources=resources,
        duration_s=_duration(rng),
        release_s=release,
        deadline_s=now_s + round(rng.uniform(1 * HOUR, 24 * HOUR)),
        allowed_sites=allowed,
        priority=rng.randint(0, 3),
    )


def _running(rng: random.Random, sites: list[model.Site], now_s: float) -> list[model.RunningJob]:
    """Fill each site to 10-40 % of its GPUs and cores with jobs ending in the next 12 h."""
    out: list[model.RunningJob] = []
    for site in sites:
        target = rng.uniform(0.1, 0.4)
        used = model.Resources()
        for _ in range(40):  # tries; shapes past the target are skipped
            resources = _shape(rng)
            total = used.plus(resources)
            if total.cpu > target * site.capacity.cpu or total.gpu > target * site.capacity.gpu:
                continue
            used = total
            out.append(
                model.RunningJob(
                    id=f"running-{site.name}-{len(out):04d}",
                    site=site.name,
                    resources=resources,
                    power_watts=site.power.job_watts(resources),
                    end_s=now_s + round(rng.uniform(5 * MINUTE, 12 * HOUR)),
                )
            )
    return out
