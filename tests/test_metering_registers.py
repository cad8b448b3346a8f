"""The reference meter's cumulative registers: they integrate the load placed on the site,
reset and replacement work as a real meter's do, and the HTTP and Prometheus sources carry
them through validation."""

from __future__ import annotations

import pytest

from heatshift.metering import http as metering_http
from heatshift.metering import readings
from heatshift.metering import server as metering_server
from metering_fixtures import LIMITS, FakeClock, tiny_scenario


def validated(
    sim: metering_server.MeterSimulation, site: str, now_s: float
) -> readings.SiteReading:
    result = readings.validate_with(sim.reading(site), LIMITS, now_s=now_s, site=site)
    assert isinstance(result, readings.SiteReading), result
    return result


@pytest.mark.asyncio
async def test_12_kw_for_half_an_hour_advances_the_it_register_by_6_kwh() -> None:
    clock = FakeClock()
    sim = metering_server.MeterSimulation(tiny_scenario(), clock=clock)
    await sim.set_load("pool", 12_000.0)
    clock.advance(1800.0)
    await sim.advance()
    regs = validated(sim, "pool", clock()).registers
    assert regs is not None
    assert regs.it_energy_kwh == pytest.approx(6.0)
    assert regs.meter_id == "pool-meter-1"
    # pool wants no heat: 0.85 x 6 kWh went into the tank, none delivered or dumped yet.
    assert regs.heat_delivered_kwh == 0.0 and regs.heat_dumped_kwh == 0.0


@pytest.mark.asyncio
async def test_delivered_and_dumped_registers_follow_the_tank_physics() -> None:
    clock = FakeClock()
    sim = metering_server.MeterSimulation(tiny_scenario(), clock=clock)
    # flats wants 20 kW; 10 kW of IT recovers 8.5 kW, the tank (10 kWh) tops up the rest.
    await sim.set_load("flats", 10_000.0)
    clock.advance(1800.0)
    await sim.advance()
    r = validated(sim, "flats", clock())
    assert r.registers is not None
    assert r.registers.heat_delivered_kwh == pytest.approx(10.0)  # 20 kW for 30 min
    assert r.registers.it_energy_kwh == pytest.approx(5.0)
    assert r.flow_m3_per_h is not None and r.flow_m3_per_h > 0


@pytest.mark.asyncio
async def test_a_reset_restarts_the_registers_from_0_and_a_replacement_changes_the_meter_id() -> (
    None
):
    clock = FakeClock()
    sim = metering_server.MeterSimulation(tiny_scenario(), clock=clock)
    await sim.set_load("pool", 10_000.0)
    clock.advance(3600.0)
    await sim.act_on_meter("pool", metering_server.MeterAction.RESET)
    after_reset = sim.registers("pool")
    assert after_reset["itEnergyKWh"] == 0.0 and after_reset["meterId"] == "pool-meter-1"
    clock.advance(360.0)
    await sim.act_on_meter("pool", metering_server.MeterAction.REPLACE)
    replaced = sim.registers("pool")
    assert replaced["meterId"] == "pool-meter-2" and replaced["itEnergyKWh"] == 0.0


@pytest.mark.asyncio
async def test_the_backwards_fault_halves_the_registers() -> None:
    clock = FakeClock()
    sim = metering_server.MeterSimulation(tiny_scenario(), clock=clock)
    await sim.set_load("pool", 10_000.0)
    clock.advance(3600.0)
    await sim.set_fault("pool", metering_server.FaultMode.BACKWARDS)
    assert sim.registers("pool")["itEnergyKWh"] == pytest.approx(5.0)


@pytest.mark.asyncio
async def test_the_http_source_reads_the_registers_from_the_reference_server() -> None:
    clock = FakeClock()
    sim = metering_server.MeterSimulation(tiny_scenario(), clock=clock)
    async with metering_server.MeteringServer(sim, port=0, tick_s=None) as server:
        await sim.set_load("pool", 6_000.0)
        clock.advance(3600.0)
        async with metering_http.HttpMeteringSource(server.url, retries=0) as src:
            results = await src.fetch({"pool": LIMITS}, clock())
    pool = results["pool"]
    assert isinstance(pool, readings.SiteReading)
    assert pool.registers is not None
    assert pool.registers.it_energy_kwh == pytest.approx(6.0)
    assert pool.registers.meter_id == "pool-meter-1"
