"""Job classes: pending jobs grouped so the solver decides counts, not individuals.

Jobs with the same resource shape, explicit power, duration bucket, release slot,
deadline slot, allowed sites and priority are interchangeable to the model: the
solver decides how many of a class start at each (site, slot), and
:func:`assign_jobs` then hands out concrete jobs earliest-deadline-first. A class is
always conservative for its members: its duration is the longest member's (for
capacity), its deadline slot the earliest member's and its shape at least theirs.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from heatshift import model
from heatshift.planner import grid as planner_grid

# Duration bucket edges (s): jobs within one bucket share a class. Geometric-ish, so the
# error in a class's duration is bounded by ~35 % and never underestimates capacity use.
_DURATION_EDGES_S: tuple[float, ...] = tuple(
    m * 60.0
    for m in (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 360, 480, 720, 960, 1440, 2160, 2880)
)


@dataclass(frozen=True, slots=True)
class JobClass:
    """Interchangeable pending jobs, as the solver sees them."""

    index: int
    resources: model.Resources
    power_watts: float | None  # explicit power; None = each site's power model
    duration_s: float  # longest member: what capacity must hold
    mean_duration_s: float  # what heat is estimated with
    release_slot: int  # first slot any member may start in
    deadline_slot: int  # last slot all members may start in (-1: already late; the
    # grid's slot count: every member may start after the horizon)
    allowed_sites: frozenset[str] | None
    priority: int
    jobs: tuple[model.JobRequest, ...]  # members, earliest deadline first

    @property
    def count(self) -> int:
        return len(self.jobs)


# (shape, explicit power, duration bucket, release slot, deadline slot, sites, priority)
_ClassKey = tuple[tuple[float, float, int], float | None, int, int, int, frozenset[str] | None, int]


def duration_bucket(duration_s: float) -> int:
    return bisect.bisect_left(_DURATION_EDGES_S, duration_s)


COARSEST_LEVEL = 3

# Deadline slots a coarsened class may have: geometric, so rounding a deadline down to
# one costs at most a third of its slack (and nothing on an already coarse grid).
_DEADLINE_STEPS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def _round_up_pow2(value: float) -> float:
    if value <= 0:
        return 0.0
    return float(2 ** math.ceil(math.log2(value) - 1e-9))


def class_shape(resources: model.Resources, level: int) -> model.Resources:
    """The shape a job counts as at ``level``: exact, or (level >= 2) CPU and memory
    rounded up to a power of two, so a class never understates what it needs."""
    if level < 2:
        return resources
    return model.Resources(
        cpu=_round_up_pow2(resources.cpu),
        memory_gib=_round_up_pow2(resources.memory_gib),
        gpu=resources.gpu,
    )


def build_classes(
    jobs: Sequence[model.JobRequest],
    grid: planner_grid.Grid,
    level: int = 0,
) -> list[JobClass]:
    """Group ``jobs`` into classes on ``grid``, exactly (``level`` 0) or coarser.

    Each level merges more, always conservatively: 1 rounds deadline slots down to a
    geometric series (0, 1, 2, 3, 4, 6, 8, 12, ...); 2 also merges priorities (the class
    takes the highest) and rounds shapes up; 3 also merges neighbouring duration buckets
    (the class takes the longest duration).
    """
    groups: dict[_ClassKey, list[model.JobRequest]] = defaultdict(list)
    shapes: dict[tuple[float, float, int], tuple[float, float, int]] = {}
    slots, now = grid.slots, grid.now_s
    # Members join their class earliest deadline first, and classes are made in the
    # order of their first member: both independent of the input order.
    held_s: dict[str, float] = {}  # how long a member holds capacity from its slot's start
    for job in sorted(jobs, key=_edf):
        release_slot = grid.first_start_at_or_after(job.release_s if job.release_s > now else now)
        held_s[job.id] = job.duration_s
        if job.release_s > now and job.deadline_s < grid.starts[min(release_slot, slots)]:
            # An arrival that cannot wait for the next slot starts at its release, inside
            # the slot before: it holds capacity from that slot's start to its own end.
            release_slot = grid.last_start_at_or_before(job.release_s)
            held_s[job.id] += job.release_s - grid.starts[release_slot]
        if job.deadline_s >= grid.end_s:
            deadline_slot = slots  # may wait past the horizon: no start is forced
        else:
            deadline_slot = grid.last_start_at_or_before(job.deadline_s)
        if level >= 1 and 0 < deadline_slot < slots:
            deadline_slot = _DEADLINE_STEPS[bisect.bisect_right(_DEADLINE_STEPS, deadline_slot) - 1]
        exact = job.resources.as_tuple()
        shape = shapes.get(exact)
        if shape is None:
            shape = shapes[exact] = class_shape(job.resources, level).as_tuple()
        power_key = None
        if job.power_watts is not None:
            power_key = round(job.power_watts, -1 if level < 2 else -2)
        bucket = duration_bucket(held_s[job.id])
        key = (
            shape,
            power_key,
            bucket // 2 if level >= COARSEST_LEVEL else bucket,
            release_slot,
            deadline_slot,
            job.allowed_sites,
            job.priority if level < 2 else 0,
        )
        groups[key].append(job)
    classes: list[JobClass] = []
    for key, members in groups.items():
        release_slot, deadline_slot = key[3], key[4]
        explicit = [j.power_watts for j in members if j.power_watts is not None]
        shape_cpu, shape_memory, shape_gpu = key[0]
        durations = [j.duration_s for j in members]
        classes.append(
            JobClass(
                index=len(classes),
                # Built from validated jobs' figures: no need to validate again.
                resources=model.Resources.model_construct(
                    cpu=shape_cpu, memory_gib=shape_memory, gpu=shape_gpu
                ),
                power_watts=sum(explicit) / len(explicit) if explicit else None,
                duration_s=max(held_s[j.id] for j in members),
                mean_duration_s=sum(durations) / len(durations),
                release_slot=release_slot,
                deadline_slot=deadline_slot,
                allowed_sites=members[0].allowed_sites,
                priority=max(j.priority for j in members),
                jobs=tuple(members),
            )
        )
    return classes


def _edf(job: model.JobRequest) -> tuple[float, int, float, str]:
    return (job.deadline_s, -job.priority, job.release_s, job.id)


def assign_jobs(
    job_class: JobClass, starts: Sequence[tuple[float, str]]
) -> list[tuple[model.JobRequest, str, float]]:
    """Hand out concrete jobs to ``(start_s, site)`` starts: earliest deadline first.

    Earliest starts get the earliest deadlines, so a job never starts later than a
    classmate whose deadline is later than its own.
    """
    ordered = sorted(starts)
    members = job_class.jobs[: len(ordered)]  # the solver never starts more than a class has
    return [(job, site, start_s) for job, (start_s, site) in zip(members, ordered, strict=True)]
