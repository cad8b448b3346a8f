"""A solver-independent plan checker and heat evaluator.

Whatever produced a plan (CP-SAT, a baseline, the fallback), :func:`check_plan`
verifies it against the snapshot with the jobs' real durations, and
:func:`expected_heat` plays it out over a demand outlook with the tank physics of
:mod:`heatshift.thermal`. Tests run every planner result through both; the planner
uses :func:`expected_heat` to report a plan's expected useful heat.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from heatshift import model, thermal

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str  # unknown-job, duplicate, site, not-allowed, too-early, late, capacity
    job_id: str
    message: str


def check_plan(snapshot: model.Snapshot, plan: model.Plan) -> list[Violation]:
    """Everything wrong with ``plan`` for ``snapshot``; empty when it is feasible.

    A start after the job's deadline is reported as ``late`` (callers decide whether
    it was avoidable).
    """
    jobs = {j.id: j for j in snapshot.pending}
    sites = {s.name: s for s in snapshot.sites}
    out: list[Violation] = []
    seen: set[str] = set()
    # (time, +1 start / -1 end, resources) events per site, for the capacity sweep.
    events: dict[str, list[tuple[float, int, model.Resources, str]]] = defaultdict(list)
    for r in snapshot.running:
        if r.end_s > snapshot.now_s:
            events[r.site].append((snapshot.now_s, 1, r.resources, r.id))
            events[r.site].append((r.end_s, -1, r.resources, r.id))
    for p in plan.placements:
        job = jobs.get(p.job_id)
        if job is None:
            out.append(Violation("unknown-job", p.job_id, "not a pending job"))
            continue
        if p.job_id in seen:
            out.append(Violation("duplicate", p.job_id, "placed twice"))
            continue
        seen.add(p.job_id)
        if p.site not in sites:
            out.append(Violation("site", p.job_id, f"unknown site {p.site}"))
            continue
        if not job.may_run_at(p.site):
            out.append(Violation("not-allowed", p.job_id, f"may not run at {p.site}"))
        if p.start_s < max(snapshot.now_s, job.release_s) - _EPS:
            out.append(Violation("too-early", p.job_id, "starts before now or its release"))
        if p.start_s > job.deadline_s + _EPS:
            out.append(Violation("late", p.job_id, "starts after its start deadline"))
        events[p.site].append((p.start_s, 1, job.resources, job.id))
        events[p.site].append((p.start_s + job.duration_s, -1, job.resources, job.id))
    for site_name, evs in events.items():
        cap = sites[site_name].capacity
        used = [0.0, 0.0, 0.0]
        # Ends before starts at the same instant: a slot freed at t can be reused at t.
        for t, sign, res, job_id in sorted(evs, key=lambda e: (e[0], e[1])):
            used[0] += sign * res.cpu
            used[1] += sign * res.memory_gib
            used[2] += sign * res.gpu
            if sign > 0 and (
                used[0] > cap.cpu + _EPS
                or used[1] > cap.memory_gib + _EPS
                or used[2] > cap.gpu + _EPS
            ):
                out.append(
                    Violation(
                        "capacity",
                        job_id,
                        f"{site_name} over capacity at t={t:.0f}: "
                        f"cpu={used[0]:g}/{cap.cpu:g} mem={used[1]:g}/{cap.memory_gib:g} "
                        f"gpu={used[2]:g}/{cap.gpu}",
                    )
                )
    return out


@dataclass(frozen=True, slots=True)
class PlanHeat:
    recovered_kwh: float
    useful_kwh: float
    dumped_kwh: float
    loss_kwh: float


def expected_heat(
    snapshot: model.Snapshot,
    placements: Sequence[model.Placement],
    slot_starts: Sequence[float],
    demand_kw: Mapping[str, Sequence[float]],
) -> PlanHeat:
    """Play ``placements`` out over the slots with the tank physics.

    ``slot_starts`` are slot boundaries (len = slots + 1) and ``demand_kw`` the expected
    demand per site and slot. Heat-unaware sites count no useful heat.
    """
    jobs = {j.id: j for j in snapshot.pending}
    runs: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for r in snapshot.running:
        runs[r.site].append((snapshot.now_s, r.end_s, r.power_watts))
    for p in placements:
        job = jobs[p.job_id]
        site = snapshot.site(p.site)
        runs[p.site].append(
            (p.start_s, p.start_s + job.duration_s, site.job_watts(job.resources, job.power_watts))
        )
    totals = [0.0, 0.0, 0.0, 0.0]
    for site in snapshot.sites:
        state = snapshot.states[site.name]
        energy = min(state.tank_energy_kwh, site.tank.capacity_kwh)
        for k in range(len(slot_starts) - 1):
            t0, t1 = slot_starts[k], slot_starts[k + 1]
            hours = (t1 - t0) / 3600.0
            watt_seconds = site.power.idle_watts * (t1 - t0)
            for start, end, watts in runs[site.name]:
                watt_seconds += watts * max(0.0, min(end, t1) - max(start, t0))
            recovered = thermal.recovered_heat_kw(site, watt_seconds / (t1 - t0)) * hours
            demand = demand_kw[site.name][k] * hours if state.heat_aware else 0.0
            flows = thermal.exchange_heat(site.tank, energy, recovered, demand, hours)
            energy = flows.energy_after_kwh
            totals[0] += flows.recovered_kwh
            totals[1] += flows.delivered_kwh
            totals[2] += flows.dumped_kwh
            totals[3] += flows.loss_kwh
    return PlanHeat(*totals)
