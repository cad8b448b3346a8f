"""An upper bound on useful heat: a linear relaxation of the fleet's physics.

:func:`useful_heat_bound` answers "how much heat could *any* schedule that misses no
deadline deliver over these slots?" with one linear programme (OR-Tools' GLOP, a
deterministic simplex). Called by the simulator (:mod:`heatshift.sim.bound`, the ``bound`` row
of ``heatshift simulate``) and by ``heatshift bench planner`` (the bound over a snapshot's
horizon). Pure: no clock, the same inputs give the same number.

Why it is a valid bound. Take any schedule that starts each job once, at one site it may run
at, at a time ``tau`` in ``[earliest, latest]`` (``latest`` is the start deadline), never over a
site's capacity, and play it through the tank physics of :func:`heatshift.thermal.exchange_heat`
slot by slot. Read off, per job, site and slot, the fraction ``u`` of the slot the job runs
there, and per site and slot the delivered heat ``H`` and the tank energy ``E`` after it.
These numbers satisfy every constraint below, so the programme's optimum is at least that
schedule's useful heat:

* ``0 <= u[j,s,k] <= most``, where ``most`` is the largest overlap with slot ``k`` of any run
  ``[tau, tau + duration)`` with ``tau`` in the job's window (and ``u = 0`` at sites the job may
  not run at or does not fit); the sum over sites lies between the smallest such overlap (when
  the job must start) and the largest, since a job runs at one site at a time;
* the slot-seconds a job runs, summed over sites and slots, lie between what a start at its
  deadline puts inside the horizon (when it must start) and ``min(duration, end - earliest)``;
* per site, slot and resource: the mean use over the slot is at most the capacity (use at
  every instant is, so its mean is);
* the tank: ``E[k+1] <= (1 - lambda)^hours * E[k] + Q[k] - H[k]`` with recovered heat ``Q``
  linear in ``u`` (idle and running jobs included), ``0 <= E <= capacity``, ``E[0]`` the
  starting energy, and ``0 <= H[k] <= demand[k]``. The simulator's ``H = min(demand,
  available)`` and ``E = min(available - H, capacity)`` satisfy them, its dumped heat being the
  slack of the inequality.

Past its size budget the programme is built coarser: every job of one *shape* (the same sites
it may use, resources and power, so the same heat and use per unit of ``u`` at each site) shares
one variable per site and slot, and each job's rows are replaced by their sums over the shape
(``Bound.merged``). Summing rows only drops constraints, and the per-job ``u`` of any schedule sum
to a point of the merged programme with the same heat, so its optimum is a limit too, a looser
one (shape by shape, one job's allowance in a slot may be spent by another).

The programme drops what makes scheduling hard (a job's run is one contiguous interval, at
one site, its start shared by all its slots), so its optimum can be above every real
schedule: it is a limit, not a plan. Heat made by a job that starts after its deadline is not
covered; jobs already late at the start (deadline before the first slot) may start at any time.
Where no schedule meets every deadline, the programme is solved again with every job free to
start at any time from its release: a limit for every schedule at all.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ortools.linear_solver import pywraplp

from heatshift import model, thermal
from heatshift.planner import config as planner_config
from heatshift.planner import grid as planner_grid
from heatshift.planner import problem as planner_problem

_JOULES_PER_KWH = 3.6e6
_SLACK = 1e-9  # the simulator's own slack on capacity checks
_LOOSER = 1.0 - 1e-7
_TINY_KWH = 1e-6
"""Energies this small are raised to it (a looser limit, so still valid): the simplex's
tolerances cannot tell 1e-176 kWh (or a nanowatt-hour) from zero, and such a bound made it
give up."""


def _not_tiny(kwh: float) -> float:
    return kwh if kwh <= 0.0 or kwh >= _TINY_KWH else _TINY_KWH


class BoundStatus(enum.StrEnum):
    """How the bound came about."""

    OPTIMAL = "optimal"  # the linear programme's optimum
    DEADLINES_DROPPED = "deadlines-dropped"  # no schedule meets every deadline: the optimum
    # with deadlines dropped, the limit of any schedule
    TRIVIAL = "trivial"  # the LP did not solve: the heat-made-or-demanded bound instead


@dataclass(frozen=True, slots=True)
class Bound:
    """The limit on useful heat over the slots, kWh, and how it was found."""

    useful_heat_kwh: float
    status: BoundStatus
    variables: int
    constraints: int
    merged: bool = False
    """Jobs of one shape shared variables (a looser programme, past the size budget)."""

    def how(self) -> str:
        """How the bound came about, in words."""
        words = {
            BoundStatus.OPTIMAL: "optimal",
            BoundStatus.DEADLINES_DROPPED: "optimal with deadlines dropped: no schedule meets "
            "them all",
            BoundStatus.TRIVIAL: "trivial: heat made or demanded, whichever is less",
        }[self.status]
        return words + (", jobs of one shape merged" if self.merged else "")


MAX_VARIABLES = 400_000
"""Largest programme built (the built-in week needs about 194,000 variables); past it the jobs
of one shape are merged, and past that too the bound is the trivial one."""


@dataclass(frozen=True, slots=True)
class _Window:
    """When a job may start, and the slots its runs can touch."""

    earliest: float
    latest: float
    must_start: bool  # its start deadline lies inside the slots
    slots: range


def _window(job: model.JobRequest, slot_starts: Sequence[float], deadlines: bool) -> _Window | None:
    now, end = slot_starts[0], slot_starts[-1]
    earliest = max(now, job.release_s)
    if earliest >= end:
        return None
    late = not deadlines or job.deadline_s < now
    latest = end if late else job.deadline_s
    first = bisect.bisect_right(slot_starts, earliest) - 1
    last = bisect.bisect_left(slot_starts, min(end, latest + job.duration_s))
    return _Window(earliest, latest, not late and latest < end, range(max(first, 0), last))


@dataclass(slots=True)
class _Column:
    """What shares one variable per site and slot: one job, or every job of one shape.

    ``slots`` maps a slot to the seconds run in it, summed over sites: at least (a job that
    must start) and at most; ``run_lo`` and ``run_hi`` bound the seconds run over every slot
    and site."""

    hosts: tuple[model.Site, ...]
    amounts: tuple[float, float, int]
    watts: tuple[float, ...]  # per host
    slots: dict[int, list[float]]
    run_lo: float
    run_hi: float

    def merge(self, other: _Column) -> None:
        for k, (lo, hi) in other.slots.items():
            mine = self.slots.setdefault(k, [0.0, 0.0])
            mine[0] += lo
            mine[1] += hi
        self.run_lo += other.run_lo
        self.run_hi += other.run_hi


_Shape = tuple[tuple[str, ...], tuple[float, float, int], tuple[float, ...]]
_Shaped = tuple[model.JobRequest, tuple[model.Site, ...], _Shape, _Window]
"""A job that can run in the slots: where, its shape (the key jobs merge by), when."""


def _shapes(
    sites: Sequence[model.Site],
    slot_starts: Sequence[float],
    jobs: Sequence[model.JobRequest],
    deadlines: bool,
) -> list[_Shaped]:
    """The jobs that can run in the slots (``deadlines`` False: at any time from release)."""
    out: list[_Shaped] = []
    # Jobs share a handful of shapes: each one's hosts and watts are worked out once.
    known: dict[
        tuple[model.Resources, frozenset[str] | None, float | None],
        tuple[tuple[model.Site, ...], _Shape],
    ] = {}
    for job in jobs:
        window = _window(job, slot_starts, deadlines)
        if window is None or not window.slots:
            continue
        key = (job.resources, job.allowed_sites, job.power_watts)
        if key not in known:
            hosts = tuple(
                s for s in sites if job.may_run_at(s.name) and job.resources.fits_within(s.capacity)
            )
            watts = tuple(s.job_watts(job.resources, job.power_watts) for s in hosts)
            known[key] = (hosts, (tuple(s.name for s in hosts), job.resources.as_tuple(), watts))
        hosts, shape = known[key]
        if hosts:
            out.append((job, hosts, shape, window))
    return out


def _size(
    sites: Sequence[model.Site],
    slot_starts: Sequence[float],
    shaped: Sequence[_Shaped],
    merged: bool,
) -> int:
    """About how many variables the programme would have (at most)."""
    total = len(sites) * 2 * (len(slot_starts) - 1)
    if not merged:
        return total + sum(len(hosts) * len(w.slots) for _, hosts, _, w in shaped)
    spans: dict[_Shape, tuple[int, int]] = {}
    for _, _, shape, w in shaped:
        first, last = spans.get(shape, (w.slots.start, w.slots.stop))
        spans[shape] = (min(first, w.slots.start), max(last, w.slots.stop))
    return total + sum(len(shape[0]) * (last - first) for shape, (first, last) in spans.items())


def _columns(
    slot_starts: Sequence[float],
    shaped: Sequence[_Shaped],
    merged: bool,
) -> list[_Column]:
    """One column per job, or (``merged``) per shape, jobs in their given order."""
    end = slot_starts[-1]
    columns: list[_Column] = []
    by_shape: dict[_Shape, _Column] = {}
    for job, hosts, shape, w in shaped:
        d = job.duration_s
        slots: dict[int, list[float]] = {}
        for k in w.slots:
            lo, hi = _overlap_range(w.earliest, w.latest, d, slot_starts[k], slot_starts[k + 1])
            if hi > 0:
                slots[k] = [lo if w.must_start else 0.0, hi]
        if not slots:
            continue
        column = _Column(
            hosts,
            shape[1],
            shape[2],
            slots,
            min(d, max(0.0, end - w.latest)) if w.must_start else 0.0,
            min(d, end - w.earliest),
        )
        if not merged:
            columns.append(column)
        elif shape in by_shape:
            by_shape[shape].merge(column)
        else:
            columns.append(by_shape.setdefault(shape, column))
    return columns


def _trivial_bound(
    sites: Sequence[model.Site],
    slot_starts: Sequence[float],
    demand_kw: Mapping[str, Sequence[float]],
    initial_tank_kwh: Mapping[str, float],
    jobs: Sequence[model.JobRequest],
    base_joules: Mapping[str, Sequence[float]],
) -> Bound:
    """Per site, the lesser of its demand and all heat it could get: its tank, its fixed load,
    and every job's heat at the site where it would make the most."""
    now, end = slot_starts[0], slot_starts[-1]
    best_watts: dict[tuple[model.Resources, float | None], float] = {}  # a few shapes, many jobs
    jobs_kwh = 0.0
    for j in jobs:
        key = (j.resources, j.power_watts)
        if key not in best_watts:
            best_watts[key] = max(
                (s.heat_recovery_efficiency * s.job_watts(*key) for s in sites), default=0.0
            )
        seconds = max(0.0, min(j.duration_s, end - max(now, j.release_s)))
        jobs_kwh += best_watts[key] * seconds / _JOULES_PER_KWH
    total = 0.0
    for s in sites:
        demand = demand_kw.get(s.name, ())
        wanted = sum(
            max(0.0, demand[k]) * (slot_starts[k + 1] - slot_starts[k]) / 3600.0
            for k in range(min(len(demand), len(slot_starts) - 1))
        )
        made = float(initial_tank_kwh.get(s.name, 0.0)) + sum(
            s.heat_recovery_efficiency * j / _JOULES_PER_KWH for j in base_joules[s.name]
        )
        total += min(wanted, made + jobs_kwh)
    return Bound(total, BoundStatus.TRIVIAL, 0, 0)


