"""Rule-based planning: the baseline policies, the solver's fallback and the deadline guard.

* :func:`default_plan` is what a plain cluster does: start every job at once on the
  least-loaded site it fits, heat unseen.
* :func:`greedy_plan` follows the heat wanted now: start a job where the offtaker's
  unmet demand (plus tank room) can take its heat, hold it while its slack lasts.
* :func:`enforce_deadlines` is applied to every plan: a job whose start deadline
  falls before the next decision starts now, heat or no heat.

Pure functions of a Snapshot; they only ever start jobs *now* (no future placements).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from heatshift import model, thermal

# How many hours of tank room count as heat headroom now (greedy's only look ahead).
_TANK_HOURS = 4.0


@dataclass(slots=True)
class Room:
    """Free capacity and expected heat per site at ``now``, updated as jobs are started."""

    snapshot: model.Snapshot
    free: dict[str, list[float]] = field(default_factory=dict)
    heat_kw: dict[str, float] = field(default_factory=dict)

    @classmethod
    def at_now(cls, snapshot: model.Snapshot) -> Room:
        room = cls(snapshot)
        for site in snapshot.sites:
            room.free[site.name] = [site.capacity.cpu, site.capacity.memory_gib, site.capacity.gpu]
            room.heat_kw[site.name] = thermal.recovered_heat_kw(site, site.power.idle_watts)
        for job in snapshot.running:
            if job.site in room.free and job.end_s > snapshot.now_s:
                room._take(job.site, job.resources, job.power_watts)
        return room

    def fits(self, site: str, resources: model.Resources) -> bool:
        f = self.free[site]
        return (
            resources.cpu <= f[0] + 1e-9
            and resources.memory_gib <= f[1] + 1e-9
            and resources.gpu <= f[2] + 1e-9
        )

    def start(self, job: model.JobRequest, site: model.Site) -> None:
        self._take(site.name, job.resources, site.job_watts(job.resources, job.power_watts))

    def release(self, job: model.JobRequest, site: model.Site) -> None:
        watts = site.job_watts(job.resources, job.power_watts)
        f = self.free[site.name]
        f[0] += job.resources.cpu
        f[1] += job.resources.memory_gib
        f[2] += job.resources.gpu
        self.heat_kw[site.name] -= thermal.recovered_heat_kw(site, watts)

    def _take(self, site_name: str, resources: model.Resources, watts: float) -> None:
        f = self.free[site_name]
        f[0] -= resources.cpu
        f[1] -= resources.memory_gib
        f[2] -= resources.gpu
        site = self.snapshot.site(site_name)
        self.heat_kw[site_name] += thermal.recovered_heat_kw(site, watts)

    def load_fraction(self, site: model.Site) -> float:
        """The dominant resource's used share: what 'least loaded' means."""
        f = self.free[site.name]
        cap = site.capacity
        shares = [
            1 - f[i] / total
            for i, total in enumerate((cap.cpu, cap.memory_gib, float(cap.gpu)))
            if total > 0
        ]
        return max(shares, default=1.0)

    def preference(self, site: model.Site) -> tuple[float, float, str]:
        """Sort key for where heat is wanted most: headroom, then least loaded, then name."""
        return (self.heat_headroom_kw(site), -self.load_fraction(site), site.name)

    def heat_headroom_kw(self, site: model.Site) -> float:
        """Heat the site could use now beyond what it already recovers (0 if heat-unaware)."""
        state = self.snapshot.states[site.name]
        if not state.heat_aware:
            return 0.0
        demand = thermal.capped_demand_kw(site, state.demand_kw)
        tank_room = max(site.tank.capacity_kwh - state.tank_energy_kwh, 0.0) / _TANK_HOURS
        return demand + tank_room - self.heat_kw[site.name]


def allowed_sites(snapshot: model.Snapshot, job: model.JobRequest) -> list[model.Site]:
    """Sites the job may run at and that are big enough for it when empty."""
    return [
        s
        for s in snapshot.sites
        if job.may_run_at(s.name) and job.resources.fits_within(s.capacity)
    ]


def fits_somewhere(job: model.JobRequest, sites: Sequence[model.Site]) -> bool:
    """Whether any site the job may run at is big enough for it when empty."""
    return any(job.may_run_at(s.name) and job.resources.fits_within(s.capacity) for s in sites)


