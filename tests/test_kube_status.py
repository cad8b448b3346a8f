"""Conditions and heat estimates for status."""

from __future__ import annotations

import pytest

import kube_fixtures as kf
from heatshift import model, resources
from heatshift.kube import status
from heatshift.metering import readings


def _set(
    conditions: tuple[resources.Condition, ...], ok: bool, now: float, message: str = "m"
) -> tuple[resources.Condition, ...]:
    return status.set_condition(
        conditions, type_="MeteringFresh", ok=ok, reason="R", message=message, now_s=now
    )


def test_the_transition_time_moves_only_when_the_status_changes() -> None:
    first = _set((), True, kf.NOW)
    same = _set(first, True, kf.NOW + 60, message="still fine")
    flipped = _set(same, False, kf.NOW + 120)

    assert same[0].last_transition_time == first[0].last_transition_time
    assert same[0].message == "still fine"
    assert flipped[0].status is resources.ConditionStatus.FALSE
    assert flipped[0].last_transition_time.timestamp() == kf.NOW + 120


def test_conditions_of_other_types_are_kept() -> None:
    ready = status.set_condition(
        (), type_="Ready", ok=True, reason="Valid", message="", now_s=kf.NOW
    )
    both = _set(ready, True, kf.NOW)
    assert [c.type for c in both] == ["Ready", "MeteringFresh"]
    invalid = status.invalid_status(both, "spec is wrong", kf.NOW, 3)
    ready_now = next(c for c in invalid if c.type == "Ready")
    assert (ready_now.status, ready_now.reason, ready_now.observed_generation) == (
        resources.ConditionStatus.FALSE,
        "InvalidSpec",
        3,
    )


def _site(tank_kwh: float = 80.0) -> model.Site:
    return kf.parsed_site(kf.leafsite("pool", tank_kwh=tank_kwh)).to_site(model.Resources(cpu=16))


def _reading(demand_kw: float, tank_kwh: float) -> readings.SiteReading:
    return readings.SiteReading(
        site="pool",
        observed_at_s=kf.NOW,
        demand_kw=demand_kw,
        tank_energy_kwh=tank_kwh,
        tank_capacity_kwh=80.0,
        tank_source="energy",
    )


@pytest.mark.parametrize(
    ("demand_kw", "tank_kwh", "delivered", "dumped"),
    [
        (100.0, 0.0, 8.5, 0.0),  # all wanted
        (0.0, 0.0, 0.0, 0.0),  # nothing wanted: the tank takes it
        (0.0, 78.0, 0.0, 6.5),  # nothing wanted, 2 kWh room left
        (4.0, 80.0, 4.0, 4.5),  # half wanted, tank full
    ],
)
def test_heat_step(demand_kw: float, tank_kwh: float, delivered: float, dumped: float) -> None:
    # 10 kW of IT load for one hour at 85 % recovery: 8.5 kWh of heat
    got = status.heat_step(_site(), _reading(demand_kw, tank_kwh), 10.0, 3600.0)
    assert got == pytest.approx((delivered, dumped))


def test_no_reading_no_estimate() -> None:
    rejection = readings.Rejection(site="pool", kind=readings.RejectionKind.NAN, message="NaN")
    assert status.heat_step(_site(), rejection, 10.0, 3600.0) == (0.0, 0.0)


def _with_registers(t_s: float, delivered: float, meter: str) -> readings.SiteReading:
    return readings.SiteReading(
        site="s",
        observed_at_s=t_s,
        demand_kw=5.0,
        tank_energy_kwh=1.0,
        tank_capacity_kwh=10.0,
        tank_source="energy",
        registers=readings.Registers(
            meter_id=meter, observed_at_s=t_s, heat_delivered_kwh=delivered
        ),
    )


@pytest.mark.parametrize(
    ("second", "reason", "ok"),
    [
        ((300.0, 101.0, "m-1"), "RegistersCounted", True),
        ((300.0, 0.5, "m-1"), "CounterReset", True),
        ((300.0, 3.0, "m-2"), "MeterReplaced", True),
        ((300.0, 50.0, "m-1"), "RegisterBackwards", False),
        ((300.0, 400.0, "m-1"), "RegisterJump", False),
    ],
)
def test_the_meter_registers_condition_says_what_the_ledger_did(
    second: tuple[float, float, str], reason: str, ok: bool
) -> None:
    leafsite = resources.LeafSite.model_validate(kf.leafsite("s"))
    site = leafsite.spec.to_site("s", model.Resources(cpu=16, memory_gib=64))
    t0 = 1_767_225_600.0
    first = _with_registers(t0, 100.0, "m-1")
    outcome = status.update_ledger(
        leafsite, site, first, load_kw=1.0, previous=None, now_s=t0, max_step_s=600
    )
    written = status.leafsite_status(
        leafsite, site, first, load_kw=1.0, ledger_outcome=outcome, now_s=t0
    )
    leafsite = leafsite.model_copy(update={"status": written})
    dt, delivered, meter = second
    later = _with_registers(t0 + dt, delivered, meter)
    outcome = status.update_ledger(
        leafsite,
        site,
        later,
        load_kw=1.0,
        previous=written.ledger,
        now_s=t0 + dt,
        max_step_s=600,
    )
    after = status.leafsite_status(
        leafsite, site, later, load_kw=1.0, ledger_outcome=outcome, now_s=t0 + dt
    )
    (cond,) = [c for c in after.conditions if c.type == resources.CONDITION_METER_REGISTERS]
    assert (cond.reason, cond.status.value == "True") == (reason, ok)
    assert after.ledger is not None
    assert after.ledger.current.heat_delivered.metered_kwh >= 0.0


def test_a_site_status_is_due_when_it_says_something_new_or_an_interval_passed() -> None:
    writes = status.SiteStatusWrites()
    ready = {"type": "Ready", "status": "True", "reason": "Planned", "message": "in use"}
    first = {
        "itLoadKW": 0.3,
        "demandKW": 20.0,
        "ledger": {"updatedAt": "a"},
        "meteringAgeSeconds": 10.0,
        "conditions": [ready],
    }
    assert writes.due("flats", first, 1000.0, 60.0)
    writes.wrote("flats", first, 1000.0)
    running = {**first, "demandKW": 25.0, "ledger": {"updatedAt": "b"}, "meteringAgeSeconds": 4}
    assert not writes.due("flats", running, 1030.0, 60.0)
    assert writes.due("flats", running, 1054.0, 60.0)  # 0.9 of the interval
    assert writes.due("flats", {**running, "itLoadKW": 0.5}, 1001.0, 60.0)
    unready = {**ready, "status": "False", "reason": "InvalidSpec"}
    assert writes.due("flats", {**running, "conditions": [unready]}, 1001.0, 60.0)
    assert writes.due("pool", first, 1001.0, 60.0)  # never written by this process
