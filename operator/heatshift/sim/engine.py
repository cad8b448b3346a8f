"""The fleet simulator: replays a scenario through a policy, step by step, and scores it.

It drives the same :class:`~heatshift.planner.policies.Policy` interface the operator
uses (a Snapshot in, a Plan out), applies the plan's placements the way the operator
would (refusing any that break a site's capacity or a job's allow-list), plays the
physics of :mod:`heatshift.thermal` per site and step, and keeps the score: useful,
recoverable, dumped and boiler heat, deadline misses, waiting and planner time.
Called by ``heatshift simulate`` (:mod:`heatshift.cli`) and the tests. The simulator
may read a clock (to time each ``decide()``); the policy may not.

One step ``[t, t + step)`` runs as:

1. jobs released by ``t`` join the pending set; finished jobs leave the running set;
2. at a decision time (every ``replan_every_s``) the policy gets a snapshot and its plan
   replaces the previous one; otherwise the last plan's later placements are followed;
3. within the step, events in time order: placements starting before ``t + step``
   (each at ``max(t, start, release)``), releases of jobs submitted mid-step, and an
   extra decision at the release of a job whose deadline falls before the next decision;
4. the physics of the step, with each job's energy pro rata to its run inside the step.

Heat reuse counts only heat recovered in the run. A tank that starts with energy delivers
some of it too; that share is not reuse. The tank is taken as well mixed: whatever leaves
it in a step (delivered, dumped, lost) is the same blend of start-of-run and recovered heat
as it holds, so the recovered heat delivered is tracked per site beside the totals and is
never more than the heat recovered.
"""

from __future__ import annotations

import bisect
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from heatshift import ledger, model, thermal
from heatshift.planner import policies
from heatshift.sim import scenario as scenario_mod

EPS = 1e-6
"""Seconds: times closer than this are the same instant (and a start this late is on time)."""

_RELEASE_EPS = 1e-9
_JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True, slots=True)
class SiteTotals:
    """One site's energy over the run, kWh."""

    demand_kwh: float
    recovered_kwh: float
    delivered_kwh: float
    """All heat delivered, including what the tank held at the start."""
    dumped_kwh: float
    loss_kwh: float
    tank_start_kwh: float
    tank_end_kwh: float
    reused_kwh: float
    """The part of ``delivered_kwh`` that was recovered in the run (well-mixed tank):
    ``0 <= reused_kwh <= recovered_kwh``."""

    @property
    def boiler_kwh(self) -> float:
        """Demand the backup boiler had to cover."""
        return self.demand_kwh - self.delivered_kwh

    @property
    def energy_balance_error_kwh(self) -> float:
        """start + recovered - delivered - dumped - loss - end: zero up to rounding."""
        return (
            self.recovered_kwh
            - self.delivered_kwh
            - self.dumped_kwh
            - self.loss_kwh
            - (self.tank_end_kwh - self.tank_start_kwh)
        )


@dataclass(frozen=True, slots=True)
class SiteSeries:
    """One value per step, for plotting.

    ``demand_kw`` (capped at the offtaker's rating), ``delivered_kw`` and ``it_kw`` are
    means over the step; ``tank_kwh`` is the tank's energy at the step's end.
    """

    demand_kw: tuple[float, ...]
    delivered_kw: tuple[float, ...]
    tank_kwh: tuple[float, ...]
    it_kw: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class JobStart:
    """Where and when a job started."""

    site: str
    start_s: float