def unschedulable(
    snapshot: model.Snapshot,
) -> tuple[list[model.JobRequest], list[model.Unschedulable]]:
    """Split pending jobs into those some site could hold and those none ever can."""
    ok: list[model.JobRequest] = []
    bad: list[model.Unschedulable] = []
    names = {s.name for s in snapshot.sites}
    # Jobs of one shape and allow-list share the answer: ask once per kind, not per job.
    fits: dict[tuple[tuple[float, float, int], frozenset[str] | None], bool] = {}
    for job in snapshot.pending:
        kind = (job.resources.as_tuple(), job.allowed_sites)
        if kind not in fits:
            fits[kind] = fits_somewhere(job, snapshot.sites)
        if fits[kind]:
            ok.append(job)
            continue
        if job.allowed_sites is not None and not (job.allowed_sites & names):
            why = f"none of its allowed sites {sorted(job.allowed_sites)} exists"
        else:
            why = (
                f"needs cpu={job.resources.cpu:g}, memory={job.resources.memory_gib:g}GiB, "
                f"gpu={job.resources.gpu}: more than any allowed site has"
            )
        bad.append(model.Unschedulable(job_id=job.id, reason=why))
    return ok, bad


def _released(snapshot: model.Snapshot, jobs: Iterable[model.JobRequest]) -> list[model.JobRequest]:
    return [j for j in jobs if j.release_s <= snapshot.now_s + 1e-6]


def default_plan(snapshot: model.Snapshot) -> model.Plan:
    """Heat-unaware: every job starts at once, first come first served, least-loaded site."""
    jobs, bad = unschedulable(snapshot)
    room = Room.at_now(snapshot)
    placements: list[model.Placement] = []
    for job in sorted(_released(snapshot, jobs), key=lambda j: (j.release_s, j.id)):
        candidates = [
            s for s in snapshot.sites if job.may_run_at(s.name) and room.fits(s.name, job.resources)
        ]
        if not candidates:
            continue
        site = min(candidates, key=lambda s: (room.load_fraction(s), s.name))
        room.start(job, site)
        placements.append(
            model.Placement(
                job_id=job.id,
                site=site.name,
                start_s=snapshot.now_s,
                reason=f"heat-unaware: {site.name} is the least loaded site with room",
            )
        )
    return model.Plan(
        now_s=snapshot.now_s,
        placements=tuple(placements),
        unschedulable=tuple(bad),
        status=model.SolveStatus.HEURISTIC if snapshot.pending else model.SolveStatus.EMPTY,
    )


def greedy_placements(snapshot: model.Snapshot, next_decision_s: float) -> list[model.Placement]:
    """Start jobs now where current demand and tank room can take their heat."""
    jobs, _ = unschedulable(snapshot)
    room = Room.at_now(snapshot)
    placements: list[model.Placement] = []
    for job in sorted(_released(snapshot, jobs), key=lambda j: (j.deadline_s, j.id)):
        candidates = [
            s for s in snapshot.sites if job.may_run_at(s.name) and room.fits(s.name, job.resources)
        ]
        if not candidates:
            continue
        best = max(
            candidates, key=lambda s: (room.heat_headroom_kw(s), -room.load_fraction(s), s.name)
        )
        job_heat = thermal.recovered_heat_kw(best, best.job_watts(job.resources, job.power_watts))
        headroom = room.heat_headroom_kw(best)
        if headroom >= 0.5 * job_heat and headroom > 0:
            reason = (
                f"{best.name} can use {headroom:.1f} kW more heat now; "
                f"this job adds {job_heat:.1f} kW"
            )
        elif job.deadline_s < next_decision_s:
            reason = f"start deadline before the next decision; {best.name} has room"
        else:
            continue  # hold: slack remains, no site wants the heat now
        room.start(job, best)
        placements.append(
            model.Placement(job_id=job.id, site=best.name, start_s=snapshot.now_s, reason=reason)
        )
    return placements


def greedy_plan(snapshot: model.Snapshot, next_decision_s: float) -> model.Plan:
    """Follow current demand; see :func:`greedy_placements`."""
    _, bad = unschedulable(snapshot)
    return model.Plan(
        now_s=snapshot.now_s,
        placements=tuple(greedy_placements(snapshot, next_decision_s)),
        unschedulable=tuple(bad),
        status=model.SolveStatus.HEURISTIC if snapshot.pending else model.SolveStatus.EMPTY,
    )


