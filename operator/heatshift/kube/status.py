"""LeafSite and HeatPolicy status from a planning cycle. Pure: ``now_s`` is passed in.

- :func:`set_condition` keeps a condition list with one entry per type, moving
  ``lastTransitionTime`` only when the status really changes (so ``kubectl`` shows since when).
- :func:`heat_step` estimates the heat a site delivered and dumped over the last interval from
  its IT load and its latest reading, with the simulator's physics
  (:func:`heatshift.thermal.exchange_heat`): served up to demand, stored while the tank has
  room, dumped beyond. Without a valid reading nothing is counted: it would be a guess.
- :func:`update_ledger` brings the site's heat ledger (:mod:`heatshift.ledger`) up to date
  from the reading's meter registers, with :func:`heat_step` and the IT load as the estimates
  where the meter has no register.
- :func:`leafsite_status` and :func:`policy_status` build the validated status models.
- :class:`SiteStatusWrites` decides whether a LeafSite's new status is worth a write: several
  policies plan the same site, and its ledger's running figures change every cycle.

Called by :mod:`heatshift.kube.cycle`; the results are written to the ``status`` subresource.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence

from heatshift import ledger, model, resources, thermal
from heatshift.metering import readings

Result = readings.SiteReading | readings.Rejection


def _when(now_s: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(now_s, tz=datetime.UTC).replace(microsecond=0)


def set_condition(
    conditions: Sequence[resources.Condition],
    *,
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    now_s: float,
    generation: int | None = None,
) -> tuple[resources.Condition, ...]:
    """``conditions`` with the condition of ``type_`` set; other types are kept as they are."""
    status = resources.ConditionStatus.TRUE if ok else resources.ConditionStatus.FALSE
    previous = next((c for c in conditions if c.type == type_), None)
    since = (
        previous.last_transition_time
        if previous is not None and previous.status == status
        else _when(now_s)
    )
    new = resources.Condition.model_validate(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": since,
            "observedGeneration": generation,
        }
    )
    return (*(c for c in conditions if c.type != type_), new)


def _ready(
    conditions: Sequence[resources.Condition],
    reason: str,
    message: str,
    now_s: float,
    generation: int | None,
    *,
    ok: bool = True,
) -> tuple[resources.Condition, ...]:
    return set_condition(
        conditions,
        type_=resources.CONDITION_READY,
        ok=ok,
        reason=reason,
        message=message,
        now_s=now_s,
        generation=generation,
    )


def it_load_kw(site: model.Site, running: Sequence[model.RunningJob]) -> float:
    """The site's electrical load: idle plus its running jobs, kW."""
    watts = site.power.idle_watts + sum(j.power_watts for j in running if j.site == site.name)
    return watts / 1000.0


def heat_step(
    site: model.Site, result: Result, load_kw: float, interval_s: float
) -> tuple[float, float]:
    """(delivered kWh, dumped kWh) over ``interval_s`` at the current load; see module doc."""
    if isinstance(result, readings.Rejection) or interval_s <= 0:
        return 0.0, 0.0
    hours = interval_s / 3600.0
    # Only heat recovered in this interval counts: served at once up to demand, stored while
    # the tank has room, dumped beyond. Heat the tank hands out later was counted when made.
    room = model.Tank(capacity_kwh=max(site.tank.capacity_kwh - result.tank_energy_kwh, 0.0))
    flows = thermal.exchange_heat(
        room,
        0.0,
        thermal.recovered_heat_kw(site, load_kw * 1000.0) * hours,
        thermal.capped_demand_kw(site, result.demand_kw) * hours,
        hours,
    )
    return flows.delivered_kwh, flows.dumped_kwh


def newest_ledger(
    leafsite: resources.LeafSite, remembered: resources.LedgerStatus | None
) -> resources.LedgerStatus | None:
    """The more recent of the ledger in the LeafSite's status and the one this process last
    wrote (status read by the cycle may predate another policy's write of the same site)."""
    stored = leafsite.status.ledger if leafsite.status is not None else None
    if remembered is None:
        return stored
    if stored is None or remembered.updated_at >= stored.updated_at:
        return remembered
    return stored