def _overlap(start: float, duration: float, t0: float, t1: float) -> float:
    return max(0.0, min(start + duration, t1) - max(start, t0))


def _overlap_range(
    earliest: float, latest: float, duration: float, t0: float, t1: float
) -> tuple[float, float]:
    """Smallest and largest overlap with ``[t0, t1)`` of a run starting in ``[earliest,
    latest]``. The overlap is unimodal in the start, so its minimum is at an end of the
    window and its maximum at an end or where the run first covers the slot."""
    lo = min(_overlap(earliest, duration, t0, t1), _overlap(latest, duration, t0, t1))
    candidates = (
        earliest,
        latest,
        min(max(t0, earliest), latest),
        min(max(t1 - duration, earliest), latest),
    )
    hi = max(_overlap(c, duration, t0, t1) for c in candidates)
    return lo, hi


def useful_heat_bound(
    sites: Sequence[model.Site],
    slot_starts: Sequence[float],
    demand_kw: Mapping[str, Sequence[float]],
    initial_tank_kwh: Mapping[str, float],
    jobs: Sequence[model.JobRequest],
    running: Sequence[model.RunningJob] = (),
    max_variables: int = MAX_VARIABLES,
    merge_jobs: bool | None = None,
    deadlines: bool = True,
) -> Bound:
    """The most useful heat any deadline-meeting schedule of ``jobs`` delivers, kWh.

    ``slot_starts`` are the slot boundaries (slots + 1 of them, the first is "now"),
    ``demand_kw`` the heat each site's offtaker takes per slot (already capped at its
    rating), ``initial_tank_kwh`` the tanks' energy at the start, ``running`` jobs already
    running from the start. A job may start no earlier than ``max(now, release)`` and no later
    than its deadline; a job whose deadline lies inside the slots must start. When no schedule
    meets every deadline (an overloaded fleet) the programme is solved again with deadlines
    dropped, every job free to start at any time from its release: the limit of any schedule
    at all (status DEADLINES_DROPPED). A programme of more than about ``max_variables``
    variables is not built: the jobs of each shape are merged (``merged``), and if that is still
    too big the bound is the trivial one (status TRIVIAL). ``merge_jobs`` True merges them
    whatever the size, False never does; ``deadlines`` False drops deadlines from the start.
    """
    now = slot_starts[0]
    slots = len(slot_starts) - 1
    lengths = [slot_starts[k + 1] - slot_starts[k] for k in range(slots)]
    # Fixed load per site and slot: idle power and running jobs (heat, and resources held).
    base_joules = {s.name: [s.power.idle_watts * lengths[k] for k in range(slots)] for s in sites}
    held = {s.name: [[0.0, 0.0, 0.0] for _ in range(slots)] for s in sites}
    for r in running:
        if r.site not in held:
            continue
        for k in range(slots):
            seconds = _overlap(now, r.end_s - now, slot_starts[k], slot_starts[k + 1])
            if seconds > 0:
                base_joules[r.site][k] += r.power_watts * seconds
                share = seconds / lengths[k]
                for i, amount in enumerate(r.resources.as_tuple()):
                    held[r.site][k][i] += amount * share

    found: Bound | None = None  # the last programme's answer, once one was built
    for kept in (True, False) if deadlines else (False,):
        shaped = _shapes(sites, slot_starts, jobs, kept)
        merged = (
            merge_jobs
            if merge_jobs is not None
            else _size(sites, slot_starts, shaped, merged=False) > max_variables
        )
        if _size(sites, slot_starts, shaped, merged=merged) > max_variables:
            break
        columns = _columns(slot_starts, shaped, merged)
        found = _programme(
            sites, slot_starts, demand_kw, initial_tank_kwh, base_joules, held, columns
        )
        found = replace(found, merged=merged)
        if found.status is BoundStatus.OPTIMAL:
            if not kept:
                found = replace(found, status=BoundStatus.DEADLINES_DROPPED)
            return found
        # Not optimal with deadlines: no schedule meets them all (or the simplex gave up);
        # the programme without them is feasible whatever the fleet.
    if found is not None:
        return found
    return _trivial_bound(sites, slot_starts, demand_kw, initial_tank_kwh, jobs, base_joules)


