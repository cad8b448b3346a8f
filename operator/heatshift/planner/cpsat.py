"""The CP-SAT model: the only module that imports OR-Tools.

Takes a :class:`~heatshift.planner.problem.Problem` (plain numbers) and returns a
:class:`Solution` (plain numbers): ``CpModel`` and its variables never leave this
module. One function per family of variables or constraints, then the objective,
then a solve with time limit, workers and seed always set, and the solver's status
mapped to our own :class:`~heatshift.model.SolveStatus`.

Decisions: ``x[o]`` = how many jobs of option ``o``'s class start at its site and slot.
Per class: ``sum x + unplaced = count``; unplaced jobs whose deadline lies in the
horizon are late (heavily penalised, so only taken when capacity leaves no choice).
Per site and slot: the energy balance of DESIGN.md, linear in whole Wh.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ortools.sat.python import cp_model

from heatshift import model
from heatshift.planner import hint as planner_hint
from heatshift.planner import problem as planner_problem

# Model expressions, or plain ints where nothing varies (OR-Tools' own alias admits numpy).
_Expr = cp_model.LinearExpr | int


@dataclass(frozen=True, slots=True)
class Solution:
    status: model.SolveStatus
    counts: tuple[int, ...]  # per option; empty when no solution was found
    objective: float | None
    useful_heat_wh: int
    wall_seconds: float
    detail: str  # the solver's own words, for logs


_STATUS = {
    cp_model.OPTIMAL: model.SolveStatus.OPTIMAL,
    cp_model.FEASIBLE: model.SolveStatus.FEASIBLE,
}


@dataclass(slots=True)
class _HeatVars:
    delivered: list[cp_model.IntVar]
    final_energy: cp_model.IntVar | None


def _start_variables(m: cp_model.CpModel, p: planner_problem.Problem) -> list[cp_model.IntVar]:
    return [m.new_int_var(0, o.max_count, f"x{i}") for i, o in enumerate(p.options)]


def _capacity_holders(
    m: cp_model.CpModel, p: planner_problem.Problem, x: list[cp_model.IntVar], hint: list[int]
) -> tuple[list[cp_model.IntVar], list[int]]:
    """Per option, what holds capacity: its job count, or for jobs run in lanes
    (``per_lane`` > 1) the number of lanes, at least ``count / per_lane``."""
    holders: list[cp_model.IntVar] = []
    values: list[int] = []
    for i, (o, var, count) in enumerate(zip(p.options, x, hint, strict=True)):
        if o.per_lane <= 1:
            holders.append(var)
            values.append(count)
            continue
        lanes_hint = o.lanes(count)
        lanes = _hinted(m, 0, o.lanes(o.max_count), f"lanes{i}", lanes_hint)
        m.add(o.per_lane * lanes >= var)
        holders.append(lanes)
        values.append(lanes_hint)
    return holders, values


def _hinted(m: cp_model.CpModel, lo: int, hi: int, name: str, hint: int) -> cp_model.IntVar:
    var = m.new_int_var(lo, hi, name)
    m.add_hint(var, hint)
    return var


def _class_counts(
    m: cp_model.CpModel, p: planner_problem.Problem, x: list[cp_model.IntVar], hint: list[int]
) -> tuple[list[cp_model.IntVar], list[cp_model.IntVar]]:
    """Every job starts in the horizon, is deferred past it, or (last resort) is late."""
    by_class: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    placed = [0] * len(p.classes)
    for o, var, count in zip(p.options, x, hint, strict=True):
        by_class[o.job_class].append(var)
        placed[o.job_class] += count
    late: list[cp_model.IntVar] = []
    deferred: list[cp_model.IntVar] = []
    for c, data in enumerate(p.classes):
        rest = _hinted(m, 0, data.count, f"unplaced{c}", data.count - placed[c])
        m.add(sum(by_class[c]) + rest == data.count)
        (late if data.must_start_in_horizon else deferred).append(rest)
    return late, deferred


@dataclass(slots=True)
class _Terms:
    """A linear sum ``sum(coeffs[i] * variables[i])``, kept flat: OR-Tools builds one
    weighted sum from two lists many times faster than from nested ``+`` and ``*``."""

    variables: list[cp_model.IntVar]
    coeffs: list[int]

    def extend(self, other: _Terms, factor: int = 1) -> None:
        self.variables += other.variables
        self.coeffs += [factor * c for c in other.coeffs] if factor != 1 else other.coeffs

    def expr(self) -> cp_model.LinearExpr:
        total: cp_model.LinearExpr = cp_model.LinearExpr.weighted_sum(self.variables, self.coeffs)
        return total


def _running(
    m: cp_model.CpModel,
    p: planner_problem.Problem,
    x: list[cp_model.IntVar],
    option_ids: list[int],
    bucket: planner_problem.Bucket,
    weight: Callable[[planner_problem.StartOption], int],
    name: str,
    hint: list[int],
) -> tuple[list[_Terms], list[int]]:
    """Per slot k: the weighted number of these options' jobs still running in slot k
    (started in ``[window_start[k], k]``), as model terms and as values under ``hint``.

    Short windows are summed directly; long ones (long jobs on a fine grid) go through
    cumulative start counters, so each slot costs two terms however long the jobs run.
    """
    by_slot: dict[int, list[int]] = defaultdict(list)
    for i in option_ids:
        if weight(p.options[i]):
            by_slot[p.options[i].slot].append(i)
    slots = range(p.grid.slots)
    started: dict[int, tuple[list[cp_model.IntVar], list[int], int]] = {}
    for k, ids in by_slot.items():
        weights = [weight(p.options[i]) for i in ids]
        started[k] = (
            [x[i] for i in ids],
            weights,
            sum(hint[i] * w for i, w in zip(ids, weights, strict=True)),
        )

    # Terms a direct sum would take: per slot, the options started in its window (prefix sums).
    started_before = [0]
    for k in slots:
        started_before.append(started_before[-1] + len(by_slot.get(k, ())))
    direct_terms = sum(
        started_before[k + 1] - started_before[bucket.window_start[k]] for k in slots
    )
    if direct_terms <= 3 * sum(len(v) for v in by_slot.values()):
        terms: list[_Terms] = []
        values: list[int] = []
        for k in slots:
            sum_k = _Terms([], [])
            value = 0
            for j in range(bucket.window_start[k], k + 1):
                if j in started:
                    variables, weights, started_value = started[j]
                    sum_k.variables += variables
                    sum_k.coeffs += weights
                    value += started_value
            terms.append(sum_k)
            values.append(value)
        return terms, values

    cum: list[cp_model.IntVar | None] = []
    cum_values: list[int] = []
    previous: cp_model.IntVar | None = None
    value = 0
    bound = 0
    for k in slots:
        if k in started:
            variables, weights, started_value = started[k]
            bound += sum(p.options[i].max_count * weight(p.options[i]) for i in by_slot[k])
            value += started_value
            var = _hinted(m, 0, bound, f"{name}_{k}", value)
            before = [previous] if previous is not None else []
            m.add(
                cp_model.LinearExpr.weighted_sum(
                    [var, *before, *variables], [1, *([-1] * len(before)), *(-w for w in weights)]
                )
                == 0
            )
            previous = var
        cum.append(previous)
        cum_values.append(value)

    terms = []
    values = []
    for k in slots:
        first = bucket.window_start[k]
        window = _Terms([], [])
        last, earlier = cum[k], cum[first - 1] if first > 0 else None
        if last is not None:
            window.variables.append(last)
            window.coeffs.append(1)
        if earlier is not None:
            window.variables.append(earlier)
            window.coeffs.append(-1)
        terms.append(window)
        values.append(cum_values[k] - (cum_values[first - 1] if first > 0 else 0))
    return terms, values


def _site_buckets(p: planner_problem.Problem) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, o in enumerate(p.options):
        groups[(o.site, o.bucket)].append(i)
    return groups


def _capacity(
    m: cp_model.CpModel,
    p: planner_problem.Problem,
    x: list[cp_model.IntVar],
    groups: dict[tuple[int, int], list[int]],
    hint: list[int],
) -> None:
    """Jobs started at a site never use more than it has free in any slot they run in."""
    holders, held = _capacity_holders(m, p, x, hint)
    for s, site in enumerate(p.sites):
        for r in range(3):
            if not p.binding[s][r]:
                continue  # cannot run out even if every candidate job came here
            running = [
                _running(m, p, holders, ids, p.buckets[b], _units(p, r), f"c{s}_{b}_{r}", held)[0]
                for (site_index, b), ids in groups.items()
                if site_index == s
            ]
            for k in range(p.grid.slots):
                used = _Terms([], [])
                for per_slot in running:
                    used.extend(per_slot[k])
                if used.variables:
                    m.add(used.expr() <= max(site.free[k][r], 0))


def _units(p: planner_problem.Problem, r: int) -> Callable[[planner_problem.StartOption], int]:
    return lambda o: p.classes[o.job_class].units[r]


def _heat_watts(o: planner_problem.StartOption) -> int:
    return o.heat_watts


def _heat_balance(
    m: cp_model.CpModel,
    p: planner_problem.Problem,
    x: list[cp_model.IntVar],
    groups: dict[tuple[int, int], list[int]],
    hint: list[int],
) -> _HeatVars:
    """Tank energy balance per valued site and slot (DESIGN.md, "The physics").

    In joules, so whole-Wh energies and whole-second heat coefficients stay integral.
    The balance is an inequality: whatever is neither delivered nor kept is dumped, so
    dumped heat needs no variables (the objective counts it as produced - delivered -
    stored). Every variable is hinted with the hint plan played out the way
    :func:`heatshift.thermal.exchange_heat` does (serve demand, fill the tank, dump).
    """
    heat = _HeatVars(delivered=[], final_energy=None)
    finals: list[cp_model.IntVar] = []
    final_hint = 0
    for s, site in enumerate(p.sites):
        if not site.heat_valued:
            continue
        per_bucket = []
        for (site_index, b), ids in groups.items():
            if site_index == s:
                bucket = p.buckets[b]
                per_bucket.append(
                    (bucket, *_running(m, p, x, ids, bucket, _heat_watts, f"w{s}_{b}", hint))
                )
        cap = site.tank_capacity_wh
        energy: _Expr = site.tank_initial_wh
        energy_hint = site.tank_initial_wh
        for k in range(p.grid.slots):
            made_j = sum(b.heat_seconds[k] * v[k] for b, _, v in per_bucket)
            loss_hint = -(-site.loss_permille[k] * energy_hint // 1000)
            joules = 3600 * (energy_hint - loss_hint + site.base_heat_wh[k]) + made_j
            delivered_hint = min(site.demand_wh[k], joules // 3600)
            after_hint = min(cap, joules // 3600 - delivered_hint)
            delivered = _hinted(m, 0, site.demand_wh[k], f"h{s}_{k}", delivered_hint)
            loss = _hinted(m, 0, cap, f"l{s}_{k}", loss_hint)
            after = _hinted(m, 0, cap, f"e{s}_{k + 1}", after_hint)
            m.add(1000 * loss >= site.loss_permille[k] * energy)
            made = _Terms([], [])
            for in_bucket, e, _ in per_bucket:
                made.extend(e[k], in_bucket.heat_seconds[k])
            m.add(
                3600 * after
                <= 3600 * (energy - loss + site.base_heat_wh[k] - delivered) + made.expr()
            )
            heat.delivered.append(delivered)
            energy, energy_hint = after, after_hint
        assert isinstance(energy, cp_model.IntVar)
        finals.append(energy)
        final_hint += energy_hint
    if finals:
        total = _hinted(m, 0, sum(s.tank_capacity_wh for s in p.sites), "final_energy", final_hint)
        m.add(total == sum(finals))
        heat.final_energy = total
    return heat


def _produced_wh(p: planner_problem.Problem, o: planner_problem.StartOption) -> float:
    """Heat one job of option ``o`` recovers inside the horizon, Wh."""
    return o.heat_watts * p.buckets[o.bucket].counted_seconds[o.slot] / 3600.0


def _objective(
    m: cp_model.CpModel,
    p: planner_problem.Problem,
    x: list[cp_model.IntVar],
    late: list[cp_model.IntVar],
    deferred: list[cp_model.IntVar],
    heat: _HeatVars,
) -> None:
    """Useful heat first, then less dumped heat, then less (priority-weighted) delay."""
    per_wh = 1.0 / 1000.0
    horizon_h = (p.grid.end_s - p.grid.now_s) / 3600.0
    variables: list[cp_model.IntVar] = []
    weights: list[float] = []
    # Dumped (or lost) = produced - delivered - (final - initial tank energy), so its
    # cost is spread over the three: produced heat costs, delivered and kept heat earn.
    dumped_w = p.dumped_heat_weight * per_wh
    variables += heat.delivered
    weights += [p.useful_heat_weight * per_wh + dumped_w] * len(heat.delivered)
    if heat.final_energy is not None:
        variables.append(heat.final_energy)
        weights.append(p.stored_heat_weight * per_wh + dumped_w)
    valued = [site.heat_valued for site in p.sites]
    for o, var in zip(p.options, x, strict=True):
        weight = p.delay_weight * (p.classes[o.job_class].priority + 1) * o.delay_hours
        if valued[o.site]:
            weight += dumped_w * _produced_wh(p, o)
        if weight:
            variables.append(var)
            weights.append(-weight)
    deferred_classes = [c for c, d in enumerate(p.classes) if not d.must_start_in_horizon]
    for c, var in zip(deferred_classes, deferred, strict=True):
        variables.append(var)
        weights.append(-p.delay_weight * (p.classes[c].priority + 1) * horizon_h)
    must_start = [d for d in p.classes if d.must_start_in_horizon]
    variables += late
    weights += [-(p.overdue_penalty if d.overdue else p.late_penalty) for d in must_start]
    m.maximize(cp_model.LinearExpr.weighted_sum(variables, weights))


def _tune(parameters: Any, seed: int) -> None:
    parameters.random_seed = seed
    # Probing and symmetry detection cost more than they find on these flow-like
    # models (measured: 1.6 s of presolve on 150 jobs, no better plans).
    parameters.cp_model_probing_level = 0
    parameters.symmetry_level = 0


def solve(
    p: planner_problem.Problem,
    *,
    time_limit_s: float,
    deterministic_time: float,
    workers: int,
    seed: int,
    gap_limit: float = 0.005,
) -> Solution:
    """Build and solve the model.

    When the solver finds no plan in time the result has status FALLBACK and the counts
    of the starting plan (:func:`heatshift.planner.hint.heat_seeking_counts`).
    """
    started = time.perf_counter()
    m = cp_model.CpModel()
    # CP-SAT left alone spends seconds finding any plan without late jobs; start it
    # from the heat-seeking plan, with every variable hinted (it drops a hint it
    # cannot complete cheaply).
    hint = planner_hint.heat_seeking_counts(p)
    x = _start_variables(m, p)
    for var, count in zip(x, hint, strict=True):
        m.add_hint(var, count)
    late, deferred = _class_counts(m, p, x, hint)
    groups = _site_buckets(p)
    _capacity(m, p, x, groups, hint)
    heat = _heat_balance(m, p, x, groups, hint)
    _objective(m, p, x, late, deferred, heat)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    # With one worker, the deterministic limit makes the same snapshot and seed give the
    # same plan even when time runs out; the wall-clock limit stays as a hard bound.
    solver.parameters.max_deterministic_time = deterministic_time
    solver.parameters.relative_gap_limit = gap_limit
    _tune(solver.parameters, seed)
    code = solver.solve(m)
    status = _STATUS.get(code)
    # A search that stopped short of its work budget without proving its plan optimal was
    # stopped by the wall clock (a loaded machine): the plan may not repeat, and says so.
    cut = (
        code in (cp_model.FEASIBLE, cp_model.UNKNOWN)
        and solver.deterministic_time < 0.999 * deterministic_time
    )
    detail = solver.status_name(code)
    if cut:
        detail += (
            f", stopped by the {time_limit_s:g}s wall-clock limit after "
            f"{solver.deterministic_time:.3f} of {deterministic_time:g} work units"
        )
        if status is model.SolveStatus.FEASIBLE:
            status = model.SolveStatus.TIMED_OUT
    if status is None:
        # Nothing better in time: the starting plan the search began from is feasible
        # by construction, so it is the fallback.
        return Solution(
            status=model.SolveStatus.FALLBACK,
            counts=tuple(hint),
            objective=None,
            useful_heat_wh=0,
            wall_seconds=time.perf_counter() - started,
            detail=detail,
        )
    return Solution(
        status=status,
        counts=tuple(int(solver.value(v)) for v in x),
        objective=float(solver.objective_value),
        useful_heat_wh=int(sum(solver.value(h) for h in heat.delivered)),
        wall_seconds=time.perf_counter() - started,
        detail=solver.status_name(code),
    )