def update_ledger(
    leafsite: resources.LeafSite,
    site: model.Site,
    result: Result,
    *,
    load_kw: float,
    previous: resources.LedgerStatus | None,
    now_s: float,
    max_step_s: float,
) -> ledger.Outcome:
    """The site's ledger brought up to ``now_s``: metered from the reading's registers,
    estimated (IT energy from the load, heat from :func:`heat_step`) where it has none."""
    settings = ledger.Settings.for_site(leafsite.spec, site, max_step_s=max_step_s, load_kw=load_kw)
    step_s = ledger.step_seconds(previous, now_s, max_step_s)
    delivered, dumped = heat_step(site, result, load_kw, step_s)
    estimate = {
        ledger.Energy.IT: load_kw * step_s / 3600.0,
        ledger.Energy.DELIVERED: delivered,
        ledger.Energy.DUMPED: dumped,
    }
    reading = result if isinstance(result, readings.SiteReading) else None
    return ledger.advance(previous, ledger.Observation(reading, estimate), settings, now_s=now_s)


def _register_condition(
    conditions: tuple[resources.Condition, ...],
    result: Result,
    outcome: ledger.Outcome,
    now_s: float,
    generation: int | None,
) -> tuple[resources.Condition, ...]:
    """``MeterRegistersValid``: whether the meter's registers were counted, and if not why
    (absent for a meter that never reported registers)."""
    if isinstance(result, readings.Rejection):
        return conditions  # nothing was learnt about the registers
    ok, reason, message = True, "RegistersCounted", "the meter's registers were counted"
    rejected = result.registers_rejection
    if rejected is not None:
        ok, reason = False, rejected.condition_reason.replace("Reading", "Register")
        message = f"{rejected.message}; this reading's registers are not counted"
    elif outcome.problem is ledger.Problem.BACKWARDS:
        ok, reason = False, "RegisterBackwards"
        message = f"{outcome.message}; the ledger keeps counting from the last good registers"
    elif outcome.problem is ledger.Problem.JUMP:
        ok, reason = False, "RegisterJump"
        message = f"{outcome.message}; the ledger keeps counting from the last good registers"
    elif result.registers is None:
        if not any(c.type == resources.CONDITION_METER_REGISTERS for c in conditions):
            return conditions  # a meter that never had registers: the ledger says estimated
        ok, reason = False, "NoRegisters"
        message = "the meter reports no registers: the ledger is estimated"
    elif outcome.replaced:
        reason, message = "MeterReplaced", "a new meter id: its registers start a new count"
    elif outcome.reset:
        reason, message = "CounterReset", "a register restarted from 0: counted from the reset"
    return set_condition(
        conditions,
        type_=resources.CONDITION_METER_REGISTERS,
        ok=ok,
        reason=reason,
        message=message,
        now_s=now_s,
        generation=generation,
    )


def leafsite_status(
    leafsite: resources.LeafSite,
    site: model.Site,
    result: Result,
    *,
    load_kw: float,
    ledger_outcome: ledger.Outcome,
    now_s: float,
) -> resources.LeafSiteStatus:
    """The site's status after a cycle: readings, load, the ledger and conditions."""
    old = leafsite.status or resources.LeafSiteStatus()
    gen = leafsite.metadata.generation
    conditions = _ready(old.conditions, "Planned", "the site is valid and in use", now_s, gen)
    conditions = _register_condition(conditions, result, ledger_outcome, now_s, gen)
    current = ledger_outcome.ledger.current
    fields: dict[str, object] = {
        "itLoadKW": round(load_kw, 3),
        "heatDeliveredKWh": round(current.heat_delivered.kwh, 3),
        "heatDumpedKWh": round(current.heat_dumped.kwh, 3),
        "ledger": ledger_outcome.ledger,
    }
    if isinstance(result, readings.Rejection):
        conditions = set_condition(
            conditions,
            type_=resources.CONDITION_METERING_FRESH,
            ok=False,
            reason=result.condition_reason,
            message=f"{result.message}; the site is planned as heat-unaware until good data "
            "returns",
            now_s=now_s,
            generation=gen,
        )
        fields["heatAware"] = False
        # Keep the last good reading visible, with its (growing) age.
        if old.metering_observed_at is not None:
            fields["meteringObservedAt"] = old.metering_observed_at
            age = now_s - old.metering_observed_at.timestamp()
            fields["meteringAgeSeconds"] = round(max(age, 0.0), 1)
        for key, value in (
            ("demandKW", old.demand_kw),
            ("tankEnergyKWh", old.tank_energy_kwh),
            ("tankPercent", old.tank_percent),
            ("supplyTempC", old.supply_temp_c),
            ("returnTempC", old.return_temp_c),
        ):
            if value is not None:
                fields[key] = value
    else:
        conditions = set_condition(
            conditions,
            type_=resources.CONDITION_METERING_FRESH,
            ok=True,
            reason="ReadingValid",
            message="the last reading was valid and fresh",
            now_s=now_s,
            generation=gen,
        )
        capacity = site.tank.capacity_kwh
        tank = min(result.tank_energy_kwh, capacity)
        fields.update(
            {
                "heatAware": True,
                "demandKW": round(thermal.capped_demand_kw(site, result.demand_kw), 3),
                "tankEnergyKWh": round(tank, 3),
                "tankPercent": round(100.0 * tank / capacity, 1) if capacity > 0 else 0.0,
                "meteringObservedAt": datetime.datetime.fromtimestamp(
                    result.observed_at_s, tz=datetime.UTC
                ),
                "meteringAgeSeconds": round(max(now_s - result.observed_at_s, 0.0), 1),
                "supplyTempC": result.supply_temp_c,
                "returnTempC": result.return_temp_c,
            }
        )
    fields["conditions"] = conditions
    return resources.LeafSiteStatus.model_validate(fields)


