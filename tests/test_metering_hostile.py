"""Hostile metering servers and payloads (issue "Hostile input"): each finding, named.

The slow servers are real sockets on 127.0.0.1 that drip one byte every half second and stop
by themselves; the timings printed are what the regression tests measure (run ``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

import kube_fixtures as kf
from heatshift import bounds
from heatshift.kube import meters
from heatshift.metering import http as metering_http
from heatshift.metering import prometheus as metering_prometheus
from heatshift.metering import readings
from metering_fixtures import LIMITS, NOW, FakeMeteringAPI, RecordingSleep, raw_reading, validate

Kind = readings.RejectionKind
DRIP_INTERVAL_S = 0.5
DRIP_MAX_BYTES = 60
"""A dripping answer ends by itself after 30 s, should a client fail to cut it."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def drip(
    request: web.Request, body: bytes = b'{"siteId": "pool"}' * 10
) -> web.StreamResponse:
    """A 200 whose body arrives one byte every half second: no single read ever times out."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for byte in body[:DRIP_MAX_BYTES]:
        await response.write(bytes([byte]))
        await asyncio.sleep(DRIP_INTERVAL_S)
    return response


@contextlib.asynccontextmanager
async def serve(routes: dict[str, Handler]) -> AsyncIterator[str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


async def good_reading(request: web.Request) -> web.Response:
    site = request.match_info.get("site", "flats")
    return web.json_response(raw_reading(site))


def rejected(results: dict[str, readings.ReadingResult], site: str = "pool") -> readings.Rejection:
    result = results[site]
    assert isinstance(result, readings.Rejection), result
    return result


# --- forecasts ---------------------------------------------------------------------------------


def forecast(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start": readings.format_time(NOW),
        "stepSeconds": 900,
        "demandKW": [10.0, 12.0],
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (forecast(stepSeconds=1e-300), "a forecast's step must be between 1m and 24h, not 1e-300s"),
        (forecast(stepSeconds=59), "a forecast's step must be between 1m and 24h, not 59s"),
        (forecast(stepSeconds=86401), "a forecast's step must be between 1m and 24h"),
        (forecast(stepSeconds=-900), "a forecast's step must be between 1m and 24h"),
        (
            forecast(stepSeconds=60, demandKW=[1.0] * (bounds.MAX_SERIES_SAMPLES + 1)),
            f"it has {bounds.MAX_SERIES_SAMPLES + 1} values, more than {bounds.MAX_SERIES_SAMPLES}",
        ),
        (forecast(demandKW=[1.0, math.inf]), "demandKW[1] is infinite"),
        (forecast(demandKW=[1.0, -0.5]), "demandKW[1] is negative"),
        (forecast(start="1970-01-01T00:00:00Z"), "must be a time between 2000 and 2100"),
        (forecast(start="2099-12-31T00:00:00Z", stepSeconds=86400), "its end must be a time"),
    ],
    ids=[
        "step 1e-300",
        "step under a minute",
        "step over a day",
        "negative step",
        "too many samples",
        "infinite value",
        "negative value",
        "start before 2000",
        "end after 2100",
    ],
)
def test_a_forecast_step_of_1e_300_or_any_series_outside_the_bounds_drops_the_forecast(
    bad: dict[str, Any], words: str
) -> None:
    # The demand reading itself is good: it stays usable, only the forecast goes (with a note).
    result = validate(raw_reading(forecast=bad))
    assert isinstance(result, readings.SiteReading), result
    assert result.forecast is None
    assert result.demand_kw == 12.5
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("forecast dropped: ")
    assert words in result.warnings[0]


def test_a_forecast_at_the_bounds_is_kept() -> None:
    at_bounds = forecast(stepSeconds=60, demandKW=[1.0] * bounds.MAX_SERIES_SAMPLES)
    result = validate(raw_reading(forecast=at_bounds))
    assert isinstance(result, readings.SiteReading)
    assert result.forecast is not None
    assert len(result.forecast.kw) == bounds.MAX_SERIES_SAMPLES


# --- strict parsing ----------------------------------------------------------------------------


def test_a_non_rfc_3339_observed_at_is_rejected() -> None:
    for text in ("20261202T013228+0000", "2026-12-02 01:32:28Z", "2026-12-02T01:32:28,5Z"):
        result = validate(raw_reading(observedAt=text))
        assert isinstance(result, readings.Rejection), text
        assert result.kind is Kind.MALFORMED
        assert f"observation time {text!r} is not an RFC 3339 time" == result.message


def test_rfc_3339_times_with_long_fractions_and_lower_case_letters_are_accepted() -> None:
    assert readings.parse_time("2023-11-14t22:13:20.123456789z") == pytest.approx(
        1_700_000_000.123457
    )
    assert readings.parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000.0


def test_an_observed_at_out_of_the_timestamp_bounds_is_rejected() -> None:
    result = validate(raw_reading(observedAt="2999-01-01T00:00:00Z"))
    assert isinstance(result, readings.Rejection)
    assert "must be a time between 2000 and 2100" in result.message


BODIES: list[tuple[str, bytes, str, str]] = [
    (
        "duplicate JSON keys",
        b'{"siteId": "pool", "heatDemandKW": 1, "heatDemandKW": 99}',
        "application/json",
        "it has the key 'heatDemandKW' twice in one object",
    ),
    (
        "a text/html body",
        json.dumps(raw_reading()).encode(),
        "text/html; charset=utf-8",
        "it has content type 'text/html', not application/json",
    ),
    (
        "UTF-16",
        json.dumps(raw_reading()).encode("utf-16"),
        "application/json",
        "it is not UTF-8 (bad byte at offset 0)",
    ),
    (
        "UTF-16 declared",
        json.dumps(raw_reading()).encode("utf-16-le"),
        "application/json; charset=utf-16",
        "it is in charset 'utf-16', not UTF-8",
    ),
    (
        "a byte order mark",
        b"\xef\xbb\xbf" + json.dumps(raw_reading()).encode(),
        "application/json",
        "it starts with a byte order mark",
    ),
    (
        "no content type",
        json.dumps(raw_reading()).encode(),
        "",
        "it has no content type (expected application/json)",
    ),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "content_type", "words"), [b[1:] for b in BODIES], ids=[b[0] for b in BODIES]
)
async def test_duplicate_json_keys_html_and_utf_16_bodies_are_rejected(
    body: bytes, content_type: str, words: str
) -> None:
    api = FakeMeteringAPI()
    headers = {"Content-Type": content_type} if content_type else {}
    api.script["/v1/sites/pool/reading"] = [httpx.Response(200, content=body, headers=headers)]
    async with metering_http.HttpMeteringSource(
        "https://metering.example.test", transport=api.transport()
    ) as src:
        results = await src.fetch({"pool": LIMITS, "flats": LIMITS}, NOW)
    rejection = rejected(results)
    assert rejection.kind is Kind.MALFORMED
    assert rejection.message == f"metering API's answer for site 'pool' is unusable: {words}"
    assert isinstance(results["flats"], readings.SiteReading)


def test_a_json_subtype_with_a_utf_8_charset_is_accepted() -> None:
    body = json.dumps(raw_reading()).encode()
    for content_type in ("application/json; charset=UTF-8", "application/vnd.meter+json"):
        result = metering_http.reading_from_body(body, content_type, LIMITS, now_s=NOW, site="pool")
        assert isinstance(result, readings.SiteReading), content_type


# --- deadlines ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_slow_drip_is_cut_at_the_sources_timeout_and_keeps_the_other_sites() -> None:
    routes = {"/v1/sites/pool/reading": drip, "/v1/sites/{site}/reading": good_reading}
    async with (
        serve(routes) as url,
        metering_http.HttpMeteringSource(url, timeout_s=1.5, retries=0) as src,
    ):
        start = time.monotonic()
        results = await src.fetch({"pool": LIMITS, "flats": LIMITS}, NOW)
        took = time.monotonic() - start
    print(f"\nHTTP slow drip (1 byte / {DRIP_INTERVAL_S} s) cut after {took:.2f} s (timeout 1.5 s)")
    rejection = rejected(results)
    assert rejection.kind is Kind.UNAVAILABLE
    assert rejection.message == (
        "metering API gave no complete answer for site 'pool' within 1.5 s"
    )
    assert isinstance(results["flats"], readings.SiteReading)
    assert 1.4 <= took < 5.0  # cut at the timeout; a loaded machine adds a little


@pytest.mark.asyncio
async def test_a_slow_drip_site_does_not_reject_the_healthy_sites_of_its_endpoint() -> None:
    # Through the operator's path: two LeafSites on one endpoint, a cycle limit of 20 s.
    routes = {"/v1/sites/pool/reading": drip, "/v1/sites/{site}/reading": good_reading}
    async with serve(routes) as url:
        sites = [kf.parsed_site(kf.leafsite(name, url=url)) for name in ("pool", "flats")]
        start = time.monotonic()
        got = await meters.fetch_results(kf.FakeApi(), sites, NOW, timeout_s=20.0)
        took = time.monotonic() - start
    assert rejected(got).message.endswith("within 1 s")
    assert isinstance(got["flats"], readings.SiteReading)
    assert took < 6.0  # the LeafSites' timeoutSeconds (1 s), not the cycle's 20 s


@pytest.mark.asyncio
async def test_a_dripping_bulk_request_falls_back_to_asking_each_site() -> None:
    routes = {"/v1/readings": drip, "/v1/sites/{site}/reading": good_reading}
    async with (
        serve(routes) as url,
        metering_http.HttpMeteringSource(url, timeout_s=2.0, retries=0, bulk=True) as src,
    ):
        start = time.monotonic()
        results = await src.fetch({"pool": LIMITS, "flats": LIMITS}, NOW)
        took = time.monotonic() - start
    assert all(isinstance(r, readings.SiteReading) for r in results.values()), results
    assert 0.9 <= took < 5.0  # half the budget for the bulk request, then site by site


@pytest.mark.asyncio
async def test_retries_stop_when_the_deadline_leaves_no_time_to_wait() -> None:
    api = FakeMeteringAPI()
    busy = httpx.Response(
        429,
        content=b'{"code": "TooManyRequests", "message": "slow down"}',
        headers={"Retry-After": "30"},
    )
    api.script["/v1/sites/pool/reading"] = [busy] * 5
    sleep = RecordingSleep()
    async with metering_http.HttpMeteringSource(
        "https://metering.example.test",
        transport=api.transport(),
        timeout_s=2.0,
        backoff_max_s=30.0,
        sleep=sleep,
    ) as src:
        results = await src.fetch({"pool": LIMITS}, NOW)
    assert rejected(results).message == (
        "metering API answered HTTP 429: slow down for site 'pool' "
        "(1 attempt; no time left to retry within 2 s)"
    )
    assert sleep.delays == []


def test_a_timeout_beyond_the_metering_bound_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="a metering timeout must be longer than 0s and at most"):
        metering_http.HttpMeteringSource(
            "https://meter", timeout_s=bounds.METERING_TIMEOUT.high_s + 1
        )
    with pytest.raises(ValueError, match="a metering timeout"):
        metering_prometheus.PrometheusMeteringSource("https://prom", {}, timeout_s=math.inf)


class CountingStream(httpx.AsyncByteStream):
    """50 MB of JSON whitespace in 64 KiB chunks, counting what the client pulled."""

    def __init__(self, total: int = 50 * 1024 * 1024, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b" " * self.chunk


@pytest.mark.asyncio
@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
async def test_a_50_mb_body_is_rejected_after_reading_at_most_the_cap(declared: bool) -> None:
    stream = CountingStream()
    headers = {"Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(stream.total)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=stream, headers=headers)

    async with metering_http.HttpMeteringSource(
        "https://metering.example.test", transport=httpx.MockTransport(answer)
    ) as src:
        results = await src.fetch({"pool": LIMITS}, NOW)
    rejection = rejected(results)
    assert rejection.kind is Kind.MALFORMED
    assert rejection.message == (
        f"metering API response is larger than {bounds.MAX_METERING_RESPONSE_BYTES} bytes"
    )
    print(f"\n50 MB body ({'declared' if declared else 'streamed'}): read {stream.sent} bytes")
    assert stream.sent <= bounds.MAX_METERING_RESPONSE_BYTES + stream.chunk


# --- Prometheus ----------------------------------------------------------------------------------

QUERIES = metering_prometheus.SiteQueries(
    demand_kw='demand{site="pool"}', tank_energy_kwh='energy{site="pool"}'
)


def prom_answer(data: object, status: str = "success") -> dict[str, object]:
    return {"status": status, "data": data}


def vector(t: object = NOW - 15, value: object = "12") -> dict[str, object]:
    return {"resultType": "vector", "result": [{"metric": {}, "value": [t, value]}]}


async def prometheus_fetch(
    handler: Callable[[httpx.Request], httpx.Response],
) -> readings.ReadingResult:
    async with metering_prometheus.PrometheusMeteringSource(
        "http://prometheus.test", {"pool": QUERIES}, transport=httpx.MockTransport(handler)
    ) as src:
        return (await src.fetch({"pool": LIMITS}, NOW))["pool"]


def answering(demand: object) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        body = demand if query.startswith("demand") else prom_answer(vector(value="30"))
        return httpx.Response(200, json=body)

    return handler


@pytest.mark.asyncio
async def test_a_prometheus_sample_timestamp_of_minus_1e20_is_rejected_not_raised() -> None:
    result = await prometheus_fetch(answering(prom_answer(vector(t=-1e20))))
    assert isinstance(result, readings.Rejection)
    assert result.kind is Kind.MALFORMED
    assert result.message == (
        "PromQL for heat demand returned a sample: its sample time must be a time between "
        "2000 and 2100"
    )


@pytest.mark.asyncio
async def test_a_prometheus_scalar_result_is_its_value_not_2_series() -> None:
    scalar = prom_answer({"resultType": "scalar", "result": [NOW - 15, "12.5"]})
    result = await prometheus_fetch(answering(scalar))
    assert isinstance(result, readings.SiteReading), result
    assert result.demand_kw == 12.5


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            prom_answer({"resultType": "matrix", "result": []}),
            "PromQL for heat demand returned a range vector, expected an instant vector",
        ),
        (prom_answer({"resultType": "string", "result": [NOW, "x"]}), "returned a string"),
        (prom_answer(vector(value="1_000")), "not [time, value]"),
        (prom_answer(vector(value=12)), "not [time, value]"),
        (prom_answer(vector(t=True)), "without a time"),
        (prom_answer(vector(t=10**400)), "must be a time between 2000 and 2100"),
        (prom_answer(None, status="error"), "not a successful query result"),
        ([1, 2], "not a successful query result"),
    ],
    ids=[
        "matrix",
        "string",
        "underscored",
        "number value",
        "bool time",
        "huge time",
        "error",
        "list",
    ],
)
def test_prometheus_answers_are_parsed_strictly(answer: object, words: str) -> None:
    with pytest.raises(metering_prometheus.errors.MeteringMalformed) as err:
        metering_prometheus.parse_sample(answer, "heat demand")
    assert words in err.value.message


def test_prometheus_special_values_are_read_as_prometheus_writes_them() -> None:
    for text, expected in (("+Inf", math.inf), ("-Inf", -math.inf), ("1.5e3", 1500.0)):
        assert metering_prometheus.parse_sample(prom_answer(vector(value=text)), "x")[1] == expected
    assert math.isnan(metering_prometheus.parse_sample(prom_answer(vector(value="NaN")), "x")[1])


@pytest.mark.asyncio
async def test_a_50_mb_prometheus_body_is_rejected_after_reading_at_most_the_cap() -> None:
    stream = CountingStream()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=stream, headers={"Content-Type": "application/json"})

    result = await prometheus_fetch(handler)
    assert isinstance(result, readings.Rejection)
    assert result.message == (
        f"Prometheus response is larger than {bounds.MAX_METERING_RESPONSE_BYTES} bytes"
    )
    assert stream.sent <= bounds.MAX_METERING_RESPONSE_BYTES + stream.chunk


@pytest.mark.asyncio
async def test_a_slow_drip_prometheus_is_cut_at_the_timeout_and_leaves_no_thread() -> None:
    cycles = 5
    async with serve({"/api/v1/query": drip}) as url:
        threads_before = threading.active_count()
        took: list[float] = []
        for _ in range(cycles):
            async with metering_prometheus.PrometheusMeteringSource(
                url, {"pool": QUERIES}, timeout_s=1.0, retries=0
            ) as src:
                start = time.monotonic()
                results = await src.fetch({"pool": LIMITS}, NOW)
                took.append(time.monotonic() - start)
            assert rejected(results).message == (
                "Prometheus gave no complete answer for the query for heat demand within 1 s"
            )
        threads_after = threading.active_count()
        # The event loop's default executor (the planner's pool) has a worker free at once.
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        await asyncio.wait_for(loop.run_in_executor(None, time.monotonic), 3.0)
        executor_wait = time.monotonic() - start
    print(
        f"\nPrometheus slow drip cut after {', '.join(f'{t:.2f}' for t in took)} s "
        f"(timeout 1 s); threads {threads_before} before, {threads_after} after {cycles} "
        f"cycles; a pool worker in {executor_wait * 1000:.1f} ms"
    )
    assert threads_after == threads_before
    assert all(0.9 <= t < 4.0 for t in took)
