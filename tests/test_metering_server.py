"""The reference metering server over real HTTP on 127.0.0.1, read by the real client.

Each test starts its own server on an ephemeral port and stops it when done. The server's
clock is a fake one the test moves, so tank physics are exact and nothing sleeps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import parser as prom_parser

from heatshift import thermal
from heatshift.metering import http as metering_http
from heatshift.metering import readings
from heatshift.metering import server as metering_server
from heatshift.sim import scenario as scenario_mod
from metering_fixtures import LIMITS, FakeClock, tiny_scenario

Kind = readings.RejectionKind
SITES = {"pool": LIMITS, "flats": LIMITS}
TIMEOUT_S = 10.0
"""No test here waits longer than this for anything."""


@contextlib.asynccontextmanager
async def running(
    scenario: scenario_mod.Scenario | None = None,
    *,
    token: str | None = None,
    **options: Any,
) -> AsyncIterator[tuple[metering_server.MeteringServer, FakeClock]]:
    clock = FakeClock()
    sim = metering_server.MeterSimulation(scenario or tiny_scenario(), clock=clock, **options)
    async with metering_server.MeteringServer(sim, port=0, token=token, tick_s=None) as server:
        assert server.url.startswith("http://127.0.0.1:")
        yield server, clock


def client(server: metering_server.MeteringServer, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT_S, **options)


async def fetch(
    server: metering_server.MeteringServer, clock: FakeClock, **options: Any
) -> dict[str, readings.ReadingResult]:
    async with metering_http.HttpMeteringSource(
        server.url, timeout_s=TIMEOUT_S, retries=0, **options
    ) as src:
        return await asyncio.wait_for(src.fetch(SITES, now_s=clock()), TIMEOUT_S)


async def admin(
    server: metering_server.MeteringServer, path: str, body: object, token: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client(server, headers=headers) as http:
        return await http.post(f"/v1/admin/{path}", json=body)


def reading_of(results: dict[str, readings.ReadingResult], site: str) -> readings.SiteReading:
    result = results[site]
    assert isinstance(result, readings.SiteReading), result
    return result


@pytest.mark.asyncio
async def test_the_client_reads_valid_readings() -> None:
    async with running() as (server, clock):
        results = await fetch(server, clock)
    pool, flats = reading_of(results, "pool"), reading_of(results, "flats")
    assert (pool.demand_kw, flats.demand_kw) == (0.0, 20.0)
    assert pool.tank_energy_kwh == 10.0
    assert pool.tank_capacity_kwh == 80.0
    assert pool.observed_at_s == pytest.approx(clock())
    assert pool.offtaker_available
    assert pool.supply_temp_c is not None and pool.return_temp_c is not None
    assert pool.supply_temp_c >= pool.return_temp_c


@pytest.mark.asyncio
async def test_demand_follows_the_scenario_and_is_capped_at_the_rating() -> None:
    scenario = tiny_scenario({"pool": [0.0, 5.0, 70.0, 1.0], "flats": [20.0] * 4})
    async with running(scenario, speed=60.0) as (server, clock):
        seen = []
        for _ in range(5):
            seen.append(reading_of(await fetch(server, clock), "pool").demand_kw)
            clock.advance(15.0)  # 15 s of wall time at 60x: one 15-minute step
    # The fourth value is 70 kW, capped at the offtaker's 50 kW; then the series starts over.
    assert seen == [0.0, 5.0, 50.0, 1.0, 0.0]


@pytest.mark.asyncio
async def test_the_tank_rises_when_load_is_set_and_demand_is_low() -> None:
    async with running() as (server, clock):
        before = reading_of(await fetch(server, clock), "pool").tank_energy_kwh
        response = await admin(server, "load", {"site": "pool", "watts": 20_000})
        assert response.status_code == 200
        clock.advance(3600.0)
        after = reading_of(await fetch(server, clock), "pool").tank_energy_kwh
        site = server.sim.scenario.sites[0]
        # No demand, no standing loss: every recovered kWh stays in the tank.
        assert after == pytest.approx(before + thermal.recovered_heat_kw(site, 20_000) * 1.0)
        # flats has 20 kW of demand and only idle load: its tank drains instead.
        assert reading_of(await fetch(server, clock), "flats").tank_energy_kwh == 0.0


@pytest.mark.asyncio
async def test_the_load_source_heats_the_tank_and_an_override_can_be_lifted() -> None:
    load = metering_server.SettableLoad({"pool": 10_000.0})
    async with running(load=load) as (server, clock):
        clock.advance(1800.0)
        first = reading_of(await fetch(server, clock), "pool").tank_energy_kwh
        assert first == pytest.approx(10.0 + 0.85 * 10.0 * 0.5)
        await admin(server, "load", {"site": "pool", "watts": 0})
        clock.advance(1800.0)
        second = reading_of(await fetch(server, clock), "pool").tank_energy_kwh
        assert second == pytest.approx(first)
        await admin(server, "load", {"site": "pool", "watts": None})
        load.set("pool", 20_000.0)
        clock.advance(1800.0)
        third = reading_of(await fetch(server, clock), "pool").tank_energy_kwh
        assert third == pytest.approx(second + 0.85 * 20.0 * 0.5)


FAULTS = [
    ("nan", Kind.NAN, "heat demand is NaN"),
    ("negative", Kind.NEGATIVE, "heat demand is negative"),
    ("stale", Kind.STALE, "reading is 24 h old, limit 10 min"),
    ("down", Kind.UNAVAILABLE, "down (fault injected)"),
    ("unavailable", Kind.UNAVAILABLE, "offtaker reports it cannot take heat now"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("mode", "kind", "words"), FAULTS, ids=[f[0] for f in FAULTS])
@pytest.mark.parametrize("bulk", [False, True], ids=["per-site", "bulk"])
async def test_an_injected_fault_shows_up_as_a_rejection(
    mode: str, kind: Kind, words: str, bulk: bool
) -> None:
    async with running() as (server, clock):
        response = await admin(server, "faults", {"site": "pool", "mode": mode})
        assert response.json() == {"site": "pool", "mode": mode}
        results = await fetch(server, clock, bulk=bulk)
        rejection = results["pool"]
        assert isinstance(rejection, readings.Rejection), rejection
        assert rejection.kind is kind
        assert words in rejection.message
        reading_of(results, "flats")
        await admin(server, "faults", {"site": "pool", "mode": "none"})
        reading_of(await fetch(server, clock, bulk=bulk), "pool")


@pytest.mark.asyncio
async def test_a_down_site_answers_503() -> None:
    async with running() as (server, _):
        await admin(server, "faults", {"site": "pool", "mode": "down"})
        async with client(server) as http:
            response = await http.get("/v1/sites/pool/reading")
    assert response.status_code == 503
    assert response.json()["code"] == "Unavailable"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("faults", {"site": "pool", "mode": "melted"}, 400),
        ("faults", {"site": "nowhere", "mode": "nan"}, 404),
        ("faults", ["pool"], 400),
        ("load", {"site": "pool", "watts": -5}, 400),
        ("load", {"site": "pool", "watts": "lots"}, 400),
        ("load", {"watts": 5}, 400),
    ],
)
async def test_bad_admin_requests_are_refused(path: str, body: object, status: int) -> None:
    async with running() as (server, _):
        response = await admin(server, path, body)
    assert response.status_code == status
    assert set(response.json()) == {"code", "message"}


@pytest.mark.asyncio
async def test_the_token_guards_the_api_but_not_metrics() -> None:
    async with running(token="s3cret") as (server, clock):
        without = await fetch(server, clock)
        wrong = await fetch(server, clock, token="wrong")
        right = await fetch(server, clock, token="s3cret")
        refused = await admin(server, "faults", {"site": "pool", "mode": "nan"})
        allowed = await admin(server, "faults", {"site": "pool", "mode": "nan"}, token="s3cret")
        async with client(server) as http:
            metrics = await http.get("/metrics")
    for results, words in [(without, "none is configured"), (wrong, "refused the bearer")]:
        rejection = results["pool"]
        assert isinstance(rejection, readings.Rejection)
        assert rejection.kind is Kind.UNAVAILABLE
        assert words in rejection.message
    reading_of(right, "pool")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert allowed.status_code == 200
    assert metrics.status_code == 200


def samples(text: str) -> dict[tuple[str, str], float]:
    found = {}
    for family in prom_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, sample.labels.get("site", ""))] = sample.value
    return found


@pytest.mark.asyncio
async def test_metrics_expose_the_readings_as_gauges() -> None:
    async with running() as (server, clock):
        await admin(server, "load", {"site": "pool", "watts": 20_000})
        clock.advance(900.0)
        await admin(server, "faults", {"site": "flats", "mode": "down"})
        async with client(server) as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("heatshift_meter_heat_demand_kw", "pool")] == 0.0
    assert found[("heatshift_meter_tank_energy_kwh", "pool")] == pytest.approx(10.0 + 0.85 * 5)
    assert found[("heatshift_meter_tank_capacity_kwh", "pool")] == 80.0
    assert found[("heatshift_meter_offtaker_available", "pool")] == 1.0
    assert found[("heatshift_meter_it_power_watts", "pool")] == 20_000.0
    assert ("heatshift_meter_supply_temp_c", "pool") in found
    assert ("heatshift_meter_return_temp_c", "pool") in found
    assert found[("heatshift_meter_heat_dumped_kwh_total", "pool")] == 0.0
    assert found[("heatshift_meter_scenario_time_seconds", "")] == 900.0
    # A meter that is down has no readings to export; the flats' load is still known.
    assert ("heatshift_meter_heat_demand_kw", "flats") not in found
    assert ("heatshift_meter_it_power_watts", "flats") in found


@pytest.mark.asyncio
async def test_metrics_show_a_nan_fault() -> None:
    async with running() as (server, _):
        await admin(server, "faults", {"site": "pool", "mode": "nan"})
        async with client(server) as http:
            found = samples((await http.get("/metrics")).text)
    assert math.isnan(found[("heatshift_meter_heat_demand_kw", "pool")])


@pytest.mark.asyncio
async def test_the_site_list_the_contract_and_health() -> None:
    async with running() as (server, _), client(server) as http:
        sites = (await http.get("/v1/sites")).json()
        contract = await http.get("/openapi.yaml")
        health = await http.get("/healthz")
        unknown = await http.get("/v1/sites/nowhere/reading")
    assert sites == {"sites": ["pool", "flats"]}
    assert contract.text.startswith("openapi: 3.1.0")
    assert health.text == "ok\n"
    assert unknown.status_code == 404


@pytest.mark.asyncio
async def test_a_forecast_is_the_scenarios_own_demand_ahead() -> None:
    scenario = tiny_scenario({"pool": [0.0, 5.0, 7.0, 1.0], "flats": [20.0] * 4})
    async with running(scenario, speed=2.0, forecast_horizon_s=3600.0) as (server, clock):
        clock.advance(600.0)  # 20 min into the scenario: in the second step
        pool = reading_of(await fetch(server, clock), "pool")
    assert pool.forecast is not None
    assert pool.forecast.step_s == 450.0  # 15 min of scenario time at 2x
    assert pool.forecast.start_s == pytest.approx(clock() - 5 * 60 / 2)
    assert pool.forecast.kw == (5.0, 7.0, 1.0, 0.0)


@pytest.mark.asyncio
async def test_the_built_in_scenario_serves_valid_readings_for_every_site() -> None:
    scenario = scenario_mod.load_builtin_scenario()
    limits = {
        s.name: readings.ReadingLimits.for_site(s, staleness_limit_s=600.0) for s in scenario.sites
    }
    async with (
        running(scenario, speed=3600.0) as (server, clock),
        metering_http.HttpMeteringSource(server.url, retries=0) as src,
    ):
        for _ in range(3):
            results = await src.fetch(limits, now_s=clock())
            assert all(isinstance(r, readings.SiteReading) for r in results.values()), results
            clock.advance(7.0)


@pytest.mark.asyncio
async def test_serve_runs_until_stopped_with_the_real_clock_ticking() -> None:
    stop = asyncio.Event()
    started: list[metering_server.MeteringServer] = []
    task = asyncio.create_task(
        metering_server.serve(
            tiny_scenario(), port=0, speed=3600.0, stop=stop, ready=started.append
        )
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while not started:
                await asyncio.sleep(0.01)
            async with client(started[0]) as http:
                assert (await http.get("/healthz")).status_code == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT_S)


@pytest.mark.asyncio
async def test_the_ticker_keeps_the_tanks_current() -> None:
    sim = metering_server.MeterSimulation(tiny_scenario(), speed=3600.0)
    async with metering_server.MeteringServer(sim, port=0, tick_s=0.01):
        async with asyncio.timeout(TIMEOUT_S):
            while sim.scenario_time_s == 0.0:
                await asyncio.sleep(0.01)
    assert sim.scenario_time_s > 0.0


@pytest.mark.asyncio
async def test_a_failing_load_source_keeps_the_last_figure() -> None:
    class Broken:
        async def it_power_watts(self, site: str) -> float:
            raise RuntimeError("cluster unreachable")

    clock = FakeClock()
    sim = metering_server.MeterSimulation(tiny_scenario(), clock=clock, load=Broken())
    clock.advance(60.0)
    await sim.advance()
    assert sim.scenario_time_s == 60.0


def test_the_command_line_options() -> None:
    parser = argparse.ArgumentParser()
    metering_server.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.speed, args.token) == ("127.0.0.1", 8080, 1.0, None)
    args = parser.parse_args(
        ["--port", "0", "--speed", "60", "--start-at", "48h", "--forecast-horizon", "24h"]
    )
    assert (args.port, args.speed, args.start_at, args.forecast_horizon) == (
        0,
        60.0,
        172800.0,
        86400.0,
    )
    for bad in (["--speed", "0"], ["--port", "70000"], ["--start-at", "soon"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_a_bad_scenario_file_exits_2(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    metering_server.add_arguments(parser)
    bad = tmp_path / "scenario.yaml"
    bad.write_text("kind: Nonsense\n")
    assert metering_server.run_from_args(parser.parse_args(["--scenario", str(bad)])) == 2
    assert "heatshift metering-sim:" in capsys.readouterr().err


def test_heatshift_metering_sim_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "heatshift", "metering-sim", "--port", "0", "--speed", "60"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        # If the server never announces itself, the watchdog ends it and readline returns.
        watchdog = threading.Timer(60.0, process.kill)
        watchdog.start()
        try:
            assert process.stderr is not None
            # The announcement, after any log lines before it.
            seen: list[str] = []
            while len(seen) < 20:
                seen.append(process.stderr.readline())
                if not seen[-1] or seen[-1].startswith("metering-sim: serving"):
                    break
            match = re.search(r"at (http://127\.0\.0\.1:\d+) ", seen[-1])
            assert match, seen
            sites = httpx.get(f"{match[1]}/v1/sites", timeout=TIMEOUT_S).json()["sites"]
            assert len(sites) == 6  # the built-in winter week
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=TIMEOUT_S) == 0
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
