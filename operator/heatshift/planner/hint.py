"""Heat-seeking list scheduling: the plan the solver starts from and falls back to,
and on snapshots too large for the solver's budget, the plan itself.

Classes are taken earliest deadline first (those that can still start in time, then
overdue ones, then those that may wait past the horizon); each class's jobs go, a batch
at a time, to the start option that scores best under the solver's own objective
weights: heat an offtaker still wants in the slots the jobs run, minus the dump cost of
the rest, minus delay.
Capacity is respected slot by slot (jobs run in lanes hold one share per lane), so
the result is always a feasible plan. :func:`late_counts` places, the same way, the jobs a plan
leaves out although they must start in the horizon, at starts after their deadline.

CP-SAT started from the earliest-start plan spends its budget undoing it (measured on
the built-in scenario: the returned plan was the hint itself on every 300-job
snapshot at a 2 s limit); started from here it only has to refine."""

from __future__ import annotations

from collections.abc import Sequence

from heatshift.planner import problem as planner_problem


def _unmet_demand_wh(site: planner_problem.SiteSlots) -> list[float]:
    """Per slot: demand that idle power and running jobs leave unmet, after the tank's
    stored energy has served the earliest of it."""
    if not site.heat_valued:
        return [0.0] * len(site.demand_wh)
    unmet = [max(0.0, float(d - b)) for d, b in zip(site.demand_wh, site.base_heat_wh, strict=True)]
    stored = float(site.tank_initial_wh)
    for k, want in enumerate(unmet):
        if stored <= 0:
            break
        served = min(want, stored)
        unmet[k] -= served
        stored -= served
    return unmet


def heat_seeking_counts(p: planner_problem.Problem) -> list[int]:
    """Per option, how many jobs start there in the starting plan."""
    fleet = _Fleet(p)
    # Jobs that can still start in time first, then overdue ones, then those that may wait.
    order = sorted(
        {o.job_class for o in p.options},
        key=lambda c: (not p.classes[c].must_start_in_horizon, p.classes[c].overdue, c),
    )
    return fleet.place(p.options, order, {c: p.classes[c].count for c in order})


def late_counts(p: planner_problem.Problem, counts: Sequence[int]) -> list[int]:
    """Per late option (:attr:`~heatshift.planner.problem.Problem.late_options`), how many jobs
    start there: those of a class that must start in the horizon but that ``counts`` (a
    feasible plan) leaves out, each where it scores best among the late starts with room left
    by ``counts``. A late job still runs in the horizon, rather than never in this plan."""
    fleet = _Fleet(p)
    placed = [0] * len(p.classes)
    for o, n in zip(p.options, counts, strict=True):
        if n:
            placed[o.job_class] += n
            fleet.take(o, n, 0, fleet.job_heat_wh(o))
    left = {
        c: data.count - placed[c]
        for c, data in enumerate(p.classes)
        if data.must_start_in_horizon and data.count > placed[c]
    }
    if not left or not p.late_options:
        return [0] * len(p.late_options)
    order = sorted(left, key=lambda c: (p.classes[c].overdue, c))
    return fleet.place(p.late_options, order, left)


