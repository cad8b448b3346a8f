"""The domain model: sites, tanks, offtakers, jobs, snapshots and plans.

Pure data (pydantic v2, frozen). Everything the planner decides on arrives as a
:class:`Snapshot` and everything it decides leaves as a :class:`Plan`; the operator
(`kube`), the simulator (`sim`) and the benchmark all speak these types.

Times are seconds on the snapshot's clock, as floats: the simulator counts from the
scenario start, the operator uses Unix time. Nothing here reads a clock.

Every number is finite, and what sizes the planner's work is bounded
(:mod:`heatshift.bounds`): a demand series' step and length, a job's duration, the snapshot's
time and its counts of sites and jobs. A model outside them is a ValidationError that says
which bound, raised where it is built, never a planner that loops or overflows.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from heatshift import bounds

SECONDS_PER_HOUR = 3600.0


def validation_reason(err: pydantic.ValidationError) -> str:
    """The first problem of a validation error in its own words, one line (a bound's
    "the planning step must be between 1m and 24h, not 1s"), naming the field otherwise."""
    first = err.errors()[0]
    error = (first.get("ctx") or {}).get("error")
    if error is not None:
        return str(error)
    field = ".".join(str(part) for part in first["loc"])
    return f"{field}: {first['msg']}" if field else str(first["msg"])


class Frozen(BaseModel):
    """Base of every domain object: immutable, no unknown fields, finite numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Resources(Frozen):
    """An amount of compute: CPU cores, memory and whole GPUs."""

    cpu: float = Field(default=0.0, ge=0.0, description="CPU cores.")
    memory_gib: float = Field(default=0.0, ge=0.0, description="Memory in GiB.")
    gpu: int = Field(default=0, ge=0, description="Whole GPUs.")

    def fits_within(self, capacity: Resources) -> bool:
        """True when this amount fits inside ``capacity``."""
        return (
            self.cpu <= capacity.cpu + 1e-9
            and self.memory_gib <= capacity.memory_gib + 1e-9
            and self.gpu <= capacity.gpu
        )

    def plus(self, other: Resources) -> Resources:
        return Resources(
            cpu=self.cpu + other.cpu,
            memory_gib=self.memory_gib + other.memory_gib,
            gpu=self.gpu + other.gpu,
        )

    def as_tuple(self) -> tuple[float, float, int]:
        return (self.cpu, self.memory_gib, self.gpu)


class PowerModel(Frozen):
    """How much electrical power a site draws: idle plus per-GPU and per-core power."""

    idle_watts: float = Field(default=0.0, ge=0.0, le=bounds.MAX_SITE_POWER_WATTS)
    watts_per_gpu: float = Field(default=0.0, ge=0.0, le=bounds.MAX_SITE_POWER_WATTS)
    watts_per_cpu: float = Field(default=0.0, ge=0.0, le=bounds.MAX_SITE_POWER_WATTS)

    def job_watts(self, resources: Resources) -> float:
        """Power of a job of this shape when its owner gave no explicit figure."""
        return resources.gpu * self.watts_per_gpu + resources.cpu * self.watts_per_cpu


class Tank(Frozen):
    """The buffer tank between the heat exchanger and the building."""

    capacity_kwh: float = Field(
        ge=0.0, le=bounds.MAX_TANK_CAPACITY_KWH, description="Usable thermal storage, kWh."
    )
    loss_per_hour: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Fraction of stored energy lost per hour."
    )


class OfftakerKind(enum.StrEnum):
    POOL = "pool"
    RESIDENTIAL = "residential"
    GREENHOUSE = "greenhouse"
    DISTRICT_HEATING = "districtHeating"
    OFFICE = "office"


class BackupKind(enum.StrEnum):
    """The heat source an offtaker burns when a leaf site gives it no heat."""

    GAS = "gas"
    OIL = "oil"
    ELECTRIC = "electric"
    DISTRICT = "district"


BACKUP_EFFICIENCY: Mapping[BackupKind, float] = {
    BackupKind.GAS: 0.90,
    BackupKind.OIL: 0.85,
    BackupKind.ELECTRIC: 1.00,
    BackupKind.DISTRICT: 1.00,
}
"""Default heat delivered per kWh of fuel: a condensing gas boiler (0.90, net calorific value),
an oil boiler (0.85), a resistive electric boiler (1.0), a district-heating connection (1.0:
the heat bought is the heat delivered). A heat pump is ``electric`` with its COP as efficiency."""

