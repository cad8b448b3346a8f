"""The heat ledger: arithmetic with worked numbers, counter deltas, periods, restarts."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heatshift import ledger, model, resources
from heatshift.metering import readings

T0 = datetime.datetime(2026, 1, 10, 12, 0, tzinfo=datetime.UTC).timestamp()
"""Noon on a Saturday in the middle of January."""

SETTINGS = ledger.Settings(
    period=resources.LedgerPeriodKind.MONTH,
    pue=1.0,
    backup_efficiency=0.9,
    emission_factor_kg_per_kwh=0.2,
    max_kw={ledger.Energy.IT: 50.0, ledger.Energy.DELIVERED: 40.0, ledger.Energy.DUMPED: 50.0},
    min_supply_temp_c=45.0,
    max_step_s=600.0,
)
NO_ESTIMATE: dict[ledger.Energy, float] = {}


def reading(
    t_s: float,
    delivered: float | None = None,
    *,
    it: float | None = None,
    dumped: float | None = None,
    meter: str | None = "m-1",
    demand_kw: float = 10.0,
    supply_c: float | None = 50.0,
) -> readings.SiteReading:
    regs = None
    if delivered is not None:
        regs = readings.Registers(
            meter_id=meter,
            observed_at_s=t_s,
            heat_delivered_kwh=delivered,
            it_energy_kwh=it,
            heat_dumped_kwh=dumped,
        )
    return readings.SiteReading(
        site="pool",
        observed_at_s=t_s,
        demand_kw=demand_kw,
        tank_energy_kwh=10.0,
        tank_capacity_kwh=50.0,
        tank_source="energy",
        supply_temp_c=supply_c,
        registers=regs,
    )


def run(
    steps: list[tuple[float, readings.SiteReading | None, dict[ledger.Energy, float]]],
    settings: ledger.Settings = SETTINGS,
    start: resources.LedgerStatus | None = None,
) -> ledger.Outcome:
    state = start
    out: ledger.Outcome | None = None
    for t_s, r, estimate in steps:
        out = ledger.advance(state, ledger.Observation(r, estimate), settings, now_s=t_s)
        state = out.ledger
    assert out is not None
    return out


# --- arithmetic ---------------------------------------------------------------------------------


def test_ere_of_100_kwh_it_with_80_kwh_reused_is_0_2() -> None:
    assert ledger.ere(100.0, 80.0) == pytest.approx(0.2)


def test_ere_of_100_kwh_it_at_pue_1_2_with_85_kwh_reused_is_0_35() -> None:
    assert ledger.ere(100.0, 85.0, pue=1.2) == pytest.approx(0.35)


def test_ere_without_reuse_is_the_pue_and_without_it_energy_is_none() -> None:
    assert ledger.ere(100.0, 0.0, pue=1.5) == pytest.approx(1.5)
    assert ledger.ere(0.0, 10.0) is None


def test_90_kwh_delivered_against_a_0_9_gas_boiler_avoids_100_kwh_of_gas_and_20_2_kg_co2() -> None:
    fuel = ledger.fuel_avoided_kwh(90.0, model.BACKUP_EFFICIENCY[model.BackupKind.GAS])
    assert fuel == pytest.approx(100.0)
    co2 = ledger.co2_avoided_kg(fuel, model.EMISSION_FACTOR_KG_PER_KWH[model.BackupKind.GAS])
    assert co2 == pytest.approx(20.2)


def test_85_kwh_delivered_against_an_oil_boiler_avoids_100_kwh_of_oil_and_26_7_kg_co2() -> None:
    backup = resources.BackupSpec(kind=model.BackupKind.OIL)
    fuel = ledger.fuel_avoided_kwh(85.0, backup.effective_efficiency)
    assert fuel == pytest.approx(100.0)
    assert ledger.co2_avoided_kg(fuel, backup.effective_emission_factor) == pytest.approx(26.7)


def test_a_heat_pump_with_cop_3_avoids_a_third_of_the_heat_in_electricity() -> None:
    backup = resources.BackupSpec.model_validate({"kind": "electric", "efficiency": 3.0})
    assert ledger.fuel_avoided_kwh(300.0, backup.effective_efficiency) == pytest.approx(100.0)


def test_every_backup_kind_has_a_default_efficiency_and_emission_factor() -> None:
    for kind in model.BackupKind:
        assert 0 < model.BACKUP_EFFICIENCY[kind] <= 1
        assert 0 < model.EMISSION_FACTOR_KG_PER_KWH[kind] < 1


# --- counter deltas -----------------------------------------------------------------------------


def test_registers_from_100_to_130_kwh_delivered_meter_30_kwh() -> None:
    out = run([(T0, reading(T0, 100.0), {}), (T0 + 3600, reading(T0 + 3600, 130.0), {})])
    q = out.ledger.current.heat_delivered
    assert (q.kwh, q.metered_kwh, q.estimated_kwh) == pytest.approx((30.0, 30.0, 0.0))
    assert q.source is resources.LedgerSource.METERED
    assert q.register_start_kwh == 100.0
    assert out.problem is None
    # 30 kWh against a 0.9 boiler: 33.3 kWh of fuel, 6.67 kg CO2 at 0.2 kg/kWh.
    assert out.ledger.current.fuel_avoided_kwh == pytest.approx(33.333, abs=1e-3)
    assert out.ledger.current.co2_avoided_kg == pytest.approx(6.667, abs=1e-3)


def test_a_3_hour_gap_in_readings_meters_the_whole_gap_from_the_registers() -> None:
    out = run([(T0, reading(T0, 100.0), {}), (T0 + 3 * 3600, reading(T0 + 3 * 3600, 190.0), {})])
    assert out.ledger.current.heat_delivered.metered_kwh == pytest.approx(90.0)
    assert out.problem is None


def test_a_reset_from_500_to_2_kwh_counts_the_2_kwh_since_the_reset() -> None:
    out = run(
        [
            (T0, reading(T0, 480.0), {}),
            (T0 + 1800, reading(T0 + 1800, 500.0), {}),
            (T0 + 3600, reading(T0 + 3600, 2.0), {}),
        ]
    )
    q = out.ledger.current.heat_delivered
    assert out.reset and out.problem is None
    assert q.metered_kwh == pytest.approx(22.0)  # 20 before the reset, 2 after
    assert (q.carried_kwh, q.register_start_kwh) == (pytest.approx(20.0), 0.0)


def test_a_register_from_500_back_to_450_kwh_is_backwards_and_rejected() -> None:
    out = run([(T0, reading(T0, 500.0), {}), (T0 + 600, reading(T0 + 600, 450.0), {})])
    assert out.problem is ledger.Problem.BACKWARDS
    assert "backwards from 500.000 to 450.000" in out.message
    assert out.ledger.current.heat_delivered.metered_kwh == 0.0
    assert out.ledger.meter is not None and out.ledger.meter.heat_delivered_kwh == 500.0
    # The next good reading counts from the last accepted one: no negative delta, ever.
    later = run([(T0 + 1200, reading(T0 + 1200, 505.0), {})], start=out.ledger)
    assert later.ledger.current.heat_delivered.metered_kwh == pytest.approx(5.0)


def test_45_kwh_in_an_hour_at_a_40_kw_offtaker_is_a_jump_and_rejected() -> None:
    out = run([(T0, reading(T0, 100.0), {}), (T0 + 3600, reading(T0 + 3600, 145.0), {})])
    assert out.problem is ledger.Problem.JUMP
    assert out.ledger.current.heat_delivered.metered_kwh == 0.0


def test_43_kwh_in_an_hour_at_a_40_kw_offtaker_is_within_the_10_percent_tolerance() -> None:
    out = run([(T0, reading(T0, 100.0), {}), (T0 + 3600, reading(T0 + 3600, 143.0), {})])
    assert out.problem is None
    assert out.ledger.current.heat_delivered.metered_kwh == pytest.approx(43.0)


def test_a_new_meter_id_starts_a_new_stretch_and_estimates_the_unmetered_interval() -> None:
    out = run(
        [
            (T0, reading(T0, 1000.0), {}),
            (T0 + 600, reading(T0 + 600, 1005.0), {}),
            (
                T0 + 1200,
                reading(T0 + 1200, 3.0, meter="m-2"),
                {ledger.Energy.DELIVERED: 4.0},
            ),
            (T0 + 1800, reading(T0 + 1800, 8.0, meter="m-2"), {}),
        ]
    )
    q = out.ledger.current.heat_delivered
    assert q.metered_kwh == pytest.approx(10.0)  # 5 on the old meter, 5 on the new one
    assert q.estimated_kwh == pytest.approx(4.0)  # the replacement's interval
    assert q.source is resources.LedgerSource.MIXED
    assert out.ledger.current.meter_id == "m-2"


def test_registers_no_newer_than_the_last_accepted_add_nothing() -> None:
    out = run([(T0, reading(T0, 100.0), {}), (T0 + 600, reading(T0, 100.0), {})])
    assert out.problem is None
    assert out.ledger.current.heat_delivered.metered_kwh == 0.0


def test_a_stale_register_read_time_is_rejected_by_validation() -> None:
    raw = {
        "siteId": "pool",
        "observedAt": readings.format_time(T0),
        "heatDemandKW": 5.0,
        "tank": {"energyKWh": 1.0},
        "offtakerAvailable": True,
        "registers": {"heatDeliveredKWh": 10.0, "observedAt": readings.format_time(T0 - 7200)},
    }
    r = readings.validate_reading(
        raw, now_s=T0, staleness_limit_s=600, max_thermal_kw=40, tank_capacity_kwh=50
    )
    assert isinstance(r, readings.SiteReading)
    assert r.registers is None
    assert r.registers_rejection is not None
    assert r.registers_rejection.kind is readings.RejectionKind.STALE


def test_a_negative_register_is_rejected_but_the_reading_is_still_used() -> None:
    raw = {
        "siteId": "pool",
        "observedAt": readings.format_time(T0),
        "heatDemandKW": 5.0,
        "tank": {"energyKWh": 1.0},
        "offtakerAvailable": True,
        "registers": {"heatDeliveredKWh": -1.0},
    }
    r = readings.validate_reading(
        raw, now_s=T0, staleness_limit_s=600, max_thermal_kw=40, tank_capacity_kwh=50
    )
    assert isinstance(r, readings.SiteReading) and r.demand_kw == 5.0
    assert r.registers_rejection is not None
    assert r.registers_rejection.kind is readings.RejectionKind.NEGATIVE


# --- estimated where there is no register ---------------------------------------------------------


def test_a_meter_without_an_it_register_gets_the_it_energy_estimated() -> None:
    est = {ledger.Energy.IT: 2.5, ledger.Energy.DELIVERED: 99.0}
    out = run(
        [
            (T0, reading(T0, 100.0), {}),
            (T0 + 600, reading(T0 + 600, 104.0), est),
            (T0 + 1200, reading(T0 + 1200, 108.0), est),
        ]
    )
    cur = out.ledger.current
    assert cur.it_energy.source is resources.LedgerSource.ESTIMATED
    assert cur.it_energy.kwh == pytest.approx(5.0)
    # The delivered register exists: the estimate of delivered heat is not used.
    assert cur.heat_delivered.kwh == pytest.approx(8.0)
    assert cur.heat_delivered.source is resources.LedgerSource.METERED
    # ERE of 5 kWh IT with 8 kWh reused (the tank gave back stored heat): (5 - 8) / 5.
    assert cur.ere == pytest.approx(-0.6)


def test_a_reading_that_was_rejected_adds_no_metered_heat_and_the_registers_catch_up() -> None:
    out = run(
        [
            (T0, reading(T0, 100.0), {}),
            (T0 + 600, None, {ledger.Energy.DELIVERED: 3.0}),
            (T0 + 1200, reading(T0 + 1200, 110.0), {}),
        ]
    )
    q = out.ledger.current.heat_delivered
    assert (q.metered_kwh, q.estimated_kwh) == pytest.approx((10.0, 0.0))


def test_hours_dumped_while_wanted_and_below_the_minimum_supply_temperature() -> None:
    out = run(
        [
            (T0, reading(T0, 0.0, dumped=0.0), {}),
            # 30 min dumping 2 kWh while demand is 10 kW, supply 40 °C below the 45 °C minimum.
            (T0 + 1800, reading(T0 + 1800, 5.0, dumped=2.0, supply_c=40.0), {}),
            # 30 min no dumping, supply fine.
            (T0 + 3600, reading(T0 + 3600, 10.0, dumped=2.0), {}),
        ],
        settings=dataclasses.replace(SETTINGS, max_step_s=3600.0),
    )
    cur = out.ledger.current
    assert cur.hours_dumped_while_wanted == pytest.approx(0.5)
    assert cur.hours_below_min_supply_temp == pytest.approx(0.5)
    assert cur.heat_dumped.kwh == pytest.approx(2.0)


# --- periods and restarts -------------------------------------------------------------------------


def test_periods_are_utc_day_monday_week_and_calendar_month() -> None:
    day = ledger.period_bounds(T0, resources.LedgerPeriodKind.DAY)
    week = ledger.period_bounds(T0, resources.LedgerPeriodKind.WEEK)
    month = ledger.period_bounds(T0, resources.LedgerPeriodKind.MONTH)
    assert [d.isoformat() for d in day] == [
        "2026-01-10T00:00:00+00:00",
        "2026-01-11T00:00:00+00:00",
    ]
    assert week[0].isoformat() == "2026-01-05T00:00:00+00:00"  # a Monday
    assert [d.day for d in month] == [1, 1] and month[1].month == 2


def test_a_new_month_closes_the_last_one_and_starts_from_its_last_registers() -> None:
    jan31 = datetime.datetime(2026, 1, 31, 23, 50, tzinfo=datetime.UTC).timestamp()
    out = run(
        [
            (jan31 - 600, reading(jan31 - 600, 200.0), {}),
            (jan31, reading(jan31, 205.0), {}),
            (jan31 + 1200, reading(jan31 + 1200, 212.0), {}),
        ]
    )
    assert out.ledger.previous is not None
    assert out.ledger.previous.start.month == 1
    assert out.ledger.previous.heat_delivered.metered_kwh == pytest.approx(5.0)
    assert out.ledger.current.start.month == 2
    assert out.ledger.current.heat_delivered.register_start_kwh == 205.0
    assert out.ledger.current.heat_delivered.metered_kwh == pytest.approx(7.0)


def test_a_ledger_written_to_status_and_read_back_continues_the_same_count() -> None:
    first = run([(T0, reading(T0, 100.0), {}), (T0 + 600, reading(T0 + 600, 106.0), {})])
    # What a restarted operator reads: the status document, not the object in memory.
    stored = first.ledger.model_dump(mode="json", by_alias=True, exclude_none=True)
    restored = resources.LedgerStatus.model_validate(stored)
    later = run([(T0 + 1200, reading(T0 + 1200, 111.0), {})], start=restored)
    assert later.ledger.current.heat_delivered.metered_kwh == pytest.approx(11.0)


@given(
    st.lists(
        st.tuples(st.floats(60, 7200), st.floats(-1000, 1000), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_metered_energy_never_decreases_whatever_the_registers_do(
    moves: list[tuple[float, float, bool]],
) -> None:
    state: resources.LedgerStatus | None = None
    t, value, last = T0, 50.0, 0.0
    meter = "a"
    for dt, change, swap in moves:
        t += dt
        value = max(value + change, 0.0)
        meter = ("b" if meter == "a" else "a") if swap else meter
        out = ledger.advance(
            state, ledger.Observation(reading(t, value, meter=meter), {}), SETTINGS, now_s=t
        )
        state = out.ledger
        metered = state.current.heat_delivered.metered_kwh
        assert metered >= last - 1e-9
        # Never more than the offtaker could take since the first reading.
        assert metered <= 40.0 * (t - T0) / 3600 * ledger.JUMP_TOLERANCE + 0.01 * len(moves)
        last = metered


def test_a_register_the_meter_drops_keeps_what_it_counted_and_estimates_from_then_on() -> None:
    out = run(
        [
            (T0, reading(T0, 100.0, it=10.0), {}),
            (T0 + 600, reading(T0 + 600, 101.0, it=11.0), {}),
            (T0 + 1200, reading(T0 + 1200, 102.0), {ledger.Energy.IT: 0.5}),
            (T0 + 1800, reading(T0 + 1800, 103.0), {ledger.Energy.IT: 0.5}),
        ]
    )
    q = out.ledger.current.it_energy
    assert (q.metered_kwh, q.estimated_kwh, q.register_start_kwh) == (1.0, 0.5, None)
    assert q.source is resources.LedgerSource.MIXED


def test_changing_the_period_length_closes_the_running_period() -> None:
    monthly = run([(T0, reading(T0, 100.0), {}), (T0 + 600, reading(T0 + 600, 104.0), {})])
    daily = dataclasses.replace(SETTINGS, period=resources.LedgerPeriodKind.DAY)
    out = run([(T0 + 1200, reading(T0 + 1200, 107.0), {})], settings=daily, start=monthly.ledger)
    assert out.ledger.period is resources.LedgerPeriodKind.DAY
    assert out.ledger.previous is not None
    assert out.ledger.previous.heat_delivered.metered_kwh == pytest.approx(4.0)
    assert out.ledger.current.heat_delivered.metered_kwh == pytest.approx(3.0)
