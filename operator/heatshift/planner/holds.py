"""Waiting must buy heat: start at once every held job whose hold the plan expects to buy none.

A plan holds a job (places it later, or not at all inside the horizon) because the solver found
that heat better later; but the solver weighs delay so little against heat that, when every
site wants all the heat there is, it may hold work for nothing. :func:`start_unprofitable_holds`
checks each hold against the plan's own outlook (the tank physics of
:mod:`heatshift.thermal` over the plan's slots and demand): a job starts now, where it has room,
unless holding it is expected to deliver more useful heat than starting it now. Where the plan
cannot start every job by its deadline (a congested fleet), nothing waits for heat: every held
job that fits starts now, since compute has precedence over heat and work started now frees room
sooner for what arrives next; jobs that can still start in time go first, overdue ones (late
whenever they start) after them. Pure; called by
:mod:`heatshift.planner.heataware` on every plan, after the deadline guard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from heatshift import model, thermal

_EPS_S = 1e-6
_JOULES_PER_KWH = 3.6e6
_BUYS_HEAT_KWH = 1e-6
"""A hold that the outlook expects to deliver no more than this is not worth it (rounding)."""
MAX_TRIALS = 1_000
"""Holds checked per plan at most (each costs a replay of one site's slots)."""
_UNPLACED_SITES = 4

"""Sites tried for a job the plan did not place."""


@dataclass(slots=True)
class _Run:
    start: float
    end: float
    watts: float
    resources: model.Resources


class _SiteOutlook:
    """One site's expected heat over the slots, with its load kept per slot (so moving one
    job costs a pass over the slots, not over every job there)."""

    def __init__(
        self,
        site: model.Site,
        state: model.SiteState,
        slot_starts: Sequence[float],
        demand_kw: Sequence[float],
    ) -> None:
        self.site = site
        self.slot_starts = slot_starts
        self.tank = min(state.tank_energy_kwh, site.tank.capacity_kwh)
        self.demand_kw = demand_kw if state.heat_aware else [0.0] * (len(slot_starts) - 1)
        self.joules = [
            site.power.idle_watts * (slot_starts[k + 1] - slot_starts[k])
            for k in range(len(slot_starts) - 1)
        ]
        self.runs: dict[str, _Run] = {}
        self.dumped_kwh = 0.0

    def add(self, key: str, run: _Run, sign: float = 1.0) -> None:
        for k in range(len(self.joules)):
            t0, t1 = self.slot_starts[k], self.slot_starts[k + 1]
            if t0 >= run.end:
                break
            overlap = min(run.end, t1) - max(run.start, t0)
            if overlap > 0:
                self.joules[k] += sign * run.watts * overlap
        if sign > 0:
            self.runs[key] = run
        else:
            del self.runs[key]

    def useful_kwh(self) -> float:
        """Expected useful heat over the slots, plus what the tank holds at their end (it
        serves demand after them); :attr:`dumped_kwh` is left with what the replay dumped."""
        energy, total = self.tank, 0.0
        self.dumped_kwh = 0.0
        for k, joules in enumerate(self.joules):
            hours = (self.slot_starts[k + 1] - self.slot_starts[k]) / 3600.0
            recovered = self.site.heat_recovery_efficiency * joules / _JOULES_PER_KWH
            demand = self.demand_kw[k] * hours
            flows = thermal.exchange_heat(self.site.tank, energy, recovered, demand, hours)
            energy = flows.energy_after_kwh
            total += flows.delivered_kwh
            self.dumped_kwh += flows.dumped_kwh
        # Heat still in the tank at the horizon's end serves demand after it: a hold that
        # leaves more there buys heat too.
        return total + energy

    def wanted_kwh(self) -> float:
        return sum(
            d * (self.slot_starts[k + 1] - self.slot_starts[k]) / 3600.0
            for k, d in enumerate(self.demand_kw)
        )

    def fits(self, need: model.Resources, start: float, end: float) -> bool:
        """True when ``need`` fits beside every other run at every instant of ``[start, end)``."""
        overlapping = [r for r in self.runs.values() if r.start < end and r.end > start]
        # Use peaks where a run starts (or at ``start``): check each such instant.
        instants = [start] + [r.start for r in overlapping if r.start > start]
        cap = self.site.capacity
        for t in instants:
            live = [r.resources for r in overlapping if r.start <= t + _EPS_S < r.end]
            total = need
            for used in live:
                total = total.plus(used)
            if not total.fits_within(cap):
                return False
        return True


def start_unprofitable_holds(
    snapshot: model.Snapshot,
    placements: Sequence[model.Placement],
    slot_starts: Sequence[float],
    demand_kw: Mapping[str, Sequence[float]],
    congested: bool = False,
) -> tuple[list[model.Placement], list[str]]:
    """``placements`` with every hold that buys no expected heat (``congested``: every hold)
    started now instead.

    Held jobs are the pending jobs placed after now, and those released but not placed at
    all; each is tried at its planned site (an unplaced job at a few sites it may use, those
    with most unmet demand first) from ``max(now, release)``, earliest deadline first. A
    placed job moves when it fits there beside everything else, the site's expected useful
    heat (with what its tank holds at the end) does not drop and the site dumps no heat with
    the job started now (it wants all the heat it makes); an unplaced one when it fits and the
    heat grows (the outlook cannot see what its heat is worth after the horizon, so holding it
    may still pay).
    """
    now = snapshot.now_s
    jobs = {j.id: j for j in snapshot.pending}
    outlook = {
        s.name: _SiteOutlook(s, snapshot.states[s.name], slot_starts, demand_kw[s.name])
        for s in snapshot.sites
    }
    for r in snapshot.running:
        if r.site in outlook and r.end_s > now:
            outlook[r.site].add(r.id, _Run(now, r.end_s, r.power_watts, r.resources))
    planned: dict[str, model.Placement] = {}
    for p in placements:
        job = jobs[p.job_id]
        site = outlook[p.site].site
        watts = site.job_watts(job.resources, job.power_watts)
        outlook[p.site].add(
            job.id, _Run(p.start_s, p.start_s + job.duration_s, watts, job.resources)
        )
        planned[job.id] = p
    held = sorted(
        (
            j
            for j in snapshot.pending
            if (j.id in planned and planned[j.id].start_s > max(now, j.release_s) + _EPS_S)
            or (j.id not in planned and j.release_s <= now + _EPS_S)
        ),
        # Jobs that can still start in time before overdue ones, which are late anyway.
        key=lambda j: (j.is_overdue_at(now), j.deadline_s, j.id),
    )
    useful = {name: o.useful_kwh() for name, o in outlook.items()}
    wanted = {name: o.wanted_kwh() for name, o in outlook.items()}
    moved = 0
    trials = 0
    for job in held[:MAX_TRIALS]:
        start = max(now, job.release_s)
        current = planned.get(job.id)
        if current is not None:
            candidates = [current.site]
        else:
            # The sites with the most demand the outlook leaves unmet first, a few of them.
            candidates = sorted(
                (
                    s.name
                    for s in snapshot.sites
                    if job.may_run_at(s.name) and job.resources.fits_within(s.capacity)
                ),
                key=lambda name: (useful[name] - wanted[name], name),
            )[:_UNPLACED_SITES]
        best: tuple[float, str, float] | None = None  # (gain, site, its useful heat)
        for name in candidates:
            if trials >= MAX_TRIALS:
                break
            site_outlook = outlook[name]
            old = site_outlook.runs.get(job.id)
            if old is not None:
                site_outlook.add(job.id, old, -1.0)
            run = _Run(
                start,
                start + job.duration_s,
                site_outlook.site.job_watts(job.resources, job.power_watts),
                job.resources,
            )
            if site_outlook.fits(job.resources, run.start, run.end):
                trials += 1
                site_outlook.add(job.id, run)
                heat = site_outlook.useful_kwh()
                site_outlook.add(job.id, run, -1.0)
                gain = heat - useful[name]
                # A job placed later moves unless its hold buys heat; one not placed in the
                # horizon (its heat may be wanted after it) only when starting buys heat.
                least = -_BUYS_HEAT_KWH if current is not None else _BUYS_HEAT_KWH
                # Only where the site wants all the heat it makes (it dumps none even with
                # the job started now): elsewhere a hold the outlook calls even can still
                # pay (measured on the built-in week: 122 kWh lost without this test).
                wanted_all = site_outlook.dumped_kwh <= _BUYS_HEAT_KWH
                # Congested: the first site it fits at (the loop stops there), heat or not.
                if congested or (
                    gain >= least
                    and (current is None or wanted_all)
                    and (best is None or gain > best[0] + _BUYS_HEAT_KWH)
                ):
                    best = (gain, name, heat)
            if old is not None:
                site_outlook.add(job.id, old)
            if congested and best is not None:
                break
        if best is None:
            continue
        _, name, heat = best
        site_outlook = outlook[name]
        if current is not None:
            site_outlook.add(job.id, site_outlook.runs[job.id], -1.0)
        site_outlook.add(
            job.id,
            _Run(
                start,
                start + job.duration_s,
                site_outlook.site.job_watts(job.resources, job.power_watts),
                job.resources,
            ),
        )
        useful[name] = heat
        why = _CONGESTED if congested else f"holding it is expected to buy no heat at {name}"
        planned[job.id] = model.Placement(
            job_id=job.id, site=name, start_s=start, reason=f"start now: {why}"
        )
        moved += 1
    notes = []
    if moved:
        why = _CONGESTED if congested else "holding them was expected to buy no heat"
        notes.append(f"{moved} held job(s) started now: {why}")
    return list(planned.values()), notes


_CONGESTED = "the plan cannot start every job by its deadline, so nothing waits for heat"
