"""Planner settings: horizon, time grid, solver limits and objective weights.

Typed, with a docstring per field; the operator fills them from a HeatPolicy, the
simulator and benchmark from their command lines. Every setting that sizes a plan's work is
bounded (:mod:`heatshift.bounds`): with the horizon at most a week and slots at least a minute,
a grid has at most 10,080 slots, so no setting can make one plan unbounded.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from heatshift import bounds, model

MINUTE = 60.0
HOUR = 3600.0
MAX_WORKERS = 64
"""CP-SAT search threads at most (more than a node has cores only slows it)."""
MAX_SEED = 2**31 - 1
"""CP-SAT takes a 32-bit seed."""
MAX_WORK_BUDGET = 10_000_000
"""Largest budget of start options a config may give the solver or the list schedule."""


class PlannerConfig(model.Frozen):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    horizon_s: float = Field(default=24 * HOUR)
    """How far ahead the planner looks (:data:`heatshift.bounds.PLANNING_HORIZON`)."""

    step_s: float = Field(default=15 * MINUTE)
    """Slot length near now, and how often the plan is remade
    (:data:`heatshift.bounds.PLANNING_STEP`)."""

    fine_span_s: float = Field(default=6 * HOUR, ge=0, le=bounds.PLANNING_HORIZON.high_s)
    """How far ahead the fine grid reaches; beyond it slots are ``coarse_step_s`` long."""

    coarse_step_s: float = Field(default=1 * HOUR)
    """Slot length beyond ``fine_span_s`` (:data:`heatshift.bounds.PLANNING_STEP`)."""

    time_limit_s: float = Field(default=2.0)
    """Wall-clock limit for one CP-SAT solve; past it the best plan found is used
    (:data:`heatshift.bounds.SOLVER_TIME_LIMIT`)."""

    search_effort: float | None = Field(default=None, gt=0, le=bounds.SOLVER_TIME_LIMIT.high_s)
    """CP-SAT's deterministic time limit (its own work units, not seconds): the limit that
    normally ends a search, so that plans repeat for a seed. None: a tenth of
    ``time_limit_s``, which a solve reaches in about a third of that wall time."""

    gap_limit: float = Field(default=0.005, ge=0, lt=1)
    """Stop solving once the plan is provably within this fraction of the best possible."""

    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    """CP-SAT search workers (threads). One is reproducible for a seed and leaves the
    operator's event loop a core; more search faster but not reproducibly."""

    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    """Solver seed: the same snapshot and seed give the same plan."""

    useful_heat_weight: float = Field(default=1000.0, ge=0, le=bounds.MAX_OBJECTIVE_WEIGHT)
    """Objective value of one kWh delivered to an offtaker."""

    dumped_heat_weight: float = Field(default=10.0, ge=0, le=bounds.MAX_OBJECTIVE_WEIGHT)
    """Objective cost of one kWh dumped through the dry cooler (or lost from the tank)."""

    stored_heat_weight: float = Field(default=500.0, ge=0, le=bounds.MAX_OBJECTIVE_WEIGHT)
    """Value of one kWh left in a tank at the horizon's end (it serves demand later)."""

    delay_weight: float = Field(default=1.0, ge=0, le=bounds.MAX_OBJECTIVE_WEIGHT)
    """Objective cost of one job-hour of waiting, times the job's priority (plus one)."""

    max_start_variables: int = Field(default=6_000, ge=0, le=MAX_WORK_BUDGET)
    """Budget of (class, site, start slot) decisions for the solver. A snapshot over it
    even with classes merged and start slots thinned is list-scheduled instead (0: every
    snapshot is)."""

    max_list_schedule_options: int = Field(default=30_000, ge=100, le=MAX_WORK_BUDGET)
    """Budget of start options for a list-scheduled snapshot; bigger ones are coarsened."""

    @property
    def deterministic_time(self) -> float:
        return self.search_effort if self.search_effort is not None else 0.1 * self.time_limit_s

    @field_validator("horizon_s")
    @classmethod
    def _horizon_within_bounds(cls, value: float) -> float:
        return bounds.PLANNING_HORIZON.check(value)

    @field_validator("step_s", "coarse_step_s")
    @classmethod
    def _step_within_bounds(cls, value: float) -> float:
        return bounds.PLANNING_STEP.check(value)

    @field_validator("time_limit_s")
    @classmethod
    def _time_limit_within_bounds(cls, value: float) -> float:
        return bounds.SOLVER_TIME_LIMIT.check(value)
