"""The heat ledger of a LeafSite: what it drew, delivered and dumped, per billing period.

Pure: no Kubernetes, no clock (``now_s`` is passed in). :func:`advance` takes the ledger as
LeafSite status last held it (:class:`heatshift.resources.LedgerStatus`), the cycle's
observation (the meter's cumulative registers, if any, and heatshift's own estimates for the
time since the last update) and returns the ledger to write back. Because every figure is
derived from values kept in status (the register values at the start of the period, what was
carried over from before a reset, the last accepted registers), a restarted or failed-over
operator continues the same ledger from the meter's registers: nothing lives only in memory.

Counting, per energy (IT energy, heat delivered, heat dumped):

- **metered** while the meter has a register for it:
  ``metered = carried + (register now - register at the start of the stretch)``. A stretch
  starts at the period's start, at a counter reset or at a meter replacement;
- **estimated** while it has none, from heatshift's estimate of the interval (IT load from
  the power model, heat from the tank physics); marked ``estimated`` (``mixed`` when a period
  has both).

Register checks, against the last accepted registers (each problem rejects the cycle's
registers, keeps the last ones, and becomes a ``MeterRegistersValid=False`` condition):

- another ``meterId``: a **replacement**; the new meter's registers start a new stretch and
  the interval since the last reading is estimated (nobody metered it);
- a register below its last value by more than the meter could have counted since a reset
  (at most the site's physical maximum over the elapsed time): a **reset** to about 0; the
  energy since the reset (the new value) is counted, never a negative delta;
- otherwise below its last value: **backwards**, rejected;
- up by more than the site's physical maximum (its rating times the elapsed time, with
  :data:`JUMP_TOLERANCE`): a **jump**, rejected;
- read no later than the last accepted ones: nothing new, no delta.

A register's own staleness (its read time older than the LeafSite's staleness limit) is
rejected when the reading is validated (:mod:`heatshift.metering.readings`).

Figures of a period (:func:`figures`):

- ERE = (total facility energy - reused energy) / IT energy, with the total facility energy
  taken as IT energy x ``pue`` (LeafSite ``spec.ledger.pue``, default 1: a leaf site has no
  chillers, its overhead is what you tell it) and the reused energy as the heat delivered;
- fuel avoided = heat delivered / the backup's efficiency, kWh of fuel;
- CO2 avoided = fuel avoided x the backup's emission factor, kg.

Called by :mod:`heatshift.kube.cycle` (through :mod:`heatshift.kube.status`) once per cycle
per site, and by :mod:`heatshift.sim.report` for the simulator's figures.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import enum
from collections.abc import Mapping

from heatshift import model, resources
from heatshift.metering import readings

JUMP_TOLERANCE = 1.10
"""A register may rise up to 10% faster than the site's rating allows (meter and clock
rounding); beyond that the reading is a wrong unit, a wrong meter or a broken one."""
JUMP_SLACK_KWH = 0.01
"""And by this much on top, so two readings a second apart never trip over rounding."""
SECONDS_PER_HOUR = 3600.0
DUMP_EPS_KWH = 1e-6
"""Less dumped than this in an interval is rounding, not a dump."""


class Energy(enum.StrEnum):
    """The energies the ledger counts, by their status field names."""

    IT = "it_energy"
    DELIVERED = "heat_delivered"
    DUMPED = "heat_dumped"


class Problem(enum.StrEnum):
    """What a register check found."""

    BACKWARDS = "backwards"
    JUMP = "jump"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """A site's ledger settings and physical maxima, from its LeafSite spec."""

    period: resources.LedgerPeriodKind
    pue: float
    backup_efficiency: float
    emission_factor_kg_per_kwh: float
    max_kw: Mapping[Energy, float]
    """The most each register can rise per hour: delivered at the offtaker's rating, IT and
    dumped (all of its heat) at the site's full power (see :meth:`for_site`)."""
    min_supply_temp_c: float | None = None
    max_step_s: float = 600.0
    """The longest interval one update estimates; a longer gap (the operator was down) is
    not filled in with a guess. Registers need no such limit: they count the gap."""

    @classmethod
    def for_site(
        cls,
        spec: resources.LeafSiteSpec,
        site: model.Site,
        *,
        max_step_s: float,
        load_kw: float = 0.0,
    ) -> Settings:
        """The settings of a LeafSite whose domain site (its capacity known) is ``site``.

        The site's full power is the largest of: its power model at full capacity, the IT
        load now (jobs' power hints may exceed the model), and the power whose recovered heat
        fills the offtaker's rating (a site is built to heat its building)."""
        ledger = spec.ledger or resources.LedgerSpec()
        backup = spec.offtaker.effective_backup
        p = site.power
        modelled_kw = (
            p.idle_watts + site.capacity.gpu * p.watts_per_gpu + site.capacity.cpu * p.watts_per_cpu
        ) / 1000.0
        full_kw = max(
            modelled_kw,
            load_kw,
            site.offtaker.max_thermal_kw / site.heat_recovery_efficiency,
        )
        return cls(
            period=ledger.period,
            pue=ledger.pue,
            backup_efficiency=backup.effective_efficiency,
            emission_factor_kg_per_kwh=backup.effective_emission_factor,
            max_kw={
                Energy.IT: full_kw,
                Energy.DELIVERED: site.offtaker.max_thermal_kw,
                Energy.DUMPED: full_kw,
            },
            min_supply_temp_c=spec.offtaker.min_supply_temp_c,
            max_step_s=max_step_s,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """What one cycle saw at a site."""

    reading: readings.SiteReading | None
    """The validated reading, None when it was rejected."""
    estimate_kwh: Mapping[Energy, float]
    """heatshift's estimate of each energy over :func:`step_seconds`."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The ledger after an update, and what happened to the registers."""

    ledger: resources.LedgerStatus
    problem: Problem | None = None
    message: str = ""
    """What the register check found, in words (empty when all was well)."""
    replaced: bool = False
    reset: bool = False
    added_kwh: Mapping[tuple[Energy, resources.LedgerSource], float] = dataclasses.field(
        default_factory=dict
    )
    """Energy added to the ledger in this update, by energy and by metered or estimated."""
    added_seconds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Seconds added to ``dumped_while_wanted`` and ``below_min_supply_temp``."""


# --- arithmetic -------------------------------------------------------------------------------


def ere(it_kwh: float, reused_kwh: float, pue: float = 1.0) -> float | None:
    """Energy Reuse Effectiveness, ``(it_kwh * pue - reused_kwh) / it_kwh``; None without IT
    energy. 0 reuses every kWh the facility drew; ``pue`` is no reuse at all."""
    if it_kwh <= 0:
        return None
    return (it_kwh * pue - reused_kwh) / it_kwh


def fuel_avoided_kwh(delivered_kwh: float, efficiency: float) -> float:
    """Fuel the backup did not burn for ``delivered_kwh`` of heat, kWh."""
    if efficiency <= 0:
        raise ValueError(f"efficiency must be positive, got {efficiency}")
    return max(delivered_kwh, 0.0) / efficiency


def co2_avoided_kg(fuel_kwh: float, emission_factor_kg_per_kwh: float) -> float:
    """CO2 not emitted for ``fuel_kwh`` not burnt, kg."""
    return max(fuel_kwh, 0.0) * emission_factor_kg_per_kwh


# --- periods ----------------------------------------------------------------------------------


def _utc(t_s: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t_s, tz=datetime.UTC)


def period_bounds(
    now_s: float, kind: resources.LedgerPeriodKind
) -> tuple[datetime.datetime, datetime.datetime]:
    """The UTC period holding ``now_s``: a day from midnight, a week from Monday, a month
    from the 1st."""
    now = _utc(now_s)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind is resources.LedgerPeriodKind.DAY:
        return midnight, midnight + datetime.timedelta(days=1)
    if kind is resources.LedgerPeriodKind.WEEK:
        start = midnight - datetime.timedelta(days=now.weekday())
        return start, start + datetime.timedelta(days=7)
    start = midnight.replace(day=1)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + datetime.timedelta(days=days)


# --- the update -------------------------------------------------------------------------------


def step_seconds(old: resources.LedgerStatus | None, now_s: float, max_step_s: float) -> float:
    """The interval an update at ``now_s`` estimates: since the last update, at most
    ``max_step_s``; 0 for a new ledger or a clock that went back."""
    if old is None:
        return 0.0
    return min(max(now_s - old.updated_at.timestamp(), 0.0), max_step_s)


def _register(regs: readings.Registers | resources.MeterRegisters, e: Energy) -> float | None:
    value: float | None = getattr(regs, f"{e.value}_kwh")
    return value


def _metered(q: resources.LedgerQuantity, register: float | None) -> float:
    if q.register_start_kwh is None or register is None:
        return q.carried_kwh
    return q.carried_kwh + max(register - q.register_start_kwh, 0.0)


def _source(metered: float, estimated: float, tracked: bool) -> resources.LedgerSource:
    if estimated > 0 and (metered > 0 or tracked):
        return resources.LedgerSource.MIXED
    if estimated > 0:
        return resources.LedgerSource.ESTIMATED
    if tracked or metered > 0:
        return resources.LedgerSource.METERED
    return resources.LedgerSource.NONE


def _quantity(
    q: resources.LedgerQuantity,
    *,
    register: float | None,
    start: float | None,
    carried: float,
    estimated: float,
) -> resources.LedgerQuantity:
    base = q.model_copy(
        update={"register_start_kwh": start, "carried_kwh": carried, "estimated_kwh": estimated}
    )
    metered = _metered(base, register)
    return base.model_copy(
        update={
            "metered_kwh": metered,
            "kwh": metered + estimated,
            "source": _source(metered, estimated, start is not None),
        }
    )


def figures(period: resources.LedgerPeriod, settings: Settings) -> resources.LedgerPeriod:
    """``period`` with ERE, fuel and CO2 avoided computed from its energies."""
    fuel = fuel_avoided_kwh(period.heat_delivered.kwh, settings.backup_efficiency)
    return period.model_copy(
        update={
            "ere": ere(period.it_energy.kwh, period.heat_delivered.kwh, settings.pue),
            "fuel_avoided_kwh": fuel,
            "co2_avoided_kg": co2_avoided_kg(fuel, settings.emission_factor_kg_per_kwh),
        }
    )


def _new_period(
    bounds_: tuple[datetime.datetime, datetime.datetime],
    meter: resources.MeterRegisters | None,
    settings: Settings,
) -> resources.LedgerPeriod:
    """An empty period; its metered stretches start at the last accepted registers."""
    quantities = {
        e.value: resources.LedgerQuantity.model_validate(
            {"registerStartKWh": None if meter is None else _register(meter, e)}
        )
        for e in Energy
    }
    return resources.LedgerPeriod.model_validate(
        {
            "start": bounds_[0],
            "end": bounds_[1],
            "meterId": None if meter is None else meter.meter_id,
            "hoursBelowMinSupplyTemp": 0.0 if settings.min_supply_temp_c is not None else None,
            **{resources.LedgerPeriod.model_fields[k].alias or k: v for k, v in quantities.items()},
        }
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterCheck:
    """What :func:`check_registers` found."""

    problem: Problem | None = None
    message: str = ""
    replaced: bool = False
    reset: tuple[Energy, ...] = ()
    fresh: bool = True
    """False when the registers are no newer than the last accepted ones."""


def check_registers(
    last: resources.MeterRegisters | None, new: readings.Registers, settings: Settings
) -> RegisterCheck:
    """How ``new`` moved since ``last``: see the module docstring."""
    if last is None:
        return RegisterCheck()
    if new.meter_id != last.meter_id:
        return RegisterCheck(replaced=True)
    elapsed_h = (new.observed_at_s - last.observed_at.timestamp()) / SECONDS_PER_HOUR
    if elapsed_h <= 0:
        return RegisterCheck(fresh=False)
    resets: list[Energy] = []
    for e in Energy:
        before, now = _register(last, e), _register(new, e)
        if before is None or now is None:
            continue
        most = settings.max_kw[e] * elapsed_h * JUMP_TOLERANCE + JUMP_SLACK_KWH
        label = e.value.replace("_", " ")
        if now < before:
            if now <= most:
                resets.append(e)
                continue
            return RegisterCheck(
                Problem.BACKWARDS,
                f"{label} register went backwards from {before:.3f} to {now:.3f} kWh "
                "(not a reset to 0, and the meter id did not change)",
            )
        if now - before > most:
            return RegisterCheck(
                Problem.JUMP,
                f"{label} register rose {now - before:.3f} kWh in {elapsed_h * 60:.1f} min, "
                f"more than the site can make ({most:.3f} kWh at "
                f"{settings.max_kw[e]:.1f} kW)",
            )
    return RegisterCheck(reset=tuple(resets))


def _meter_status(regs: readings.Registers) -> resources.MeterRegisters:
    return resources.MeterRegisters.model_validate(
        {
            "meterId": regs.meter_id,
            "observedAt": _utc(regs.observed_at_s),
            "itEnergyKWh": regs.it_energy_kwh,
            "heatDeliveredKWh": regs.heat_delivered_kwh,
            "heatDumpedKWh": regs.heat_dumped_kwh,
        }
    )


def advance(
    old: resources.LedgerStatus | None, obs: Observation, settings: Settings, *, now_s: float
) -> Outcome:
    """The ledger brought up to ``now_s`` with ``obs``; see the module docstring."""
    bounds_ = period_bounds(now_s, settings.period)
    meter = old.meter if old is not None else None
    previous = old.previous if old is not None else None
    if old is None or old.period is not settings.period:
        # A new period length closes the running period early.
        previous = None if old is None else old.current
        current = _new_period(bounds_, meter, settings)
    elif old.current.start != bounds_[0]:
        # The first update of a new period closes the old one with the registers of its
        # last update: the energy of the interval between belongs to the new period.
        previous = old.current
        current = _new_period(bounds_, meter, settings)
    else:
        current = old.current
    step_s = step_seconds(old, now_s, settings.max_step_s)
    step_h = step_s / SECONDS_PER_HOUR

    reading = obs.reading
    regs = reading.registers if reading is not None else None
    check = RegisterCheck()
    if regs is not None:
        check = check_registers(meter, regs, settings)
    accepted = regs is not None and check.problem is None and check.fresh
    added: dict[tuple[Energy, resources.LedgerSource], float] = {}
    quantities: dict[str, resources.LedgerQuantity] = {}
    for e in Energy:
        q: resources.LedgerQuantity = getattr(current, e.value)
        start, carried, estimated = q.register_start_kwh, q.carried_kwh, q.estimated_kwh
        last_value = _register(meter, e) if meter is not None else None
        value = last_value
        if accepted:
            assert regs is not None
            value = _register(regs, e)
            if value is None:
                # The register is gone: what it counted so far stays counted.
                carried, start = _metered(q, last_value), None
            elif check.replaced or start is None:
                carried, start = _metered(q, last_value), value
            elif e in check.reset:
                carried, start = _metered(q, last_value), 0.0
        metered_before = q.metered_kwh
        # Estimate only what no register counts: a register that was not read this cycle
        # catches up when it is, and a replacement leaves this interval unmetered.
        if q.register_start_kwh is None or (accepted and check.replaced):
            estimate = max(obs.estimate_kwh.get(e, 0.0), 0.0)
            estimated += estimate
            if estimate > 0:
                added[(e, resources.LedgerSource.ESTIMATED)] = estimate
        new_q = _quantity(q, register=value, start=start, carried=carried, estimated=estimated)
        if new_q.metered_kwh > metered_before:
            added[(e, resources.LedgerSource.METERED)] = new_q.metered_kwh - metered_before
        quantities[e.value] = new_q

    seconds: dict[str, float] = {}
    update: dict[str, object] = dict(quantities)
    if reading is not None and step_s > 0:
        dumped = sum(v for (e, _), v in added.items() if e is Energy.DUMPED)
        if dumped > DUMP_EPS_KWH and reading.demand_kw > 0:
            update["hours_dumped_while_wanted"] = current.hours_dumped_while_wanted + step_h
            seconds["dumped_while_wanted"] = step_s
        low = settings.min_supply_temp_c
        if low is not None and reading.supply_temp_c is not None and reading.supply_temp_c < low:
            update["hours_below_min_supply_temp"] = (
                current.hours_below_min_supply_temp or 0.0
            ) + step_h
            seconds["below_min_supply_temp"] = step_s
    if accepted and check.replaced:
        assert regs is not None
        update["meter_id"] = regs.meter_id
    elif accepted and current.meter_id is None and regs is not None:
        update["meter_id"] = regs.meter_id
    current = figures(current.model_copy(update=update), settings)
    if accepted:
        assert regs is not None
        meter = _meter_status(regs)
    ledger = resources.LedgerStatus.model_validate(
        {
            "period": settings.period,
            "updatedAt": _utc(now_s),
            "meter": meter,
            "current": current,
            "previous": previous,
        }
    )
    return Outcome(
        ledger=ledger,
        problem=check.problem,
        message=check.message,
        replaced=accepted and check.replaced,
        reset=accepted and bool(check.reset),
        added_kwh=added,
        added_seconds=seconds,
    )