def _programme(
    sites: Sequence[model.Site],
    slot_starts: Sequence[float],
    demand_kw: Mapping[str, Sequence[float]],
    initial_tank_kwh: Mapping[str, float],
    base_joules: Mapping[str, Sequence[float]],
    held: Mapping[str, Sequence[Sequence[float]]],
    columns: Sequence[_Column],
) -> Bound:
    """The programme's optimum (status OPTIMAL), or if the simplex finds none the trivial
    bound over the columns' heat (status TRIVIAL)."""
    slots = len(slot_starts) - 1
    lengths = [slot_starts[k + 1] - slot_starts[k] for k in range(slots)]
    solver = pywraplp.Solver.CreateSolver("GLOP")
    inf = solver.infinity()

    # heat[s][k]: (variable, joules per unit); use[s][k][r]: (variable, amount)
    heat: dict[str, list[list[tuple[pywraplp.Variable, float]]]] = {
        s.name: [[] for _ in range(slots)] for s in sites
    }
    use: dict[str, list[list[list[tuple[pywraplp.Variable, float]]]]] = {
        s.name: [[[], [], []] for _ in range(slots)] for s in sites
    }
    peak: dict[str, list[list[float]]] = {
        s.name: [[0.0, 0.0, 0.0] for _ in range(slots)] for s in sites
    }
    made_kwh_at_most = 0.0  # for the trivial bound
    for c, column in enumerate(columns):
        # Lower limits a hair looser (a relaxation, so still valid): the per-slot and total
        # rows of a job with no slack pin the same amount twice, and rounding must not make
        # the programme look infeasible.
        total = solver.Constraint(_LOOSER * column.run_lo, column.run_hi, f"run{c}")
        made_kwh_at_most += (
            max(
                s.heat_recovery_efficiency * watts
                for s, watts in zip(column.hosts, column.watts, strict=True)
            )
            * column.run_hi
            / _JOULES_PER_KWH
        )
        several = len(column.hosts) > 1
        for k, (lo, hi) in column.slots.items():
            length = lengths[k]
            per_slot = (
                solver.Constraint(_LOOSER * lo / length, hi / length, f"at{c}_{k}")
                if several
                else None
            )
            for s, watts in zip(column.hosts, column.watts, strict=True):
                u = solver.NumVar(
                    _LOOSER * lo / length if per_slot is None else 0.0,
                    hi / length,
                    f"u{c}_{s.name}_{k}",
                )
                total.SetCoefficient(u, length)
                if per_slot is not None:
                    per_slot.SetCoefficient(u, 1.0)
                heat[s.name][k].append((u, watts * length))
                for i, amount in enumerate(column.amounts):
                    if amount:
                        use[s.name][k][i].append((u, amount))
                        peak[s.name][k][i] += amount * hi / length

    for s in sites:
        capacity = s.capacity.as_tuple()
        for k in range(slots):
            for i in range(3):
                room = capacity[i] + _SLACK - held[s.name][k][i]
                if peak[s.name][k][i] <= room:
                    continue  # cannot run out even if every candidate ran here throughout
                row = solver.Constraint(-inf, max(room, 0.0), f"cap{s.name}_{k}_{i}")
                for u, amount in use[s.name][k][i]:
                    row.SetCoefficient(u, amount)

    delivered: list[pywraplp.Variable] = []
    trivial = 0.0
    for s in sites:
        energy: pywraplp.Variable | float = float(initial_tank_kwh.get(s.name, 0.0))
        demand = demand_kw.get(s.name, ())
        site_demand = 0.0
        for k in range(slots):
            hours = lengths[k] / 3600.0
            keep = 1.0 - thermal.standing_loss_kwh(s.tank, 1.0, hours)
            wanted = max(0.0, demand[k] if k < len(demand) else 0.0) * hours
            site_demand += wanted
            h = solver.NumVar(0.0, _not_tiny(wanted), f"h{s.name}_{k}")
            after = solver.NumVar(0.0, _not_tiny(s.tank.capacity_kwh), f"e{s.name}_{k + 1}")
            eta = s.heat_recovery_efficiency / _JOULES_PER_KWH
            # after + h - keep * energy - Q(u) <= base heat
            base = _not_tiny(eta * base_joules[s.name][k])
            if isinstance(energy, float):
                row = solver.Constraint(-inf, base + keep * energy, f"tank{s.name}_{k}")
            else:
                row = solver.Constraint(-inf, base, f"tank{s.name}_{k}")
                row.SetCoefficient(energy, -keep)
            row.SetCoefficient(after, 1.0)
            row.SetCoefficient(h, 1.0)
            for u, joules in heat[s.name][k]:
                row.SetCoefficient(u, -_not_tiny(eta * joules))
            delivered.append(h)
            energy = after
        made = float(initial_tank_kwh.get(s.name, 0.0)) + sum(
            s.heat_recovery_efficiency * j / _JOULES_PER_KWH for j in base_joules[s.name]
        )
        trivial += min(site_demand, made + made_kwh_at_most)

    objective = solver.Objective()
    for h in delivered:
        objective.SetCoefficient(h, 1.0)
    objective.SetMaximization()
    code = solver.Solve()
    variables, constraints = solver.NumVariables(), solver.NumConstraints()
    if code != pywraplp.Solver.OPTIMAL:
        return Bound(trivial, BoundStatus.TRIVIAL, variables, constraints)
    return Bound(objective.Value(), BoundStatus.OPTIMAL, variables, constraints)


