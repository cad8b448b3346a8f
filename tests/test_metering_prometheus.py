"""The Prometheus source against a tiny fake Prometheus HTTP API on 127.0.0.1.

The fake answers ``/api/v1/query`` from a table of canned vectors, or, for the end-to-end case,
by scraping the reference metering server's ``/metrics`` and picking the series a
``name{site="..."}`` selector names.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client import parser as prom_parser

from heatshift.metering import prometheus as metering_prometheus
from heatshift.metering import readings
from heatshift.metering import server as metering_server
from metering_fixtures import LIMITS, NOW, FakeClock, tiny_scenario

Kind = readings.RejectionKind
TIMEOUT_S = 10.0
QUERIES = metering_prometheus.SiteQueries(
    demand_kw='demand{site="pool"}',
    tank_energy_kwh='energy{site="pool"}',
    tank_capacity_kwh='capacity{site="pool"}',
    supply_temp_c='supply{site="pool"}',
    return_temp_c='return{site="pool"}',
)

Answer = list[dict[str, Any]] | web.Response
Answerer = Callable[[str], Awaitable[Answer]]


def vector(value: float | str, t: float = NOW - 15.0) -> list[dict[str, Any]]:
    return [{"metric": {"site": "pool"}, "value": [t, str(value)]}]


def canned(**overrides: Answer) -> Answerer:
    """Answers for :data:`QUERIES`, by the metric name before ``{``."""
    table: dict[str, Answer] = {
        "demand": vector(12.0),
        "energy": vector(30.0, NOW - 20.0),
        "capacity": vector(80.0),
        "supply": vector(45.0),
        "return": vector(30.0),
        "available": vector(1),
    }
    table.update(overrides)

    async def answer(query: str) -> Answer:
        return table.get(query.split("{")[0], [])

    return answer


@contextlib.asynccontextmanager
async def fake_prometheus(answer: Answerer) -> AsyncIterator[str]:
    seen: list[str] = []

    async def query(request: web.Request) -> web.Response:
        promql = request.query.get("query", "")
        seen.append(promql)
        result = await answer(promql)
        if isinstance(result, web.Response):
            return result
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def fetch(
    url: str,
    queries: metering_prometheus.SiteQueries = QUERIES,
    sites: dict[str, readings.ReadingLimits] | None = None,
    now_s: float = NOW,
) -> dict[str, readings.ReadingResult]:
    async with metering_prometheus.PrometheusMeteringSource(
        url, {"pool": queries}, retries=0, timeout_s=TIMEOUT_S
    ) as src:
        return await asyncio.wait_for(src.fetch(sites or {"pool": LIMITS}, now_s), TIMEOUT_S)


def rejected(results: dict[str, readings.ReadingResult], site: str = "pool") -> readings.Rejection:
    result = results[site]
    assert isinstance(result, readings.Rejection), result
    return result


@pytest.mark.asyncio
async def test_queries_become_a_validated_reading() -> None:
    async with fake_prometheus(canned()) as url:
        results = await fetch(url)
    pool = results["pool"]
    assert isinstance(pool, readings.SiteReading)
    assert (pool.demand_kw, pool.tank_energy_kwh, pool.tank_capacity_kwh) == (12.0, 30.0, 80.0)
    assert (pool.supply_temp_c, pool.return_temp_c) == (45.0, 30.0)
    assert pool.offtaker_available
    assert pool.observed_at_s == pytest.approx(NOW - 20.0)  # the oldest sample dates it


@pytest.mark.asyncio
async def test_only_demand_and_tank_energy_are_needed() -> None:
    queries = metering_prometheus.SiteQueries(
        demand_kw='demand{site="pool"}', tank_energy_kwh='energy{site="pool"}'
    )
    async with fake_prometheus(canned()) as url:
        pool = (await fetch(url, queries))["pool"]
    assert isinstance(pool, readings.SiteReading)
    assert pool.tank_capacity_kwh == LIMITS.tank_capacity_kwh
    assert pool.supply_temp_c is None


FAILURES: list[tuple[str, dict[str, Answer], Kind, str]] = [
    (
        "empty vector",
        {"energy": []},
        Kind.MISSING,
        "tank energy is missing: its PromQL returned no series",
    ),
    (
        "two series",
        {"demand": vector(1) + vector(2)},
        Kind.MALFORMED,
        "PromQL for heat demand returned 2 series, expected 1",
    ),
    ("NaN", {"demand": vector("NaN")}, Kind.NAN, "heat demand is NaN"),
    ("negative", {"demand": vector(-4)}, Kind.NEGATIVE, "heat demand is negative"),
    (
        "tank out of range",
        {"energy": vector(95.0)},
        Kind.OUT_OF_RANGE,
        "tank energy 95 kWh exceeds capacity 80 kWh",
    ),
    (
        "stale",
        {"demand": vector(12.0, NOW - 3600)},
        Kind.STALE,
        "reading is 60 min old, limit 10 min",
    ),
    (
        "not a sample",
        {"demand": [{"metric": {}, "value": "twelve"}]},
        Kind.MALFORMED,
        "not [time, value]",
    ),
    (
        "bad PromQL",
        {"demand": web.json_response({"status": "error", "error": "parse error"}, status=400)},
        Kind.MALFORMED,
        "Prometheus rejected the PromQL for heat demand (HTTP 400)",
    ),
    (
        "Prometheus failing",
        {"demand": web.json_response({"status": "error"}, status=503)},
        Kind.UNAVAILABLE,
        "Prometheus answered HTTP 503 for the query for heat demand (1 attempt)",
    ),
    (
        "not JSON",
        {"demand": web.Response(text="<html>proxy error</html>")},
        Kind.MALFORMED,
        "unexpected body",
    ),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("overrides", "kind", "words"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
async def test_a_failure_rejects_the_site(
    overrides: dict[str, Answer], kind: Kind, words: str
) -> None:
    async with fake_prometheus(canned(**overrides)) as url:
        rejection = rejected(await fetch(url))
    assert rejection.kind is kind
    assert words in rejection.message


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("value", "kind"), [(0, Kind.UNAVAILABLE), (2, Kind.MALFORMED)], ids=["zero", "two"]
)
async def test_offtaker_availability_is_zero_or_one(value: int, kind: Kind) -> None:
    queries = QUERIES.model_copy(update={"offtaker_available": 'available{site="pool"}'})
    async with fake_prometheus(canned(available=vector(value))) as url:
        assert rejected(await fetch(url, queries)).kind is kind


@pytest.mark.asyncio
async def test_one_site_failing_leaves_the_others_alone() -> None:
    other = metering_prometheus.SiteQueries(
        demand_kw='demand{site="flats"}', tank_energy_kwh='energy{site="flats"}'
    )

    async def answer(query: str) -> Answer:
        if 'site="pool"' in query and query.startswith("demand"):
            return []
        return await canned()(query)

    async with (
        fake_prometheus(answer) as url,
        metering_prometheus.PrometheusMeteringSource(
            url, {"pool": QUERIES, "flats": other}, retries=0
        ) as src,
    ):
        sites = {"pool": LIMITS, "flats": LIMITS, "greenhouse": LIMITS}
        results = await src.fetch(sites, NOW)
    assert rejected(results, "pool").kind is Kind.MISSING
    assert isinstance(results["flats"], readings.SiteReading)
    greenhouse = rejected(results, "greenhouse")
    assert greenhouse.kind is Kind.MISSING
    assert greenhouse.message == "no PromQL queries are configured for site 'greenhouse'"


@pytest.mark.asyncio
async def test_an_unreachable_prometheus_is_unavailable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now: connection refused.
    rejection = rejected(await fetch(f"http://127.0.0.1:{port}"))
    assert rejection.kind is Kind.UNAVAILABLE
    assert rejection.message.startswith("Prometheus")


def test_the_reference_server_queries_name_its_gauges() -> None:
    queries = metering_prometheus.SiteQueries.for_reference_server('odd"site')
    assert queries.demand_kw == 'heatshift_meter_heat_demand_kw{site="odd\\"site"}'
    assert queries.offtaker_available is not None


@pytest.mark.asyncio
async def test_end_to_end_through_the_reference_servers_gauges() -> None:
    clock = FakeClock()
    sim = metering_server.MeterSimulation(tiny_scenario(), clock=clock)
    selector = re.compile(r'^(\w+)\{site="([^"]+)"\}$')
    async with (
        metering_server.MeteringServer(sim, port=0, tick_s=None) as meter,
        httpx.AsyncClient(base_url=meter.url, timeout=TIMEOUT_S) as http,
    ):

        async def scrape(query: str) -> Answer:
            match = selector.match(query)
            assert match, query
            text = (await http.get("/metrics")).text
            for family in prom_parser.text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == match[1] and sample.labels.get("site") == match[2]:
                        return [{"metric": sample.labels, "value": [clock(), str(sample.value)]}]
            return []

        await sim.set_load("pool", 20_000.0)
        clock.advance(1800.0)
        async with fake_prometheus(scrape) as url:
            queries = {
                s: metering_prometheus.SiteQueries.for_reference_server(s) for s in sim.site_ids
            }
            async with metering_prometheus.PrometheusMeteringSource(url, queries, retries=0) as src:
                results = await src.fetch({"pool": LIMITS, "flats": LIMITS}, clock())
                await sim.set_fault("flats", metering_server.FaultMode.DOWN)
                down = await src.fetch({"flats": LIMITS}, clock())
    pool = results["pool"]
    assert isinstance(pool, readings.SiteReading)
    assert pool.tank_energy_kwh == pytest.approx(10.0 + 0.85 * 20.0 * 0.5)
    assert pool.offtaker_available
    # The meter's registers, read as counters: 20 kW for 30 min is 10 kWh of IT energy.
    assert pool.registers is not None and pool.registers.meter_id is None
    assert pool.registers.it_energy_kwh == pytest.approx(10.0)
    assert pool.registers.heat_delivered_kwh == 0.0
    flats = results["flats"]
    assert isinstance(flats, readings.SiteReading)
    assert flats.demand_kw == 20.0
    assert rejected(down, "flats").kind is Kind.MISSING
    assert not math.isnan(pool.demand_kw)