EMISSION_FACTOR_KG_PER_KWH: Mapping[BackupKind, float] = {
    BackupKind.GAS: 0.202,
    BackupKind.OIL: 0.267,
    BackupKind.ELECTRIC: 0.250,
    BackupKind.DISTRICT: 0.150,
}
"""Default kg CO2 per kWh of fuel: natural gas 0.202 and heating oil 0.267 (IPCC 2006 default
combustion factors, 56.1 and 74.1 t/TJ), grid electricity 0.250 (about the EU average of the
early 2020s), district heat 0.150 (a mixed European network). Override with your supplier's."""


class Offtaker(Frozen):
    """The building (or loop) that takes the heat."""

    kind: OfftakerKind
    max_thermal_kw: float = Field(
        gt=0.0, le=bounds.MAX_THERMAL_KW, description="Most heat it can take, kW."
    )
    backup: BackupKind = Field(
        default=BackupKind.GAS, description="What it burns for heat the site does not give."
    )


class Site(Frozen):
    """A leaf site: a micro data centre and the building it heats."""

    name: str = Field(min_length=1)
    capacity: Resources
    power: PowerModel
    heat_recovery_efficiency: float = Field(gt=0.0, le=1.0)
    tank: Tank
    offtaker: Offtaker

    def job_watts(self, resources: Resources, explicit_watts: float | None) -> float:
        """A job's power at this site: its explicit figure, else the site's power model."""
        if explicit_watts is not None:
            return explicit_watts
        return self.power.job_watts(resources)


class DemandSeries(Frozen):
    """A step series of heat demand (kW): ``kw[i]`` holds from ``start_s + i*step_s``.

    The step is within :data:`heatshift.bounds.FORECAST_STEP` and the series has at most
    :data:`heatshift.bounds.MAX_SERIES_SAMPLES` samples, so a walk over it is short.
    """

    start_s: float = Field(ge=-bounds.MAX_TIMESTAMP_S, le=bounds.MAX_TIMESTAMP_S)
    step_s: float
    kw: tuple[float, ...] = Field(max_length=bounds.MAX_SERIES_SAMPLES)

    @field_validator("step_s")
    @classmethod
    def _step_within_bounds(cls, value: float) -> float:
        return bounds.FORECAST_STEP.check(value)

    @property
    def end_s(self) -> float:
        return self.start_s + self.step_s * len(self.kw)

    def value_at(self, t_s: float) -> float:
        """Demand at ``t_s``; before the start the first value, after the end the last."""
        if not self.kw:
            return 0.0
        return self.kw[min(max(self._sample_index(t_s), 0), len(self.kw) - 1)]

    def _sample_index(self, t_s: float) -> int:
        # A time a rounding error short of a sample's start belongs to that sample.
        return math.floor((t_s - self.start_s) / self.step_s + 1e-9)

    def mean_over(self, t0_s: float, t1_s: float) -> float:
        """Time-weighted mean demand over ``[t0_s, t1_s)``.

        Visits each sample the interval covers once (index arithmetic, no float stepping),
        so its work is bounded by the series' length whatever the times are.
        """
        if t1_s <= t0_s or not self.kw:
            return self.value_at(t0_s)
        offset = (t0_s - self.start_s) / self.step_s
        if abs(offset - round(offset)) < 1e-9 and abs(t1_s - t0_s - self.step_s) < 1e-6:
            # Exactly one sample (the forecaster's common case): no walk needed.
            return self.value_at(t0_s)
        n, start, step = len(self.kw), self.start_s, self.step_s
        total = 0.0
        lo, hi = max(t0_s, start), min(t1_s, self.end_s)
        if t0_s < lo:  # before the series: its first value holds
            total += self.kw[0] * (min(t1_s, lo) - t0_s)
        if t1_s > hi:  # after it: its last value holds
            total += self.kw[-1] * (t1_s - max(t0_s, hi))
        if hi > lo:
            first = min(max(self._sample_index(lo), 0), n - 1)
            # The sample holding just before ``hi`` (a rounding error past a boundary is not
            # the next sample).
            last = min(max(math.ceil((hi - start) / step - 1e-9) - 1, first), n - 1)
            t = lo
            for i in range(first, last + 1):
                seg_end = hi if i == last else min(hi, start + (i + 1) * step)
                if seg_end > t:
                    total += self.kw[i] * (seg_end - t)
                    t = seg_end
        return total / (t1_s - t0_s)