@dataclass(frozen=True)
class SimResult:
    """The outcome of one policy on one scenario."""

    policy: str
    scenario: str
    duration_s: float
    step_s: float
    times_s: tuple[float, ...]
    """Start of each step (the x axis of :attr:`series`)."""
    sites: Mapping[str, SiteTotals]
    series: Mapping[str, SiteSeries]
    starts: Mapping[str, JobStart]
    jobs_total: int
    jobs_completed: int
    """Jobs that started and ran to their end within the scenario."""
    unschedulable: tuple[str, ...]
    """Jobs no allowed site can ever hold (too big, or allowed nowhere that exists)."""
    deadline_misses: tuple[str, ...]
    mean_wait_s: float
    """Mean of start - release over schedulable released jobs; a job never started
    counts its wait until the scenario's end (a lower bound, so holding jobs forever
    does not look like zero wait)."""
    rejected_placements: int
    """Placements the simulator refused: unknown or unreleased job, site not allowed,
    or no free capacity at the start time."""
    decisions: int
    urgent_decisions: int
    """Extra decisions made mid-step for arrivals that could not wait."""
    plan_seconds: tuple[float, ...]
    """Wall time of each ``decide()`` call."""
    backups: Mapping[str, model.BackupKind] = field(default_factory=dict)
    """Each site's offtaker's backup heat source (gas where not given)."""

    def site_ledger(self) -> dict[str, dict[str, float | None]]:
        """Per site, the heat ledger's figures over the run (see :mod:`heatshift.ledger`).

        ``ere`` reuses the heat recovered in the run that reached the building (the tanks'
        start-of-run energy is not reuse); fuel and CO2 count all heat delivered, since all
        of it is heat the backup did not make. Defaults of the backup kind: efficiency and
        emission factor as in :data:`heatshift.model.BACKUP_EFFICIENCY`."""
        out: dict[str, dict[str, float | None]] = {}
        for name, totals in self.sites.items():
            it_kwh = (
                sum(self.series[name].it_kw) * self.step_s / 3600.0 if name in self.series else 0.0
            )
            kind = self.backups.get(name, model.BackupKind.GAS)
            fuel = ledger.fuel_avoided_kwh(totals.delivered_kwh, model.BACKUP_EFFICIENCY[kind])
            out[name] = {
                "it_energy_kwh": it_kwh,
                "heat_delivered_kwh": totals.delivered_kwh,
                "heat_dumped_kwh": totals.dumped_kwh,
                "ere": ledger.ere(it_kwh, totals.reused_kwh),
                "fuel_avoided_kwh": fuel,
                "co2_avoided_kg": ledger.co2_avoided_kg(
                    fuel, model.EMISSION_FACTOR_KG_PER_KWH[kind]
                ),
            }
        return out

    def metrics(self) -> dict[str, object]:
        """The run's summary, as ``heatshift simulate`` prints it (energies in kWh).

        ``useful_heat_kwh`` is all heat delivered (what the boilers did not burn), the tanks'
        start-of-run energy included; ``heat_reuse_ratio`` is the share of the heat
        recovered in the run that was delivered, so it is within ``[0, 1]``. The tank
        figures close the balance: ``initial_tank_kwh + recoverable_heat_kwh =
        useful_heat_kwh + dumped_heat_kwh + tank_loss_kwh + final_tank_kwh``.
        """
        totals = self.sites.values()
        recoverable = sum(s.recovered_kwh for s in totals)
        reused = sum(s.reused_kwh for s in totals)
        seconds = sorted(self.plan_seconds) or [0.0]
        return {
            "policy": self.policy,
            "useful_heat_kwh": sum(s.delivered_kwh for s in totals),
            "recoverable_heat_kwh": recoverable,
            "dumped_heat_kwh": sum(s.dumped_kwh for s in totals),
            "boiler_heat_kwh": sum(s.boiler_kwh for s in totals),
            "demand_kwh": sum(s.demand_kwh for s in totals),
            # min(): float rounding only; the well-mixed share never exceeds the recovered.
            "heat_reuse_ratio": min(1.0, reused / recoverable) if recoverable > 0 else 0.0,
            "initial_tank_kwh": sum(s.tank_start_kwh for s in totals),
            "final_tank_kwh": sum(s.tank_end_kwh for s in totals),
            "tank_loss_kwh": sum(s.loss_kwh for s in totals),
            "deadline_misses": len(self.deadline_misses),
            "jobs_total": self.jobs_total,
            "jobs_completed": self.jobs_completed,
            "jobs_unschedulable": len(self.unschedulable),
            "mean_wait_s": self.mean_wait_s,
            "plan_seconds_p50": statistics.median(seconds),
            "plan_seconds_max": seconds[-1],
            **self._fleet_ledger(),
        }

    def _fleet_ledger(self) -> dict[str, float | None]:
        """The fleet's ERE (over the fleet's IT energy), fuel and CO2 avoided."""
        per_site = self.site_ledger().values()
        it_kwh = sum(s["it_energy_kwh"] or 0.0 for s in per_site)
        reused = sum(t.reused_kwh for t in self.sites.values())
        return {
            "it_energy_kwh": it_kwh,
            "ere": ledger.ere(it_kwh, reused),
            "fuel_avoided_kwh": sum(s["fuel_avoided_kwh"] or 0.0 for s in per_site),
            "co2_avoided_kg": sum(s["co2_avoided_kg"] or 0.0 for s in per_site),
        }


