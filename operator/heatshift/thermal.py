"""Thermal physics: the buffer tank's energy balance and demand forecasting.

Pure functions, called by the planner (to value a plan), the simulator (to play it
out) and the operator's status estimates. The balance per site and slot is::

    E[t+1] = E[t] - loss + (Q - H - D) * dt        0 <= E <= capacity
    loss   = E[t] * (1 - (1 - lambda) ** hours)     (standing loss, compounding per hour)

with recovered heat ``Q = eta * P``, delivered heat ``0 <= H <= demand`` and dumped
heat ``D >= 0`` (the dry cooler takes whatever the tank cannot). Energy is conserved
exactly: ``recovered = delivered + dumped + (E_after - E_before) + loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from heatshift import model

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class HeatFlows:
    """Where one slot's heat went, in kWh, and the tank's energy after it."""

    recovered_kwh: float
    delivered_kwh: float
    dumped_kwh: float
    loss_kwh: float
    energy_after_kwh: float


def recovered_heat_kw(site: model.Site, it_power_watts: float) -> float:
    """Heat the exchanger recovers from ``it_power_watts`` of IT load, kW."""
    return site.heat_recovery_efficiency * it_power_watts / 1000.0


def standing_loss_kwh(tank: model.Tank, energy_kwh: float, hours: float) -> float:
    """Energy the tank loses to its surroundings over ``hours``."""
    return energy_kwh * (1.0 - math.pow(1.0 - tank.loss_per_hour, hours))


def exchange_heat(
    tank: model.Tank,
    energy_kwh: float,
    recovered_kwh: float,
    demand_kwh: float,
    hours: float,
) -> HeatFlows:
    """Play one slot: serve the offtaker first, store the rest, dump what does not fit.

    Serving demand before storing is optimal for a fixed load: heat kept in the tank
    can only be delivered later, minus standing loss.
    """
    loss = standing_loss_kwh(tank, energy_kwh, hours)
    available = energy_kwh - loss + recovered_kwh
    delivered = min(max(demand_kwh, 0.0), available)
    remaining = available - delivered
    energy_after = min(remaining, tank.capacity_kwh)
    dumped = remaining - energy_after
    return HeatFlows(
        recovered_kwh=recovered_kwh,
        delivered_kwh=delivered,
        dumped_kwh=dumped,
        loss_kwh=loss,
        energy_after_kwh=energy_after,
    )


def capped_demand_kw(site: model.Site, demand_kw: float) -> float:
    """The demand the site can actually serve: never above the offtaker's rating."""
    if not math.isfinite(demand_kw):
        return 0.0
    return min(max(demand_kw, 0.0), site.offtaker.max_thermal_kw)


def forecast_demand(
    history: model.DemandSeries | None,
    current_kw: float,
    start_s: float,
    step_s: float,
    steps: int,
    days: int = 3,
    persistence_s: float = 3 * 3600.0,
) -> model.DemandSeries:
    """Seasonal-naive forecast corrected by the latest reading.

    The base is the mean of the same time of day over the last ``days`` (or, with less
    than a day of history, the mean of all of it: better than holding one reading for a
    day). Today's deviation from that base (the current reading minus the base now)
    carries on and fades with time constant ``persistence_s``. Sees only the past:
    samples at or after ``start_s`` are never used.
    """
    seen_until = min(history.end_s, start_s) if history is not None else start_s
    usable = history is not None and history.kw and seen_until > history.start_s

    def seasonal(t: float) -> float | None:
        if not usable or history is None:
            return None
        samples = [
            history.mean_over(past, min(past + step_s, seen_until))
            for d in range(1, days + 1)
            if history.start_s <= (past := t - d * SECONDS_PER_DAY) < seen_until
        ]
        return sum(samples) / len(samples) if samples else None

    overall = history.mean_over(history.start_s, seen_until) if usable and history else None
    base_now = seasonal(start_s)
    if base_now is None:
        base_now = overall if overall is not None else current_kw
    deviation = current_kw - base_now
    values: list[float] = []
    for i in range(steps):
        t = start_s + i * step_s
        base = seasonal(t)
        if base is None:
            base = overall if overall is not None else current_kw
        values.append(max(0.0, base + deviation * math.exp(-(t - start_s) / persistence_s)))
    return model.DemandSeries(start_s=start_s, step_s=step_s, kw=tuple(values))
