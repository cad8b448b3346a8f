"""The planning time grid: fine slots near now, coarser ones further out.

A pure helper of the planner: slot boundaries, which slot a time falls in, and how
long a job started at one slot overlaps another. Slot 0 always starts at ``now``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from heatshift.planner import config as planner_config


@dataclass(frozen=True, slots=True)
class Grid:
    """Slot ``k`` covers ``[starts[k], starts[k+1])``; ``starts[-1]`` is the horizon end."""

    starts: tuple[float, ...]

    @property
    def slots(self) -> int:
        return len(self.starts) - 1

    @property
    def now_s(self) -> float:
        return self.starts[0]

    @property
    def end_s(self) -> float:
        return self.starts[-1]

    def length_s(self, k: int) -> float:
        return self.starts[k + 1] - self.starts[k]

    def first_start_at_or_after(self, t_s: float) -> int:
        """The first slot whose start is at or after ``t_s`` (``slots`` if none)."""
        return bisect.bisect_left(self.starts, t_s - 1e-6, 0, self.slots)

    def last_start_at_or_before(self, t_s: float) -> int:
        """The last slot whose start is at or before ``t_s`` (-1 if ``t_s < now``)."""
        return bisect.bisect_right(self.starts, t_s + 1e-6, 0, self.slots) - 1

    def overlap_s(self, start_slot: int, duration_s: float, k: int) -> float:
        """Seconds a job started at slot ``start_slot`` runs inside slot ``k``."""
        run_start = self.starts[start_slot]
        run_end = run_start + duration_s
        return max(0.0, min(run_end, self.starts[k + 1]) - max(run_start, self.starts[k]))

    def last_occupied_slot(self, start_slot: int, duration_s: float) -> int:
        """The last slot a job started at ``start_slot`` still runs in (within the grid)."""
        run_end = self.starts[start_slot] + duration_s
        k = bisect.bisect_left(self.starts, run_end - 1e-6, 0, self.slots + 1) - 1
        return min(max(k, start_slot), self.slots - 1)


def build_grid(now_s: float, cfg: planner_config.PlannerConfig) -> Grid:
    """Fine ``step_s`` slots up to ``fine_span_s`` ahead, then ``coarse_step_s`` slots.

    At most ``ceil(horizon_s / step_s)`` slots (every slot is at least ``step_s`` long but
    the last): the loop is bounded by that count, not by float stepping, so a time so large
    that adding a step changes nothing is an error rather than a loop without end.
    """
    if not (now_s + cfg.step_s) - now_s >= 0.5 * cfg.step_s:  # also false for NaN
        raise ValueError(
            f"cannot lay a grid of {cfg.step_s:g}s slots from time {now_s:g}: "
            "float steps vanish there"
        )
    starts = [now_s]
    t = now_s
    end = now_s + cfg.horizon_s
    fine_end = now_s + min(cfg.fine_span_s, cfg.horizon_s)
    for _ in range(math.ceil(cfg.horizon_s / cfg.step_s)):
        if t >= end - 1e-6:
            break
        step = cfg.step_s if t < fine_end - 1e-6 else max(cfg.coarse_step_s, cfg.step_s)
        t = min(t + step, end)
        starts.append(t)
    if t < end - 1e-6:  # not reached for a config and time within bounds
        raise ValueError(f"the grid from time {now_s:g} fell short of the horizon")
    return Grid(starts=tuple(starts))