def invalid_status(
    old_conditions: Sequence[resources.Condition],
    message: str,
    now_s: float,
    generation: int | None,
) -> tuple[resources.Condition, ...]:
    """Conditions of an object whose spec cannot be used: Ready=False, InvalidSpec."""
    return _ready(old_conditions, "InvalidSpec", message, now_s, generation, ok=False)


def policy_status(
    policy: resources.HeatPolicy,
    plan: model.Plan | None,
    *,
    held: int,
    released_total: int,
    deadline_forced_total: int,
    planned_ok: bool,
    message: str,
    now_s: float,
    kueue_waiting: int | None = None,
) -> resources.HeatPolicyStatus:
    """The policy's status after a cycle (``plan`` None when planning could not run);
    ``kueue_waiting`` None leaves the Kueue count out (no admission check runs)."""
    old = policy.status or resources.HeatPolicyStatus()
    gen = policy.metadata.generation
    conditions = _ready(old.conditions, "Valid", "the policy is valid and planning", now_s, gen)
    conditions = set_condition(
        conditions,
        type_=resources.CONDITION_PLANNED,
        ok=planned_ok,
        reason=(plan.status.value.capitalize() if plan is not None else "PlanningFailed"),
        message=message,
        now_s=now_s,
        generation=gen,
    )
    fields: dict[str, object] = {
        "held": held,
        "released": released_total,
        "deadlineForcedReleases": deadline_forced_total,
        "conditions": conditions,
    }
    if kueue_waiting is not None:
        fields["kueueWaiting"] = kueue_waiting
    if plan is not None:
        fields.update(
            {
                "expectedUsefulHeatKWh": round(max(plan.expected_useful_heat_kwh, 0.0), 3),
                "lastPlanTime": _when(now_s),
                "solverStatus": plan.status,
                "solverSeconds": round(max(plan.solve_seconds, 0.0), 3),
            }
        )
    return resources.HeatPolicyStatus.model_validate(fields)


@dataclasses.dataclass
class SiteStatusWrites:
    """The LeafSite statuses this process last wrote (when, and the body), so that a site is
    written at once when what its status says changes (a condition's status or reason, heat
    awareness, its IT load), and otherwise, for its running figures (readings, the ledger),
    once per planning interval however many policies plan it. The ledger keeps counting in
    memory between writes (:attr:`heatshift.kube.cycle.Memory.ledgers`); a crash costs at
    most one interval of estimated figures, as before, and metered registers cost nothing."""

    last: dict[str, tuple[float, tuple[object, ...]]] = dataclasses.field(default_factory=dict)
    """Per site: when its status was last written, and what that status said."""

    @staticmethod
    def _what_it_says(body: Mapping[str, object]) -> tuple[object, ...]:
        conditions = body.get("conditions")
        return (
            body.get("heatAware"),
            body.get("itLoadKW"),
            sorted(
                (str(c.get("type")), str(c.get("status")), str(c.get("reason")))
                for c in (conditions if isinstance(conditions, list) else [])
                if isinstance(c, dict)
            ),
        )

    def due(self, site: str, body: Mapping[str, object], now_s: float, interval_s: float) -> bool:
        """Whether ``body`` (the status to write) should be written now."""
        previous = self.last.get(site)
        if previous is None:
            return True
        at, said = previous
        # 0.9: a policy's own cycles come a little over one interval apart; it must not
        # skip every other one of them.
        return said != self._what_it_says(body) or now_s - at >= 0.9 * interval_s

    def wrote(self, site: str, body: Mapping[str, object], now_s: float) -> None:
        self.last[site] = (now_s, self._what_it_says(body))