@dataclass(frozen=True, slots=True)
class HorizonBound:
    """The bound over a snapshot's planning horizon, and the slots and demand it used (a
    plan's heat compares with it when played over the same slots and demand)."""

    bound: Bound
    slot_starts: tuple[float, ...]
    demand_kw: Mapping[str, Sequence[float]]


def horizon_bound(snapshot: model.Snapshot, cfg: planner_config.PlannerConfig) -> HorizonBound:
    """The most useful heat any deadline-meeting plan for ``snapshot`` can expect over the
    planner's horizon: its grid, its demand outlook (forecast, capped; zero at sites whose
    heat is not counted), the tanks as metered and the running jobs as they run."""
    grid = planner_grid.build_grid(snapshot.now_s, cfg)
    demand: dict[str, Sequence[float]] = {}
    for s in snapshot.sites:
        state = snapshot.states[s.name]
        outlook = planner_problem.slot_demand_kw(s, state, grid, cfg.step_s)
        demand[s.name] = outlook if state.heat_aware else [0.0] * grid.slots
    tanks = {
        s.name: min(snapshot.states[s.name].tank_energy_kwh, s.tank.capacity_kwh)
        for s in snapshot.sites
    }
    found = useful_heat_bound(
        snapshot.sites, grid.starts, demand, tanks, snapshot.pending, snapshot.running
    )
    return HorizonBound(found, grid.starts, demand)