@dataclass(slots=True)
class _Run:
    """A started job: what it holds, what it draws, when."""

    job: model.JobRequest
    start_s: float
    end_s: float
    watts: float
    snapshot_view: model.RunningJob  # built once: snapshots are made many times


@dataclass(slots=True)
class _Event:
    """A placement to apply at ``when`` within the current step."""

    when: float
    placement: model.Placement


class _Fleet:
    """The simulator's mutable state: pending and running jobs, tanks, the last plan."""

    def __init__(self, scenario: scenario_mod.Scenario, jobs: Sequence[model.JobRequest]):
        self.sites = {s.name: s for s in scenario.sites}
        self.jobs = {j.id: j for j in jobs}
        self.pending: dict[str, model.JobRequest] = {}
        self.running: dict[str, list[_Run]] = {s.name: [] for s in scenario.sites}
        self.starts: dict[str, JobStart] = {}
        self.tank = {
            s.name: float(scenario.initial_tank_kwh.get(s.name, 0.0)) for s in scenario.sites
        }
        # The part of each tank's energy recovered in the run (the rest is from the start).
        self.tank_recovered = {s.name: 0.0 for s in scenario.sites}
        self.queue: list[model.Placement] = []  # the last plan's placements not yet due
        self.rejected = 0

    def retire(self, now: float) -> None:
        """Forget jobs that ended by ``now`` (they hold nothing and make no more heat)."""
        for name, runs in self.running.items():
            if any(r.end_s <= now + EPS for r in runs):
                self.running[name] = [r for r in runs if r.end_s > now + EPS]

    def adopt(self, plan: model.Plan, now: float, step_end: float) -> list[_Event]:
        """Make ``plan`` the one followed; return its placements due before ``step_end``."""
        ordered = sorted(plan.placements, key=lambda p: p.start_s)
        cut = bisect.bisect_left([p.start_s for p in ordered], step_end - EPS)
        self.queue = ordered[cut:]
        return self.events(ordered[:cut], now, step_end)

    def take_due(self, now: float, step_end: float) -> list[_Event]:
        """The followed plan's placements that fall due in ``[now, step_end)``."""
        # A start within EPS of the step's end belongs to the next step.
        cut = bisect.bisect_left([p.start_s for p in self.queue], step_end - EPS)
        due, self.queue = self.queue[:cut], self.queue[cut:]
        return self.events(due, now, step_end)

    def events(
        self, placements: Sequence[model.Placement], now: float, step_end: float
    ) -> list[_Event]:
        out: list[_Event] = []
        for p in placements:
            job = self.jobs.get(p.job_id)
            when = max(now, p.start_s, job.release_s if job is not None else now)
            if job is None or when >= step_end - EPS:
                # Unknown job, or one not released before the step ends: the policy
                # placed something that does not exist yet.
                self.rejected += 1
                continue
            out.append(_Event(when, p))
        out.sort(key=lambda e: e.when)
        return out

    def apply(self, placement: model.Placement, when: float) -> bool:
        """Start a placement if it is valid at ``when``; count and drop it if not."""
        job = self.pending.get(placement.job_id)
        site = self.sites.get(placement.site)
        if (
            job is None
            or site is None
            or not job.may_run_at(site.name)
            or job.release_s > when + _RELEASE_EPS
            or not self._fits(site, job.resources, when)
        ):
            self.rejected += 1
            return False
        del self.pending[job.id]
        watts = site.job_watts(job.resources, job.power_watts)
        end = when + job.duration_s
        view = model.RunningJob(
            id=job.id, site=site.name, resources=job.resources, power_watts=watts, end_s=end
        )
        self.running[site.name].append(_Run(job, when, end, watts, view))
        self.starts[job.id] = JobStart(site.name, when)
        return True

    def _fits(self, site: model.Site, need: model.Resources, when: float) -> bool:
        # Events are applied in time order, so every run started at or before ``when``;
        # those still going at ``when`` hold their resources.
        cpu, mem, gpu = need.cpu, need.memory_gib, need.gpu
        for r in self.running[site.name]:
            if r.end_s > when + EPS:
                cpu += r.job.resources.cpu
                mem += r.job.resources.memory_gib
                gpu += r.job.resources.gpu
        cap = site.capacity
        return cpu <= cap.cpu + 1e-9 and mem <= cap.memory_gib + 1e-9 and gpu <= cap.gpu


