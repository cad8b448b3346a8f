"""The heat-aware planner: Snapshot -> Plan over a rolling horizon.

The pipeline, one step each: grid -> demand outlook -> split off jobs no site can
hold -> job classes (coarsened to a budget of start options) -> problem numbers ->
CP-SAT, started from the heat-seeking list schedule -> concrete jobs
earliest-deadline-first -> deadline guard -> holds that buy no heat (in a plan that misses a
deadline: every hold) start now -> expected heat. Snapshots too large for the solver's budget
are list-scheduled alone (status HEURISTIC), on a finer problem.
Pure and deterministic for a snapshot, config and seed; bounded by the solver's time
limit; always returns a plan (the list schedule, reported as FALLBACK, when the
solver finds nothing in time). Called by the ``heatshift``/``oracle`` policies.

Its work is bounded by its inputs: the config's horizon and step (validated by
:class:`~heatshift.planner.config.PlannerConfig`) bound the grid, and a snapshot whose time or
demand series lie outside :mod:`heatshift.bounds` (possible only for one built without
validation) is refused with :class:`SnapshotOutOfBounds` before any work starts."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from heatshift import bounds, model
from heatshift.planner import checker, cpsat, greedy, holds
from heatshift.planner import classes as job_classes
from heatshift.planner import config as planner_config
from heatshift.planner import grid as planner_grid
from heatshift.planner import hint as planner_hint
from heatshift.planner import problem as planner_problem

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class _Coarsening:
    """One way to shrink a snapshot that is over the variable budget."""

    class_level: int  # see classes.build_classes
    start_stride: int  # offer every n-th geometric start offset
    site_limit: int | None  # candidate sites per class
    fine_span_s: float | None = None  # grid: shorter fine part ...
    coarse_step_s: float | None = None  # ... and longer slots beyond it


# Gentlest first: merge classes, thin start slots, coarsen the grid, and only then
# offer each class fewer sites.
_LADDER: tuple[_Coarsening, ...] = (
    _Coarsening(0, 1, None),
    _Coarsening(1, 1, None),
    _Coarsening(2, 2, None),
    _Coarsening(3, 2, None, 2 * HOUR, 2 * HOUR),
    _Coarsening(3, 4, None, 1 * HOUR, 3 * HOUR),
    _Coarsening(3, 4, 16, 1 * HOUR, 3 * HOUR),
    _Coarsening(3, 4, 8, 1 * HOUR, 3 * HOUR),
    _Coarsening(3, 8, 4, 1 * HOUR, 4 * HOUR),
    _Coarsening(3, 8, 2, 1 * HOUR, 6 * HOUR),
    _Coarsening(3, 16, 1, 1 * HOUR, 6 * HOUR),
)
# The last level the solver is used at: full grid, every site.
_LAST_SOLVER_LEVEL = 2


def _grid_for(
    now: float, cfg: planner_config.PlannerConfig, level: _Coarsening
) -> planner_grid.Grid:
    if level.fine_span_s is None or level.coarse_step_s is None:
        return planner_grid.build_grid(now, cfg)
    coarser = cfg.model_copy(
        update={
            "fine_span_s": min(cfg.fine_span_s, level.fine_span_s),
            "coarse_step_s": max(cfg.coarse_step_s, level.coarse_step_s),
        }
    )
    return planner_grid.build_grid(now, coarser)


def _option_count(
    classes: list[job_classes.JobClass],
    snapshot: model.Snapshot,
    slots: int,
    stride: int,
    site_limit: int | None,
    eligible: dict[tuple[model.Resources, frozenset[str] | None], int],
) -> int:
    """How many start options the problem would have (``eligible`` memoises site counts)."""
    total = 0
    for jc in classes:
        key = (jc.resources, jc.allowed_sites)
        n_sites = eligible.get(key, -1)
        if n_sites < 0:
            n_sites = eligible[key] = sum(
                1
                for s in snapshot.sites
                if (jc.allowed_sites is None or s.name in jc.allowed_sites)
                and jc.resources.fits_within(s.capacity)
            )
        if site_limit is not None:
            n_sites = min(n_sites, site_limit)
        if jc.release_slot < slots:
            last = max(min(jc.deadline_slot, slots - 1), jc.release_slot)
            total += n_sites * len(planner_problem.start_slots(jc.release_slot, last, stride))
    return total


def _gentlest_within(
    sized: Callable[[int], tuple[planner_grid.Grid, list[job_classes.JobClass], int]],
    budget: int,
    lo: int,
    hi: int,
) -> int:
    """The gentlest ladder level in ``[lo, hi]`` whose start options fit ``budget``
    (``hi`` if none does).

    Option counts shrink along the ladder, so a binary search needs a handful of
    tries rather than all of them."""
    if sized(lo)[2] <= budget:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sized(mid)[2] <= budget:
            hi = mid
        else:
            lo = mid
    return hi


class SnapshotOutOfBounds(ValueError):
    """A snapshot the planner refuses before planning, with the reason in words."""


def input_problem(snapshot: model.Snapshot) -> str | None:
    """Why ``snapshot`` lies outside the bounds the planner's work depends on; None if it
    does not. A validated snapshot never does: this guards those built with
    ``model_construct`` (the simulator's) and so skipped validation."""
    now = snapshot.now_s
    if not (math.isfinite(now) and 0.0 <= now <= bounds.MAX_TIMESTAMP_S):
        return f"its time {now!r} is not between 0 and 2100-01-01 (Unix seconds)"
    for state in snapshot.states.values():
        for what, series in (
            ("history", state.demand_history),
            ("forecast", state.demand_forecast),
        ):
            if series is None:
                continue
            why = bounds.FORECAST_STEP.problem(series.step_s)
            if why is None and len(series.kw) > bounds.MAX_SERIES_SAMPLES:
                why = f"it has {len(series.kw):,} samples, more than {bounds.MAX_SERIES_SAMPLES:,}"
            if why is None and not abs(series.start_s) <= bounds.MAX_TIMESTAMP_S:
                why = f"its start {series.start_s!r} is not a time before 2100"
            if why is not None:
                return f"site {state.site}'s demand {what}: {why}"
    return None


def plan(snapshot: model.Snapshot, cfg: planner_config.PlannerConfig) -> model.Plan:
    """The heat-aware plan for ``snapshot``.

    Raises :class:`SnapshotOutOfBounds` (before any planning) for a snapshot outside the
    bounds; the operator then uses its heat-unaware plan and says why.
    """
    why = input_problem(snapshot)
    if why is not None:
        raise SnapshotOutOfBounds(f"snapshot rejected before planning: {why}")
    now = snapshot.now_s
    next_decision = now + cfg.step_s
    jobs, bad = greedy.unschedulable(snapshot)
    notes: list[str] = []
    eligible: dict[tuple[model.Resources, frozenset[str] | None], int] = {}

    tried: dict[int, tuple[planner_grid.Grid, list[job_classes.JobClass], int]] = {}
    grouped: dict[tuple[float | None, float | None, int], list[job_classes.JobClass]] = {}

    def sized(i: int) -> tuple[planner_grid.Grid, list[job_classes.JobClass], int]:
        if i not in tried:
            level = _LADDER[i]
            grid = _grid_for(now, cfg, level)
            key = (level.fine_span_s, level.coarse_step_s, level.class_level)
            if key not in grouped:  # levels that differ only in starts or sites share it
                grouped[key] = job_classes.build_classes(jobs, grid, level.class_level)
            classes = grouped[key]
            count = _option_count(
                classes, snapshot, grid.slots, level.start_stride, level.site_limit, eligible
            )
            tried[i] = (grid, classes, count)
        return tried[i]

    # The solver refines a plan only while the snapshot fits its budget with the full
    # grid and every site; past that, CP-SAT on a coarse problem plans worse than list
    # scheduling on a finer one (measured: 1,000 jobs x 20 sites, 1,493 vs 1,824 kWh),
    # so large snapshots are list-scheduled within the larger budget.
    last_solver = sized(_LAST_SOLVER_LEVEL)[2]
    use_solver = last_solver <= cfg.max_start_variables
    if use_solver:
        index = _gentlest_within(sized, cfg.max_start_variables, 0, _LAST_SOLVER_LEVEL)
    else:
        # Gentler levels have more options still: when this one is over the list
        # budget too, so are they.
        first = _LAST_SOLVER_LEVEL if last_solver > cfg.max_list_schedule_options else 0
        index = _gentlest_within(sized, cfg.max_list_schedule_options, first, len(_LADDER) - 1)
    level = _LADDER[index]
    grid, classes, options = sized(index)
    demand = {
        s.name: planner_problem.slot_demand_kw(s, snapshot.states[s.name], grid, cfg.step_s)
        for s in snapshot.sites
    }
    if not jobs:
        return model.Plan(
            now_s=now,
            unschedulable=tuple(bad),
            status=model.SolveStatus.EMPTY,
            expected_useful_heat_kwh=checker.expected_heat(
                snapshot, (), grid.starts, demand
            ).useful_kwh,
        )
    if level != _LADDER[0]:
        notes.append(
            f"{len(jobs)} jobs in {len(classes)} classes (coarsening level {level.class_level}), "
            f"{grid.slots} slots, start offsets every {level.start_stride}, candidate sites "
            f"per class {level.site_limit or 'all'}: {options} start options"
        )
    problem = planner_problem.build_problem(
        snapshot,
        grid,
        classes,
        demand,
        cfg,
        site_limit=level.site_limit,
        slot_stride=level.start_stride,
    )
    if use_solver:
        solution = cpsat.solve(
            problem,
            time_limit_s=cfg.time_limit_s,
            deterministic_time=cfg.deterministic_time,
            workers=cfg.workers,
            seed=cfg.seed,
            gap_limit=cfg.gap_limit,
        )
        if solution.status is model.SolveStatus.FALLBACK:
            notes.append(
                f"solver found no better plan in {solution.wall_seconds:.2f}s "
                f"({solution.detail}): heat-seeking greedy plan"
            )
        elif solution.status is model.SolveStatus.TIMED_OUT:
            notes.append(
                f"solver {solution.detail}: a good plan, but a less loaded machine may find "
                "a different one"
            )
        status, counts = solution.status, solution.counts
        seconds, objective = solution.wall_seconds, solution.objective
    else:
        started = time.perf_counter()
        counts = tuple(planner_hint.heat_seeking_counts(problem))
        seconds = time.perf_counter() - started
        status, objective = model.SolveStatus.HEURISTIC, None
        notes.append(
            f"heat-seeking list schedule without the solver: even with classes merged the "
            f"snapshot needs {last_solver} start options, over the solver's "
            f"budget of {cfg.max_start_variables}"
        )
    late = planner_hint.late_counts(problem, counts)
    placements = _placements(snapshot, grid, classes, problem, counts, late, demand)

    placements, guard_notes = greedy.enforce_deadlines(snapshot, placements, next_decision)
    notes += guard_notes
    placements, hold_notes = holds.start_unprofitable_holds(
        snapshot, placements, grid.starts, demand, _misses_a_deadline(jobs, placements, grid)
    )
    notes += hold_notes
    by_id = {j.id: j for j in snapshot.pending}
    late_starts = sum(1 for p in placements if p.start_s > by_id[p.job_id].deadline_s + _LATE_S)
    if late_starts:
        notes.append(
            f"{late_starts} job(s) planned to start after their start deadline: no site they may "
            "use has room for them in time"
        )
    heat = checker.expected_heat(snapshot, placements, grid.starts, demand)
    return model.Plan(
        now_s=now,
        placements=tuple(sorted(placements, key=lambda p: (p.start_s, p.site, p.job_id))),
        unschedulable=tuple(bad),
        status=status,
        solve_seconds=seconds,
        objective=objective,
        expected_useful_heat_kwh=heat.useful_kwh,
        notes=tuple(notes),
    )


def _misses_a_deadline(
    jobs: Sequence[model.JobRequest],
    placements: Sequence[model.Placement],
    grid: planner_grid.Grid,
) -> bool:
    """Whether the plan starts some job whose start deadline lies in the horizon after it (or
    not at all): the fleet is congested."""
    starts = {p.job_id: p.start_s for p in placements}
    return any(
        j.deadline_s < grid.end_s
        and starts.get(j.id, math.inf) > max(j.deadline_s, grid.now_s) + _LATE_S
        for j in jobs
    )


_LATE_S = 1e-6
"""Seconds past its deadline a start counts as late (rounding)."""


def _placements(
    snapshot: model.Snapshot,
    grid: planner_grid.Grid,
    classes: list[job_classes.JobClass],
    problem: planner_problem.Problem,
    counts: Sequence[int],
    late: Sequence[int],
    demand: dict[str, list[float]],
) -> list[model.Placement]:
    starts: dict[int, list[tuple[float, str]]] = defaultdict(list)
    chosen = [*zip(problem.options, counts, strict=True)]
    chosen += zip(problem.late_options, late, strict=True)
    for option, count in chosen:
        if count:
            site = problem.sites[option.site].name
            duration_s = problem.buckets[option.bucket].duration_s
            starts[option.job_class] += [
                (planner_problem.staggered_start_s(grid, option, duration_s, count, n), site)
                for n in range(count)
            ]
    reasons = {s.name: _site_reason(snapshot, s, demand[s.name], grid) for s in snapshot.sites}
    out: list[model.Placement] = []
    for c, class_starts in starts.items():
        for job, site, slot_start_s in job_classes.assign_jobs(classes[c], class_starts):
            # An arrival that cannot wait is planned in the slot it arrives in, at its release.
            start_s = max(slot_start_s, job.release_s)
            when = "now" if start_s <= grid.now_s else "later"
            if start_s > job.deadline_s + _LATE_S:
                when += ", after its start deadline (no room for it in time)"
            out.append(
                model.Placement(
                    job_id=job.id,
                    site=site,
                    start_s=start_s,
                    reason=f"heat-aware plan, start {when}: {reasons[site]}",
                )
            )
    return out


def _site_reason(
    snapshot: model.Snapshot, site: model.Site, demand_kw: list[float], grid: planner_grid.Grid
) -> str:
    state = snapshot.states[site.name]
    if not state.heat_aware:
        return f"{site.name} has room (its heat is not counted: {state.reason or 'no metering'})"
    expected_kwh = sum(d * grid.length_s(k) / 3600.0 for k, d in enumerate(demand_kw))
    if site.tank.capacity_kwh > 0:
        tank = f"tank {state.tank_energy_kwh / site.tank.capacity_kwh:.0%} full"
    else:
        tank = "no tank"
    return (
        f"{site.name} ({site.offtaker.kind.value}) wants {demand_kw[0]:.1f} kW now, "
        f"{expected_kwh:.0f} kWh over the horizon; {tank}"
    )
