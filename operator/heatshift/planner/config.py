"""Planner settings: horizon, time grid, solver limits and objective weights.

Typed, with a docstring per field; the operator fills them from a HeatPolicy, the
simulator and benchmark from their command lines.
"""

from __future__ import annotations

from pydantic import Field

from heatshift import model

MINUTE = 60.0
HOUR = 3600.0


class PlannerConfig(model.Frozen):
    horizon_s: float = Field(default=24 * HOUR, gt=0)
    """How far ahead the planner looks."""

    step_s: float = Field(default=15 * MINUTE, gt=0)
    """Slot length near now (and how often the plan is remade)."""

    fine_span_s: float = Field(default=6 * HOUR, ge=0)
    """How far ahead the fine grid reaches; beyond it slots are ``coarse_step_s`` long."""

    coarse_step_s: float = Field(default=1 * HOUR, gt=0)
    """Slot length beyond ``fine_span_s``."""

    time_limit_s: float = Field(default=2.0, gt=0)
    """Wall-clock limit for one CP-SAT solve; past it the best plan found is used."""

    search_effort: float | None = Field(default=None, gt=0)
    """CP-SAT's deterministic time limit (its own work units, not seconds): the limit that
    normally ends a search, so that plans repeat for a seed. None: a tenth of
    ``time_limit_s``, which a solve reaches in about a third of that wall time."""

    gap_limit: float = Field(default=0.005, ge=0, lt=1)
    """Stop solving once the plan is provably within this fraction of the best possible."""

    workers: int = Field(default=1, ge=1)
    """CP-SAT search workers (threads). One is reproducible for a seed and leaves the
    operator's event loop a core; more search faster but not reproducibly."""

    seed: int = 0
    """Solver seed: the same snapshot and seed give the same plan."""

    useful_heat_weight: float = Field(default=1000.0, ge=0)
    """Objective value of one kWh delivered to an offtaker."""

    dumped_heat_weight: float = Field(default=10.0, ge=0)
    """Objective cost of one kWh dumped through the dry cooler (or lost from the tank)."""

    stored_heat_weight: float = Field(default=500.0, ge=0)
    """Value of one kWh left in a tank at the horizon's end (it serves demand later)."""

    delay_weight: float = Field(default=1.0, ge=0)
    """Objective cost of one job-hour of waiting, times the job's priority (plus one)."""

    max_start_variables: int = Field(default=6_000, ge=0)
    """Budget of (class, site, start slot) decisions for the solver. A snapshot over it
    even with classes merged and start slots thinned is list-scheduled instead (0: every
    snapshot is)."""

    max_list_schedule_options: int = Field(default=30_000, ge=100)
    """Budget of start options for a list-scheduled snapshot; bigger ones are coarsened."""

    @property
    def deterministic_time(self) -> float:
        return self.search_effort if self.search_effort is not None else 0.1 * self.time_limit_s