class _Fleet:
    """Capacity used and heat still wanted per site and slot, as a list schedule places jobs."""

    def __init__(self, p: planner_problem.Problem) -> None:
        self.p = p
        self.used = [[[0, 0, 0] for _ in range(p.grid.slots)] for _ in p.sites]
        self.unmet = [_unmet_demand_wh(site) for site in p.sites]

    def job_heat_wh(self, o: planner_problem.StartOption) -> list[float]:
        """One job's heat in each slot it runs in when started at ``o``, Wh (empty where heat
        is not valued)."""
        if not self.p.sites[o.site].heat_valued:
            return []
        bucket = self.p.buckets[o.bucket]
        return [
            o.heat_watts * bucket.heat_seconds[k] / 3600.0 for k in bucket.running_slots(o.slot)
        ]

    def take(self, o: planner_problem.StartOption, n: int, before: int, heat: list[float]) -> None:
        """Start ``n`` more jobs at ``o`` (which had ``before``; each makes ``heat``, from
        :meth:`job_heat_wh`): hold their lanes' capacity and count their heat against the
        demand of the slots they run in."""
        units = self.p.classes[o.job_class].units
        new_lanes = o.lanes(before + n) - o.lanes(before)
        site_used = self.used[o.site]
        want = self.unmet[o.site]
        for j, k in enumerate(self.p.buckets[o.bucket].running_slots(o.slot)):
            for r, u in enumerate(units):
                site_used[k][r] += new_lanes * u
            if heat:
                want[k] = max(0.0, want[k] - n * heat[j])

    def place(
        self,
        options: Sequence[planner_problem.StartOption],
        order: Sequence[int],
        wanted: dict[int, int],
    ) -> list[int]:
        """Place ``wanted[c]`` jobs of each class ``c`` in ``order`` at ``options`` (as many as
        find room); per option, how many start there."""
        p = self.p
        counts = [0] * len(options)
        by_class: dict[int, list[int]] = {}
        for i, o in enumerate(options):
            by_class.setdefault(o.job_class, []).append(i)
        # Objective weights per Wh, as in the CP-SAT objective.
        useful_w = (p.useful_heat_weight + p.dumped_heat_weight) / 1000.0
        dumped_w = p.dumped_heat_weight / 1000.0
        horizon_h = (p.grid.end_s - p.grid.now_s) / 3600.0
        # Per option: the slots its jobs run in, and each job's heat in them.
        runs = [p.buckets[o.bucket].running_slots(o.slot) for o in options]
        heats = [self.job_heat_wh(o) for o in options]
        for c in order:
            data = p.classes[c]
            needs = [(r, u) for r, u in enumerate(data.units) if u]
            delay_w = p.delay_weight * (data.priority + 1)
            left = wanted[c]
            # Room only shrinks as jobs are placed, so an option that cannot take a job of
            # this class now never will: it leaves the candidates for good.
            live = by_class.get(c, [])
            while left > 0:
                best: tuple[float, int, int] | None = None  # score, option, fit
                still_live: list[int] = []
                for i in live:
                    o = options[i]
                    run = runs[i]
                    site_used = self.used[o.site]
                    free = p.sites[o.site].free
                    room = o.max_count  # more lanes than this never help
                    for k in run:
                        free_k, used_k = free[k], site_used[k]
                        for r, u in needs:
                            room = min(room, (free_k[r] - used_k[r]) // u)
                    lanes = o.lanes(counts[i])
                    fit = min(
                        left, o.max_count - counts[i], (lanes + room) * o.per_lane - counts[i]
                    )
                    if fit <= 0:
                        continue
                    still_live.append(i)
                    score = -delay_w * o.delay_hours
                    heat = heats[i]
                    if heat:
                        want = self.unmet[o.site]
                        useful = sum(min(h, want[k]) for h, k in zip(heat, run, strict=True))
                        score += useful_w * useful - dumped_w * sum(heat)
                    if best is None or score > best[0]:
                        best = (score, i, fit)
                live = still_live
                if best is None:
                    break  # no room anywhere: the solver's late (or deferred) count takes it
                score, i, fit = best
                if not data.must_start_in_horizon and score < -delay_w * horizon_h:
                    break  # waiting past the horizon costs less than starting here
                o = options[i]
                heat = heats[i]
                n = fit
                if heat and score > 0:
                    n = _worthwhile_batch(heat, [self.unmet[o.site][k] for k in runs[i]], fit)
                self.take(o, n, counts[i], heat)
                counts[i] += n
                left -= n
        return counts


def _worthwhile_batch(heat: list[float], wanted: list[float], fit: int) -> int:
    """How many identical jobs to start together: while each next one still has at
    least half the first one's share of wanted heat (then options are scored again)."""
    first = sum(min(h, w) for h, w in zip(heat, wanted, strict=True))
    n = 1
    while n < fit:
        gain = sum(min(h, max(0.0, w - n * h)) for h, w in zip(heat, wanted, strict=True))
        if gain < 0.5 * first:
            break
        n += 1
    return n
