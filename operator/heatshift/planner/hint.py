"""The plan the solver starts from, and falls back to: heat-seeking list scheduling.

Classes are taken earliest deadline first (those that must start in the horizon
before those that may wait); each class's jobs go, a batch at a time, to the start
option that scores best under the solver's own objective weights: heat an offtaker
still wants in the slots the jobs run, minus the dump cost of the rest, minus delay.
Capacity is respected slot by slot, so the result is always a feasible plan.

CP-SAT started from the earliest-start plan spends its budget undoing it (measured on
the built-in scenario: the returned plan was the hint itself on every 300-job
snapshot at a 2 s limit); started from here it only has to refine.
"""

from __future__ import annotations

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
    used = [[[0, 0, 0] for _ in range(p.grid.slots)] for _ in p.sites]
    unmet = [_unmet_demand_wh(site) for site in p.sites]
    counts = [0] * len(p.options)
    by_class: dict[int, list[int]] = {}
    for i, o in enumerate(p.options):
        by_class.setdefault(o.job_class, []).append(i)
    # Objective weights per Wh, as in the CP-SAT objective.
    useful_w = (p.useful_heat_weight + p.dumped_heat_weight) / 1000.0
    dumped_w = p.dumped_heat_weight / 1000.0
    horizon_h = (p.grid.end_s - p.grid.now_s) / 3600.0
    footprint = {(o.bucket, o.slot): p.buckets[o.bucket].running_slots(o.slot) for o in p.options}
    order = sorted(by_class, key=lambda c: (not p.classes[c].must_start_in_horizon, c))
    for c in order:
        data = p.classes[c]
        units = data.units
        delay_w = p.delay_weight * (data.priority + 1)
        left = data.count
        while left > 0:
            best: tuple[float, int, int, list[float]] | None = None  # score, option, fit, heat
            for i in by_class[c]:
                o = p.options[i]
                run = footprint[(o.bucket, o.slot)]
                site_used = used[o.site]
                free = p.sites[o.site].free
                fit = min(left, o.max_count - counts[i])
                for k in run:
                    for r in range(3):
                        if units[r]:
                            fit = min(fit, (free[k][r] - site_used[k][r]) // units[r])
                if fit <= 0:
                    continue
                score = -delay_w * o.delay_hours
                heat: list[float] = []
                if p.sites[o.site].heat_valued:
                    seconds = p.buckets[o.bucket].heat_seconds
                    heat = [o.heat_watts * seconds[k] / 3600.0 for k in run]
                    want = unmet[o.site]
                    useful = sum(min(h, want[k]) for h, k in zip(heat, run, strict=True))
                    score += useful_w * useful - dumped_w * sum(heat)
                if best is None or score > best[0]:
                    best = (score, i, fit, heat)
            if best is None:
                break  # no room anywhere: the solver's late (or deferred) count takes it
            score, i, fit, heat = best
            if not data.must_start_in_horizon and score < -delay_w * horizon_h:
                break  # waiting past the horizon costs less than starting here
            o = p.options[i]
            run = footprint[(o.bucket, o.slot)]
            n = fit
            if heat and score > 0:
                n = _worthwhile_batch(heat, [unmet[o.site][k] for k in run], fit)
            counts[i] += n
            left -= n
            for k, h in zip(run, heat or [0.0] * len(run), strict=True):
                for r in range(3):
                    used[o.site][k][r] += n * units[r]
                if h:
                    unmet[o.site][k] = max(0.0, unmet[o.site][k] - n * h)
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