def enforce_deadlines(
    snapshot: model.Snapshot,
    placements: Sequence[model.Placement],
    next_decision_s: float,
) -> tuple[list[model.Placement], list[str]]:
    """Make sure every job that must start before the next decision starts now.

    Whatever the solver or the metering did: a released job whose start deadline falls
    before ``next_decision_s`` and that is not starting now is started now on the
    site with the most heat headroom that has room, if need be by holding back a
    starting-now job that can still wait or is overdue. An overdue job (its deadline has
    passed) comes after every job that can still start in time and takes room from none.
    Returns the placements and notes in words.
    """
    by_id = {j.id: j for j in snapshot.pending}
    now = snapshot.now_s
    starting_now = [p for p in placements if p.start_s <= now + 1e-6]
    later = [p for p in placements if p.start_s > now + 1e-6]
    room = Room.at_now(snapshot)
    for p in starting_now:
        room.start(by_id[p.job_id], snapshot.site(p.site))
    placed_now = {p.job_id for p in starting_now}
    notes: list[str] = []
    urgent = sorted(
        (
            j
            for j in _released(snapshot, by_id.values())
            if j.deadline_s < next_decision_s
            and j.id not in placed_now
            and fits_somewhere(j, snapshot.sites)
        ),
        key=lambda j: (j.is_overdue_at(now), j.deadline_s, j.id),
    )
    forced_ids: set[str] = set()
    for job in urgent:
        allowed = [
            s
            for s in snapshot.sites
            if job.may_run_at(s.name) and job.resources.fits_within(s.capacity)
        ]
        site = _site_with_room(room, job, allowed)
        if site is None and not job.is_overdue_at(now):
            # Only for a deadline that can still be met: an overdue job is late whenever it
            # starts, so it takes no room from a job that can still start in time.
            site = _make_room(room, job, allowed, starting_now, by_id, next_decision_s)
        if site is None:
            notes.append(f"job {job.id} misses its start deadline: no allowed site has room")
            continue
        room.start(job, site)
        later = [p for p in later if p.job_id != job.id]
        starting_now.append(
            model.Placement(
                job_id=job.id,
                site=site.name,
                start_s=now,
                reason="start deadline reached: released now, heat or no heat",
            )
        )
        forced_ids.add(job.id)
    if forced_ids:
        notes.append(f"{len(forced_ids)} job(s) started now to meet their start deadline")
        kept = drop_conflicts(snapshot, later, starting_now)
        if len(kept) < len(later):
            dropped = len(later) - len(kept)
            notes.append(f"{dropped} later start(s) dropped to make room; re-planned next time")
        later = kept
    return starting_now + later, notes


def drop_conflicts(
    snapshot: model.Snapshot,
    later: Sequence[model.Placement],
    starting_now: Sequence[model.Placement],
) -> list[model.Placement]:
    """Keep the later placements that still fit beside running and starting-now jobs.

    Tentative future starts are only a forecast of the plan; one that no longer fits is
    dropped here and planned again at the next decision.
    """
    by_id = {j.id: j for j in snapshot.pending}
    # Per site: (start, end, resources) of everything already committed.
    committed: dict[str, list[tuple[float, float, model.Resources]]] = {
        s.name: [] for s in snapshot.sites
    }
    for r in snapshot.running:
        if r.site in committed:
            committed[r.site].append((snapshot.now_s, r.end_s, r.resources))
    for p in starting_now:
        job = by_id[p.job_id]
        committed[p.site].append((p.start_s, p.start_s + job.duration_s, job.resources))
    kept: list[model.Placement] = []
    for p in sorted(later, key=lambda p: (p.start_s, p.job_id)):
        job = by_id[p.job_id]
        end = p.start_s + job.duration_s
        site = snapshot.site(p.site)
        # Peak use within [start, end) happens at the start or at a committed start.
        instants = [p.start_s] + [s for s, _, _ in committed[p.site] if p.start_s < s < end]
        if all(
            _used_at(committed[p.site], t).plus(job.resources).fits_within(site.capacity)
            for t in instants
        ):
            committed[p.site].append((p.start_s, end, job.resources))
            kept.append(p)
    return kept


def _used_at(
    intervals: Sequence[tuple[float, float, model.Resources]], t: float
) -> model.Resources:
    used = model.Resources()
    for start, end, res in intervals:
        if start <= t < end:
            used = used.plus(res)
    return used


def _site_with_room(
    room: Room, job: model.JobRequest, allowed: Sequence[model.Site]
) -> model.Site | None:
    fitting = [s for s in allowed if room.fits(s.name, job.resources)]
    if not fitting:
        return None
    return max(fitting, key=room.preference)


def _make_room(
    room: Room,
    job: model.JobRequest,
    allowed: Sequence[model.Site],
    starting_now: list[model.Placement],
    by_id: dict[str, model.JobRequest],
    next_decision_s: float,
) -> model.Site | None:
    """Hold back starting-now jobs to fit ``job``: overdue ones first (late however soon they
    start), then those with slack left, latest deadline first."""
    now = room.snapshot.now_s
    for site in allowed:
        movable = sorted(
            (
                p
                for p in starting_now
                if p.site == site.name
                and (
                    by_id[p.job_id].deadline_s >= next_decision_s
                    or by_id[p.job_id].is_overdue_at(now)
                )
            ),
            key=lambda p: (not by_id[p.job_id].is_overdue_at(now), -by_id[p.job_id].deadline_s),
        )
        held: list[model.Placement] = []
        for p in movable:
            room.release(by_id[p.job_id], site)
            held.append(p)
            if room.fits(site.name, job.resources):
                for h in held:
                    starting_now.remove(h)
                return site
        for h in held:  # not enough: undo
            room.start(by_id[h.job_id], site)
    return None
