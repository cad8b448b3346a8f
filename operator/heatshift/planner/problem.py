"""The scheduling problem as plain numbers: what the solver module receives.

Built by :mod:`heatshift.planner.heataware` from a Snapshot; knows nothing of
OR-Tools (PyJobShop's split: problem data apart from the solver). Energies are whole
Wh, CPU whole milli-cores, memory whole MiB, so every constraint is integral.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from heatshift import model, thermal
from heatshift.planner import classes as job_classes
from heatshift.planner import config as planner_config
from heatshift.planner import grid as planner_grid

RESOURCE_NAMES = ("cpu", "memory", "gpu")


def resource_units(resources: model.Resources) -> tuple[int, int, int]:
    """Milli-cores, MiB, GPUs: integral units, rounded up (never understate use)."""
    return (
        math.ceil(resources.cpu * 1000 - 1e-6),
        math.ceil(resources.memory_gib * 1024 - 1e-6),
        resources.gpu,
    )


def capacity_units(resources: model.Resources) -> tuple[int, int, int]:
    """Capacity in the same units, rounded down (never overstate room)."""
    return (
        math.floor(resources.cpu * 1000 + 1e-6),
        math.floor(resources.memory_gib * 1024 + 1e-6),
        resources.gpu,
    )


@dataclass(frozen=True, slots=True)
class SiteSlots:
    """One site over the grid."""

    name: str
    free: tuple[tuple[int, int, int], ...]  # per slot: capacity left after running jobs
    base_heat_wh: tuple[int, ...]  # per slot: recovered heat of idle power + running jobs
    demand_wh: tuple[int, ...]  # per slot: heat the offtaker would take (0 if not valued)
    heat_valued: bool  # False: metering is bad, its heat is worth nothing
    tank_capacity_wh: int
    tank_initial_wh: int
    loss_permille: tuple[int, ...]  # per slot: standing loss in 1/1000 of stored energy


@dataclass(frozen=True, slots=True)
class StartOption:
    """Starting some jobs of a class at a site in a slot: one integer decision."""

    job_class: int
    site: int
    slot: int
    bucket: int  # duration bucket: jobs of one bucket share running-count bookkeeping
    max_count: int
    per_lane: int  # jobs that run one after another in one share of the slot's capacity
    # (a "lane"); 1: every job starts at the slot's start and holds its share throughout
    heat_watts: int  # recovered heat per running job, W (see build_problem)
    delay_hours: float  # from now to the start

    def lanes(self, count: int) -> int:
        """Lanes, each a job's share of the site, that ``count`` of these jobs hold."""
        return -(-count // self.per_lane)


@dataclass(frozen=True, slots=True)
class Bucket:
    """Jobs of similar duration: one started at slot j still runs in slot k iff
    ``window_start[k] <= j <= k``."""

    duration_s: float
    window_start: tuple[int, ...]  # per slot k
    heat_seconds: tuple[int, ...]  # per slot k: seconds of a slot a running job fills
    last_slot: tuple[int, ...]  # per start slot j: the last slot such a job runs in
    counted_seconds: tuple[int, ...]  # per start slot j: heat_seconds over the slots it runs in

    def running_slots(self, start: int) -> range:
        """The slots a job of this bucket started at slot ``start`` runs in."""
        return range(start, self.last_slot[start] + 1)


@dataclass(frozen=True, slots=True)
class ClassData:
    count: int
    units: tuple[int, int, int]
    priority: int
    must_start_in_horizon: bool  # its deadline lies inside the horizon
    overdue: bool  # its deadline has passed: late whenever it starts


@dataclass(frozen=True, slots=True)
class Problem:
    grid: planner_grid.Grid
    classes: tuple[ClassData, ...]
    sites: tuple[SiteSlots, ...]
    buckets: tuple[Bucket, ...]
    options: tuple[StartOption, ...]
    late_options: tuple[StartOption, ...]
    """Starts after a class's start deadline, still in the horizon: only for jobs no option in
    time has room for (:func:`heatshift.planner.hint.late_counts`), never offered to the
    solver, whose late count covers them."""
    binding: tuple[tuple[bool, bool, bool], ...]  # per site: may cpu/memory/gpu run out?
    useful_heat_weight: float  # per kWh
    dumped_heat_weight: float  # per kWh
    stored_heat_weight: float  # per kWh left in tanks at the end
    delay_weight: float  # per job-hour, times (priority + 1)
    late_penalty: float  # per job not started by its deadline
    overdue_penalty: float  # per overdue job not started now


# Start slots offered after a class's release slot: dense near now, sparse far out. The
# plan is remade every step, so far-out starts only need to be roughly right.
_START_OFFSETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def start_slots(first: int, last: int, stride: int) -> list[int]:
    """Start slots offered in ``[first, last]``: geometric offsets, thinned by ``stride``."""
    offsets = _START_OFFSETS[::stride] if stride > 1 else _START_OFFSETS
    chosen = [first + o for o in offsets if first + o <= last]
    if chosen[-1] != last:
        chosen.append(last)
    return chosen


def lanes_in_slot(
    grid: planner_grid.Grid, k: int, duration_s: float, deadline_slot: int, count: int
) -> int:
    """How many jobs of ``duration_s`` fit one after another in slot ``k``.

    Short jobs in a long slot need not all start at its start and hold their share for
    all of it: they run in lanes, back to back, each ending by the slot's end. Only
    before the class's deadline slot, where every start inside the slot is in time.
    """
    if k >= deadline_slot or duration_s <= 0:
        return 1
    return max(1, min(count, int(grid.length_s(k) // duration_s)))


def staggered_start_s(
    grid: planner_grid.Grid, option: StartOption, duration_s: float, count: int, n: int
) -> float:
    """Start of the ``n``-th of ``count`` jobs of ``option``: lane ``n % lanes``, position
    ``n // lanes``, so earlier jobs (earlier deadlines) start first."""
    if option.per_lane <= 1:
        return grid.starts[option.slot]
    return grid.starts[option.slot] + (n // option.lanes(count)) * duration_s


def _bucket(grid: planner_grid.Grid, duration_s: float) -> Bucket:
    window = []
    heat = []
    for k in range(grid.slots):
        # Started at j, still running at slot k's start iff starts[j] > starts[k] - duration.
        window.append(grid.first_start_at_or_after(grid.starts[k] - duration_s + 1e-3))
        heat.append(round(min(duration_s, grid.length_s(k))))
    last = [max(k for k in range(j, grid.slots) if window[k] <= j) for j in range(grid.slots)]
    return Bucket(
        duration_s=duration_s,
        window_start=tuple(window),
        heat_seconds=tuple(heat),
        last_slot=tuple(last),
        counted_seconds=tuple(sum(heat[j : last[j] + 1]) for j in range(grid.slots)),
    )


def slot_demand_kw(
    site: model.Site, state: model.SiteState, grid: planner_grid.Grid, step_s: float
) -> list[float]:
    """Expected offtaker demand per slot: the source's forecast, else our own, capped."""
    if state.demand_forecast is not None:
        series = state.demand_forecast
    else:
        steps = math.ceil((grid.end_s - grid.now_s) / step_s)
        series = thermal.forecast_demand(
            state.demand_history, state.demand_kw, grid.now_s, step_s, steps
        )
        # The meter's reading beats any forecast for the slot that starts now.
        series = series.model_copy(update={"kw": (state.demand_kw, *series.kw[1:])})
    return [
        thermal.capped_demand_kw(site, series.mean_over(grid.starts[k], grid.starts[k + 1]))
        for k in range(grid.slots)
    ]


def build_problem(
    snapshot: model.Snapshot,
    grid: planner_grid.Grid,
    classes: Sequence[job_classes.JobClass],
    demand_kw: Mapping[str, Sequence[float]],
    cfg: planner_config.PlannerConfig,
    site_limit: int | None = None,
    slot_stride: int = 1,
) -> Problem:
    """Numbers for the solver.

    ``site_limit`` keeps only that many candidate sites per class (those with the most
    unmet demand), ``slot_stride`` > 1 offers only every n-th start slot (plus the
    release and deadline slots): both shrink a snapshot too large for the budget.
    """
    sites = snapshot.sites
    slots = grid.slots
    site_slots: list[SiteSlots] = []
    running_at: dict[str, list[model.RunningJob]] = {site.name: [] for site in sites}
    for running in snapshot.running:
        running_at.setdefault(running.site, []).append(running)
    unmet_wh: list[float] = []
    for site in sites:
        state = snapshot.states[site.name]
        used = [[0, 0, 0] for _ in range(slots)]
        base_w = [site.power.idle_watts * grid.length_s(k) for k in range(slots)]
        for job in running_at[site.name]:
            units = resource_units(job.resources)
            for k in range(slots):
                overlap = max(0.0, min(job.end_s, grid.starts[k + 1]) - grid.starts[k])
                if overlap > 0:
                    for r in range(3):
                        used[k][r] += units[r]
                    base_w[k] += job.power_watts * overlap
        cap = capacity_units(site.capacity)
        free = tuple((cap[0] - u[0], cap[1] - u[1], cap[2] - u[2]) for u in used)
        base_heat = tuple(round(site.heat_recovery_efficiency * ws / 3600.0) for ws in base_w)
        valued = state.heat_aware
        demand = tuple(
            round(demand_kw[site.name][k] * 1000 * grid.length_s(k) / 3600.0) if valued else 0
            for k in range(slots)
        )
        unmet_wh.append(sum(max(0, d - b) for d, b in zip(demand, base_heat, strict=True)))
        loss = tuple(
            round(1000 * (1 - (1 - site.tank.loss_per_hour) ** (grid.length_s(k) / 3600.0)))
            for k in range(slots)
        )
        site_slots.append(
            SiteSlots(
                name=site.name,
                free=free,
                base_heat_wh=base_heat,
                demand_wh=demand,
                heat_valued=valued,
                tank_capacity_wh=round(site.tank.capacity_kwh * 1000),
                tank_initial_wh=min(
                    round(state.tank_energy_kwh * 1000), round(site.tank.capacity_kwh * 1000)
                ),
                loss_permille=loss,
            )
        )

    site_order = sorted(range(len(sites)), key=lambda i: (-unmet_wh[i], sites[i].name))
    bucket_of: dict[int, int] = {}
    bucket_duration: dict[int, float] = {}
    for jc in classes:
        b = job_classes.duration_bucket(jc.duration_s)
        bucket_duration[b] = max(bucket_duration.get(b, 0.0), jc.duration_s)
    bucket_keys = sorted(bucket_duration)
    buckets = tuple(_bucket(grid, bucket_duration[b]) for b in bucket_keys)
    for jc in classes:
        bucket_of[jc.index] = bucket_keys.index(job_classes.duration_bucket(jc.duration_s))

    class_data: list[ClassData] = []
    options: list[StartOption] = []
    late_options: list[StartOption] = []
    demand_units = [[0, 0, 0] for _ in sites]  # most each site could be asked for
    max_job_heat_wh = 1.0
    for jc in classes:
        units = resource_units(jc.resources)
        class_data.append(
            ClassData(
                count=jc.count,
                units=units,
                priority=jc.priority,
                # A class released after the last slot cannot start here at all: later
                # plans place it, so it is never counted late now.
                must_start_in_horizon=jc.deadline_slot < slots and jc.release_slot < slots,
                overdue=jc.deadline_slot < 0,
            )
        )
        first = jc.release_slot
        if first >= slots:
            continue
        last = max(min(jc.deadline_slot, slots - 1), first)  # already late: start asap
        candidates = [
            i
            for i in site_order
            if (jc.allowed_sites is None or sites[i].name in jc.allowed_sites)
            and jc.resources.fits_within(sites[i].capacity)
        ]
        if site_limit is not None and len(candidates) > site_limit:
            # Spread classes over the sites (ranked by unmet demand) so that, together,
            # they can still use the whole fleet's capacity.
            offset = (jc.index * site_limit) % len(candidates)
            candidates = [candidates[(offset + j) % len(candidates)] for j in range(site_limit)]
        b = bucket_of[jc.index]
        bucket = buckets[b]
        chances = [
            (k, lanes_in_slot(grid, k, bucket.duration_s, jc.deadline_slot, jc.count))
            for k in start_slots(first, last, slot_stride)
        ]
        # A job that must start in the horizon but finds no room in time starts late, at the
        # best of these with room, rather than not at all (one job per lane: it is late). Only
        # such jobs are placed here, so every offset is offered, however thinned the rest.
        first_late = max(first, jc.deadline_slot) + 1
        late_chances = (
            [(k, 1) for k in start_slots(first_late, slots - 1, 1)]
            if jc.deadline_slot < slots and first_late < slots
            else []
        )
        needs = [(r, units[r]) for r in range(3) if units[r]]
        delay_hours = [(grid.starts[k] - grid.now_s) / 3600.0 for k in range(slots)]
        for i in candidates:
            site = sites[i]
            free = site_slots[i].free
            for r in range(3):
                demand_units[i][r] += units[r] * jc.count
            watts = site.job_watts(jc.resources, jc.power_watts)
            true_ws = watts * jc.mean_duration_s
            max_job_heat_wh = max(max_job_heat_wh, site.heat_recovery_efficiency * true_ws / 3600)
            for k, per_lane, into in [(k, n, options) for k, n in chances] + [
                (k, n, late_options) for k, n in late_chances
            ]:
                bound = jc.count
                for r, need in needs:
                    bound = min(bound, per_lane * (max(free[k][r], 0) // need))
                if bound <= 0:
                    continue
                # The model counts a running job's heat in whole slots; scale its power so
                # the energy it is credited with equals its expected energy.
                counted_s = bucket.counted_seconds[k]
                scale = min(true_ws / (watts * counted_s), 1.0) if watts and counted_s else 1.0
                into.append(
                    StartOption(
                        job_class=jc.index,
                        site=i,
                        slot=k,
                        bucket=b,
                        max_count=bound,
                        per_lane=per_lane,
                        heat_watts=round(site.heat_recovery_efficiency * watts * scale),
                        delay_hours=delay_hours[k],
                    )
                )
    binding = tuple(
        tuple(
            demand_units[i][r] > min((f[r] for f in site_slots[i].free), default=0)
            for r in range(3)
        )
        for i in range(len(sites))
    )
    horizon_h = (grid.end_s - grid.now_s) / 3600.0
    late_penalty = 10.0 * (
        cfg.useful_heat_weight * max_job_heat_wh / 1000.0 + cfg.delay_weight * 11 * horizon_h
    )
    return Problem(
        grid=grid,
        classes=tuple(class_data),
        sites=tuple(site_slots),
        buckets=buckets,
        options=tuple(options),
        late_options=tuple(late_options),
        binding=binding,  # type: ignore[arg-type]
        useful_heat_weight=cfg.useful_heat_weight,
        dumped_heat_weight=cfg.dumped_heat_weight,
        stored_heat_weight=cfg.stored_heat_weight,
        delay_weight=cfg.delay_weight,
        late_penalty=late_penalty,
        # An overdue job is late however soon it starts: all of them together weigh less
        # than one deadline that can still be met, so none takes such a job's room. (Were
        # that below a job's heat, the plan misses a deadline, so holds starts them now.)
        overdue_penalty=late_penalty / (1 + sum(d.count for d in class_data if d.overdue)),
    )