class SiteState(Frozen):
    """What is known of a site at planning time (from metering, or the simulator)."""

    site: str
    tank_energy_kwh: float = Field(ge=0.0)
    demand_kw: float = Field(ge=0.0, description="Offtaker demand now, kW.")
    demand_history: DemandSeries | None = Field(
        default=None, description="Past demand, ending at the snapshot's time."
    )
    demand_forecast: DemandSeries | None = Field(
        default=None, description="Demand ahead, if the metering source provides one."
    )
    heat_aware: bool = Field(
        default=True,
        description="False when metering data is missing or invalid: heat there is worth 0.",
    )
    reason: str = Field(default="", description="Why the site is not heat-aware, in words.")


class JobRequest(Frozen):
    """A held job waiting for a place and a time."""

    id: str
    resources: Resources
    duration_s: float = Field(description="Expected run time.")
    power_watts: float | None = Field(
        default=None, ge=0.0, le=bounds.MAX_JOB_POWER_WATTS, description="Explicit power."
    )
    release_s: float = Field(description="Earliest start (submission time).")
    deadline_s: float = Field(description="Latest start that meets the job's SLA.")
    allowed_sites: frozenset[str] | None = Field(
        default=None, description="Sites it may run at; None means any."
    )
    priority: int = Field(
        default=1,
        ge=0,
        le=bounds.MAX_PRIORITY,
        description="Higher runs sooner when delay costs.",
    )

    @field_validator("duration_s")
    @classmethod
    def _duration_within_bounds(cls, value: float) -> float:
        return bounds.JOB_DURATION.check(value)

    @model_validator(mode="after")
    def _deadline_after_release(self) -> JobRequest:
        if self.deadline_s < self.release_s:
            raise ValueError("deadline_s must not be before release_s")
        return self

    def may_run_at(self, site: str) -> bool:
        return self.allowed_sites is None or site in self.allowed_sites

    def is_overdue_at(self, now_s: float) -> bool:
        """Whether its start deadline has passed at ``now_s``: late however soon it starts."""
        return self.deadline_s < now_s - _OVERDUE_EPS_S


_OVERDUE_EPS_S = 1e-6
"""Seconds past its deadline a start counts as late (rounding)."""


class RunningJob(Frozen):
    """A job already running: it holds resources and makes heat until ``end_s``."""

    id: str
    site: str
    resources: Resources
    power_watts: float = Field(ge=0.0)
    end_s: float


class Snapshot(Frozen):
    """Everything the planner may know at ``now_s``. A copy: planning never changes it."""

    now_s: float = Field(
        ge=0.0,
        le=bounds.MAX_TIMESTAMP_S,
        description="Seconds from the simulation's start, or Unix time; before 2100 either way "
        "(later, float steps of a second start to vanish).",
    )
    sites: tuple[Site, ...] = Field(max_length=bounds.MAX_SITES)
    states: Mapping[str, SiteState]
    pending: tuple[JobRequest, ...] = Field(default=(), max_length=bounds.MAX_JOBS_PER_SCENARIO)
    running: tuple[RunningJob, ...] = Field(default=(), max_length=bounds.MAX_JOBS_PER_SCENARIO)

    @model_validator(mode="after")
    def _states_match_sites(self) -> Snapshot:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site names must be unique")
        missing = [n for n in names if n not in self.states]
        if missing:
            raise ValueError(f"no state for sites {missing}")
        return self

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)


class SolveStatus(enum.StrEnum):
    """How a plan came about, in our own words (not the solver's)."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"  # solver used its work budget (deterministic) with a good plan
    TIMED_OUT = "timedOut"  # the wall-clock safety net stopped it first: a good plan, but
    # one a less loaded machine may not repeat
    FALLBACK = "fallback"  # solver found nothing in time: greedy plan instead
    HEURISTIC = "heuristic"  # rule-based, no solver: a baseline, or a snapshot too big for it
    EMPTY = "empty"  # nothing to plan


class Placement(Frozen):
    """Start ``job_id`` at ``site`` at ``start_s``, and why."""

    job_id: str
    site: str
    start_s: float
    reason: str = ""


class Unschedulable(Frozen):
    """A job that fits no site it may run at; reported, never dropped silently."""

    job_id: str
    reason: str


class Plan(Frozen):
    """The planner's answer for one snapshot."""

    now_s: float
    placements: tuple[Placement, ...] = ()
    unschedulable: tuple[Unschedulable, ...] = ()
    status: SolveStatus
    solve_seconds: float = 0.0
    objective: float | None = None
    expected_useful_heat_kwh: float = 0.0
    notes: tuple[str, ...] = ()

    def starting_before(self, t_s: float) -> tuple[Placement, ...]:
        """The placements whose start falls before ``t_s`` (what to apply now)."""
        return tuple(p for p in self.placements if p.start_s < t_s)