def fits_somewhere(job: model.JobRequest, sites: Sequence[model.Site]) -> bool:
    """True when some site the job may run at can hold it when empty."""
    return any(job.may_run_at(s.name) and job.resources.fits_within(s.capacity) for s in sites)


def simulate(
    scenario: scenario_mod.Scenario,
    policy: policies.Policy,
    *,
    replan_every_s: float | None = None,
    horizon_s: float = 24 * 3600.0,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Replay ``scenario`` through ``policy`` and score it.

    ``replan_every_s`` (default: every step) is rounded up to whole steps. ``horizon_s``
    is how far ahead a foresight policy is shown true demand and arrivals.
    ``progress`` is called with the fraction done after each step.
    """
    step = scenario.step_s
    steps = max(0, math.ceil(scenario.duration_s / step - EPS))
    replan_steps = max(1, math.ceil((replan_every_s or step) / step - EPS))
    sites = scenario.sites
    true_kw = {s.name: _per_step(scenario.demand.get(s.name), step, steps) for s in sites}
    capped_kw = {s.name: [thermal.capped_demand_kw(s, v) for v in true_kw[s.name]] for s in sites}

    unschedulable = tuple(j.id for j in scenario.jobs if not fits_somewhere(j, sites))
    excluded = set(unschedulable)
    # Sorted by release (the loader sorts too; hand-built scenarios may not).
    jobs = sorted((j for j in scenario.jobs if j.id not in excluded), key=lambda j: j.release_s)
    releases = [j.release_s for j in jobs]
    fleet = _Fleet(scenario, jobs)
    foresight = policy.needs_foresight
    view = _SnapshotView(scenario, fleet, true_kw, jobs, releases, horizon_s, foresight)
    acc = {s.name: _Accumulator(steps) for s in sites}
    plan_seconds: list[float] = []
    urgent_decisions = 0
    released = 0  # jobs[:released] have joined the pending set

    def decide(now: float) -> model.Plan:
        snapshot = view.snapshot(now)
        started = time.perf_counter()
        plan = policy.decide(snapshot)
        plan_seconds.append(time.perf_counter() - started)
        return plan

    for i in range(steps):
        t = i * step
        t_next = (i + 1) * step
        next_decision = (i // replan_steps + 1) * replan_steps * step
        fleet.retire(t)
        arrived: list[model.JobRequest] = []
        while released < len(jobs) and jobs[released].release_s <= t + _RELEASE_EPS:
            arrived.append(jobs[released])
            fleet.pending[jobs[released].id] = jobs[released]
            released += 1

        if i % replan_steps == 0:
            events = fleet.adopt(decide(t), t, t_next)
        elif _urgent(arrived, fleet, next_decision):
            urgent_decisions += 1
            events = fleet.adopt(decide(t), t, t_next)
        else:
            events = fleet.take_due(t, t_next)

        # Within the step: placements and mid-step arrivals, in time order (arrivals
        # first on a tie, so a placement at a job's release finds it pending).
        k = 0
        while True:
            next_release = jobs[released].release_s if released < len(jobs) else math.inf
            if next_release >= t_next - _RELEASE_EPS:
                next_release = math.inf
            next_place = events[k].when if k < len(events) else math.inf
            if next_release == math.inf and next_place == math.inf:
                break
            if next_place < next_release - _RELEASE_EPS:
                fleet.apply(events[k].placement, events[k].when)
                k += 1
                continue
            now = next_release
            arrived = []
            while released < len(jobs) and jobs[released].release_s <= now + _RELEASE_EPS:
                arrived.append(jobs[released])
                fleet.pending[jobs[released].id] = jobs[released]
                released += 1
            while k < len(events) and events[k].when <= now + _RELEASE_EPS:
                fleet.apply(events[k].placement, events[k].when)
                k += 1
            if _urgent(arrived, fleet, next_decision):
                # It cannot wait for the next decision: decide now, at its release.
                urgent_decisions += 1
                events, k = fleet.adopt(decide(now), now, t_next), 0

        _play_step(sites, fleet, capped_kw, i, t, step, acc)
        if progress is not None:
            progress((i + 1) / steps)

    return _result(
        scenario, policy, fleet, acc, steps, unschedulable, plan_seconds, urgent_decisions
    )


def _urgent(arrived: Sequence[model.JobRequest], fleet: _Fleet, next_decision_s: float) -> bool:
    return any(j.deadline_s < next_decision_s - EPS and j.id in fleet.pending for j in arrived)


def step_count(scenario: scenario_mod.Scenario) -> int:
    """How many steps the simulator plays: the scenario's duration, rounded up to whole steps."""
    return max(0, math.ceil(scenario.duration_s / scenario.step_s - EPS))


def capped_demand_kw(scenario: scenario_mod.Scenario) -> dict[str, list[float]]:
    """Per site, the demand the simulator plays per step (kW): each step's mean, capped at
    the offtaker's rating."""
    steps = step_count(scenario)
    return {
        s.name: [
            thermal.capped_demand_kw(s, v)
            for v in _per_step(scenario.demand.get(s.name), scenario.step_s, steps)
        ]
        for s in scenario.sites
    }


def _per_step(series: model.DemandSeries | None, step: float, steps: int) -> list[float]:
    """True demand per simulation step (kW), the mean over each step."""
    if series is None:
        return [0.0] * steps
    if series.start_s == 0.0 and series.step_s == step and len(series.kw) >= steps:
        return list(series.kw[:steps])
    return [series.mean_over(i * step, (i + 1) * step) for i in range(steps)]


class _SnapshotView:
    """Builds what a policy sees at a decision time: the meters' view, or the truth."""

    def __init__(
        self,
        scenario: scenario_mod.Scenario,
        fleet: _Fleet,
        true_kw: Mapping[str, list[float]],
        jobs: Sequence[model.JobRequest],
        releases: Sequence[float],
        horizon_s: float,
        foresight: bool,
    ) -> None:
        self.scenario = scenario
        self.fleet = fleet
        self.true_kw = true_kw
        self.jobs = jobs
        self.releases = releases
        self.horizon_s = horizon_s
        self.foresight = foresight

    def snapshot(self, now: float) -> model.Snapshot:
        step = self.scenario.step_s
        steps = len(next(iter(self.true_kw.values()), []))
        index = min(max(math.floor(now / step + _RELEASE_EPS), 0), max(steps - 1, 0))
        ahead_end = min(steps, math.ceil((now + self.horizon_s) / step - EPS))
        states: dict[str, model.SiteState] = {}
        for site in self.scenario.sites:
            values = self.true_kw[site.name]
            history = None
            if index > 0:
                # model_construct: the values were validated when the scenario loaded,
                # and a week's history is rebuilt at every decision.
                history = model.DemandSeries.model_construct(
                    start_s=0.0, step_s=step, kw=tuple(values[:index])
                )
            forecast = None
            if self.foresight and values:
                forecast = model.DemandSeries.model_construct(
                    start_s=index * step,
                    step_s=step,
                    kw=tuple(values[index : max(ahead_end, index + 1)]),
                )
            states[site.name] = model.SiteState(
                site=site.name,
                tank_energy_kwh=max(self.fleet.tank[site.name], 0.0),
                demand_kw=values[index] if values else 0.0,
                demand_history=history,
                demand_forecast=forecast,
            )
        pending = tuple(self.fleet.pending.values())
        if self.foresight:
            first = bisect.bisect_right(self.releases, now + _RELEASE_EPS)
            last = bisect.bisect_right(self.releases, now + self.horizon_s)
            pending += tuple(self.jobs[first:last])
        running = tuple(
            r.snapshot_view
            for runs in self.fleet.running.values()
            for r in runs
            if r.end_s > now + EPS
        )
        # Every part is a validated model already, and re-validating thousands of pending
        # jobs at each decision would cost more than the rest of the simulator.
        return model.Snapshot.model_construct(
            now_s=now, sites=self.scenario.sites, states=states, pending=pending, running=running
        )


class _Accumulator:
    """One site's running totals and per-step series."""

    __slots__ = (
        "delivered",
        "delivered_kw",
        "demand",
        "demand_kw",
        "dumped",
        "it_kw",
        "loss",
        "recovered",
        "reused",
        "tank_kwh",
    )

    def __init__(self, steps: int) -> None:
        self.demand = self.recovered = self.delivered = self.dumped = self.loss = 0.0
        self.reused = 0.0
        self.demand_kw: list[float] = []
        self.delivered_kw: list[float] = []
        self.tank_kwh: list[float] = []
        self.it_kw: list[float] = []


def _play_step(
    sites: Sequence[model.Site],
    fleet: _Fleet,
    capped_kw: Mapping[str, list[float]],
    i: int,
    t: float,
    step: float,
    acc: Mapping[str, _Accumulator],
) -> None:
    t_next = t + step
    hours = step / 3600.0
    for site in sites:
        joules = site.power.idle_watts * step
        for r in fleet.running[site.name]:
            overlap = min(r.end_s, t_next) - max(r.start_s, t)
            if overlap > 0:
                joules += r.watts * overlap
        recovered = site.heat_recovery_efficiency * joules / _JOULES_PER_KWH
        demand_kw = capped_kw[site.name][i]
        before = fleet.tank[site.name]
        flows = thermal.exchange_heat(site.tank, before, recovered, demand_kw * hours, hours)
        # Well mixed: the loss takes its share of the recovered part, and what is delivered,
        # dumped or kept is the blend of what remains with this step's recovered heat.
        kept = fleet.tank_recovered[site.name] * (
            (1.0 - flows.loss_kwh / before) if before else 1.0
        )
        available = before - flows.loss_kwh + flows.recovered_kwh
        share = min(1.0, max(0.0, (kept + flows.recovered_kwh) / available)) if available else 1.0
        fleet.tank[site.name] = flows.energy_after_kwh
        fleet.tank_recovered[site.name] = flows.energy_after_kwh * share
        a = acc[site.name]
        a.reused += flows.delivered_kwh * share
        a.demand += demand_kw * hours
        a.recovered += flows.recovered_kwh
        a.delivered += flows.delivered_kwh
        a.dumped += flows.dumped_kwh
        a.loss += flows.loss_kwh
        a.demand_kw.append(demand_kw)
        a.delivered_kw.append(flows.delivered_kwh / hours)
        a.tank_kwh.append(flows.energy_after_kwh)
        a.it_kw.append(joules / step / 1000.0)


def _result(
    scenario: scenario_mod.Scenario,
    policy: policies.Policy,
    fleet: _Fleet,
    acc: Mapping[str, _Accumulator],
    steps: int,
    unschedulable: tuple[str, ...],
    plan_seconds: list[float],
    urgent_decisions: int,
) -> SimResult:
    end = steps * scenario.step_s
    excluded = set(unschedulable)
    misses: list[str] = []
    waits: list[float] = []
    completed = 0
    for job in scenario.jobs:
        if job.id in excluded:
            continue
        started = fleet.starts.get(job.id)
        if started is None:
            if job.deadline_s < end:
                misses.append(job.id)
            if job.release_s < end:
                waits.append(end - job.release_s)
            continue
        waits.append(started.start_s - job.release_s)
        if started.start_s > job.deadline_s + EPS:
            misses.append(job.id)
        if started.start_s + job.duration_s <= end + EPS:
            completed += 1
    return SimResult(
        policy=policy.name,
        scenario=scenario.name,
        duration_s=scenario.duration_s,
        step_s=scenario.step_s,
        times_s=tuple(i * scenario.step_s for i in range(steps)),
        sites={
            s.name: SiteTotals(
                demand_kwh=acc[s.name].demand,
                recovered_kwh=acc[s.name].recovered,
                delivered_kwh=acc[s.name].delivered,
                dumped_kwh=acc[s.name].dumped,
                loss_kwh=acc[s.name].loss,
                tank_start_kwh=float(scenario.initial_tank_kwh.get(s.name, 0.0)),
                tank_end_kwh=fleet.tank[s.name],
                reused_kwh=acc[s.name].reused,
            )
            for s in scenario.sites
        },
        series={
            s.name: SiteSeries(
                demand_kw=tuple(acc[s.name].demand_kw),
                delivered_kw=tuple(acc[s.name].delivered_kw),
                tank_kwh=tuple(acc[s.name].tank_kwh),
                it_kw=tuple(acc[s.name].it_kw),
            )
            for s in scenario.sites
        },
        starts=dict(fleet.starts),
        jobs_total=len(scenario.jobs),
        jobs_completed=completed,
        unschedulable=unschedulable,
        deadline_misses=tuple(misses),
        mean_wait_s=statistics.fmean(waits) if waits else 0.0,
        rejected_placements=fleet.rejected,
        decisions=len(plan_seconds),
        urgent_decisions=urgent_decisions,
        plan_seconds=tuple(plan_seconds),
        backups={s.name: s.offtaker.backup for s in scenario.sites},
    )
