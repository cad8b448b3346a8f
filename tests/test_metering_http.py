"""The metering API client against a mocked transport: every failure stays with its site.

Each case breaks one site (``pool``) and checks its rejection's kind and words, the number of
requests made (retries counted) and that the other site (``flats``) in the same fetch is fine.
Sleeps are recorded, not slept.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from heatshift import bounds
from heatshift.metering import http as metering_http
from heatshift.metering import readings
from metering_fixtures import (
    LIMITS,
    NOW,
    FakeMeteringAPI,
    RecordingSleep,
    json_response,
    raw_reading,
)

Kind = readings.RejectionKind
SITES = {"pool": LIMITS, "flats": LIMITS}
POOL = "/v1/sites/pool/reading"
JSON = "application/json"


def source(
    api: FakeMeteringAPI, sleep: RecordingSleep | None = None, **options: Any
) -> metering_http.HttpMeteringSource:
    return metering_http.HttpMeteringSource(
        "https://metering.example.test",
        transport=api.transport(),
        rng=random.Random(7),
        sleep=sleep or RecordingSleep(),
        **options,
    )


async def fetch(api: FakeMeteringAPI, **options: Any) -> dict[str, readings.ReadingResult]:
    async with source(api, **options) as src:
        return await src.fetch(SITES, now_s=NOW)


def rejected(results: dict[str, readings.ReadingResult], site: str = "pool") -> readings.Rejection:
    result = results[site]
    assert isinstance(result, readings.Rejection), result
    return result


def assert_flats_fine(results: dict[str, readings.ReadingResult]) -> None:
    assert isinstance(results["flats"], readings.SiteReading), results["flats"]


@pytest.mark.asyncio
async def test_valid_readings_for_every_site() -> None:
    api = FakeMeteringAPI()
    results = await fetch(api)
    assert set(results) == {"pool", "flats"}
    for site, result in results.items():
        assert isinstance(result, readings.SiteReading)
        assert result.site == site
    assert api.calls(POOL) == 1
    request = api.requests[0]
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("heatshift/")
    assert "Authorization" not in request.headers


@pytest.mark.asyncio
async def test_a_timeout_then_success_is_retried_after_a_jittered_backoff() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [httpx.ReadTimeout("slow meter")]
    sleep = RecordingSleep()
    results = await fetch(api, sleep=sleep)
    assert isinstance(results["pool"], readings.SiteReading)
    assert api.calls(POOL) == 2
    assert len(sleep.delays) == 1
    assert 0.25 <= sleep.delays[0] <= 0.5  # first retry: between half the base and the base
    assert_flats_fine(results)


@pytest.mark.asyncio
async def test_5xx_until_the_retries_run_out() -> None:
    api = FakeMeteringAPI()
    down = json_response({"code": "Unavailable", "message": "meter offline"}, 503)
    api.script[POOL] = [down] * 10
    sleep = RecordingSleep()
    results = await fetch(api, sleep=sleep, retries=3)
    rejection = rejected(results)
    assert rejection.kind is Kind.UNAVAILABLE
    assert rejection.message == (
        "metering API answered HTTP 503: meter offline for site 'pool' (4 attempts)"
    )
    assert api.calls(POOL) == 4
    # Exponential: each wait lies in [ceiling/2, ceiling] with ceilings 0.5, 1, 2.
    assert len(sleep.delays) == 3
    for delay, ceiling in zip(sleep.delays, [0.5, 1.0, 2.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert_flats_fine(results)


@pytest.mark.asyncio
async def test_backoff_is_capped() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [json_response({}, 500)] * 10
    sleep = RecordingSleep()
    await fetch(api, sleep=sleep, retries=6, backoff_base_s=1.0, backoff_max_s=3.0)
    assert len(sleep.delays) == 6
    assert max(sleep.delays) <= 3.0


@pytest.mark.asyncio
async def test_the_jitter_follows_the_injected_random_source() -> None:
    delays = []
    for _ in range(2):
        api = FakeMeteringAPI()
        api.script[POOL] = [json_response({}, 502)] * 5
        sleep = RecordingSleep()
        await fetch(api, sleep=sleep)
        delays.append(sleep.delays)
    assert delays[0] == delays[1]


@pytest.mark.asyncio
async def test_429_honours_retry_after() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [json_response({}, 429, **{"Retry-After": "4"})]
    sleep = RecordingSleep()
    results = await fetch(api, sleep=sleep)
    assert isinstance(results["pool"], readings.SiteReading)
    assert sleep.delays == [4.0]


@pytest.mark.asyncio
async def test_connect_errors_until_the_retries_run_out() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [httpx.ConnectError("connection refused")] * 3
    results = await fetch(api, retries=2)
    rejection = rejected(results)
    assert rejection.kind is Kind.UNAVAILABLE
    assert "unreachable (connection refused)" in rejection.message
    assert "(3 attempts)" in rejection.message
    assert api.calls(POOL) == 3
    assert_flats_fine(results)


@pytest.mark.asyncio
async def test_4xx_is_not_retried() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [json_response({"code": "BadRequest", "message": "bad site id"}, 400)]
    sleep = RecordingSleep()
    results = await fetch(api, sleep=sleep)
    rejection = rejected(results)
    assert rejection.kind is Kind.UNAVAILABLE
    assert rejection.message == (
        "metering API rejected the request for site 'pool' (HTTP 400): bad site id"
    )
    assert api.calls(POOL) == 1
    assert sleep.delays == []
    assert_flats_fine(results)


@pytest.mark.asyncio
async def test_an_unknown_site_is_missing() -> None:
    api = FakeMeteringAPI(sites=["flats"])
    results = await fetch(api)
    rejection = rejected(results)
    assert rejection.kind is Kind.MISSING
    assert rejection.message.startswith("metering API has no site 'pool' (HTTP 404)")
    assert api.calls(POOL) == 1
    assert_flats_fine(results)


def needs_token(expected: str) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"Bearer {expected}":
            return json_response({"code": "Unauthorized", "message": "invalid bearer token"}, 401)
        return json_response(raw_reading("pool"))

    return answer


@pytest.mark.asyncio
async def test_a_bad_token_is_refused_without_retrying() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [needs_token("s3cret")] * 5
    results = await fetch(api, token="wrong")
    rejection = rejected(results)
    assert rejection.kind is Kind.UNAVAILABLE
    assert rejection.message == (
        "metering API refused the bearer token (HTTP 401): invalid bearer token"
    )
    assert "wrong" not in rejection.message
    assert api.calls(POOL) == 1
    assert api.requests[0].headers["Authorization"] == "Bearer wrong"
    assert_flats_fine(results)


@pytest.mark.asyncio
async def test_a_missing_token_says_none_is_configured() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [needs_token("s3cret")]
    rejection = rejected(await fetch(api))
    assert "requires a bearer token (HTTP 401) and none is configured" in rejection.message


@pytest.mark.asyncio
async def test_the_right_token_is_sent() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [needs_token("s3cret")]
    results = await fetch(api, token="s3cret")
    assert isinstance(results["pool"], readings.SiteReading)


@pytest.mark.asyncio
async def test_malformed_json_is_rejected_as_malformed() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [
        httpx.Response(200, content=b'{"siteId": "pool", "heatDem', headers={"Content-Type": JSON})
    ]
    results = await fetch(api)
    rejection = rejected(results)
    assert rejection.kind is Kind.MALFORMED
    assert rejection.message.startswith(
        "metering API's answer for site 'pool' is unusable: it is not valid JSON"
    )
    assert api.calls(POOL) == 1
    assert_flats_fine(results)


@pytest.mark.asyncio
async def test_an_oversized_answer_is_malformed() -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [
        httpx.Response(200, content=b" " * (bounds.MAX_METERING_RESPONSE_BYTES + 1))
    ]
    rejection = rejected(await fetch(api))
    assert rejection.kind is Kind.MALFORMED
    assert "larger than" in rejection.message


BAD_READINGS: list[tuple[str, dict[str, Any], Kind, str]] = [
    ("missing field", raw_reading(heatDemandKW=None), Kind.MISSING, "heat demand is missing"),
    ("NaN", raw_reading(heatDemandKW=math.nan), Kind.NAN, "heat demand is NaN"),
    ("negative", raw_reading(heatDemandKW=-2.5), Kind.NEGATIVE, "heat demand is negative"),
    (
        "demand out of range",
        raw_reading(heatDemandKW=80.0),
        Kind.OUT_OF_RANGE,
        "heat demand 80 kW exceeds the offtaker's rating 50 kW",
    ),
    (
        "tank out of range",
        raw_reading(tank={"energyKWh": 95.0, "capacityKWh": 80.0}),
        Kind.OUT_OF_RANGE,
        "tank energy 95 kWh exceeds capacity 80 kWh",
    ),
    ("stale", raw_reading(age_s=14 * 60), Kind.STALE, "reading is 14 min old, limit 10 min"),
    (
        "offtaker unavailable",
        raw_reading(offtakerAvailable=False),
        Kind.UNAVAILABLE,
        "offtaker reports it cannot take heat now",
    ),
    ("another site's reading", raw_reading("flats"), Kind.MALFORMED, "is for site 'flats'"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "kind", "words"), [c[1:] for c in BAD_READINGS], ids=[c[0] for c in BAD_READINGS]
)
async def test_a_bad_reading_rejects_only_its_site(
    body: dict[str, Any], kind: Kind, words: str
) -> None:
    api = FakeMeteringAPI()
    api.script[POOL] = [json_response(body)]
    results = await fetch(api)
    rejection = rejected(results)
    assert rejection.kind is kind
    assert words in rejection.message
    assert api.calls(POOL) == 1  # a bad value is not retried: asking again gives the same
    assert_flats_fine(results)


@pytest.mark.asyncio
async def test_bulk_fetches_all_sites_with_one_request() -> None:
    api = FakeMeteringAPI()
    api.script["/v1/readings"] = [
        json_response(
            {
                "readings": [raw_reading("flats"), raw_reading("pool", heatDemandKW=math.nan)],
                "unavailable": [
                    {"siteId": "greenhouse", "code": "Unavailable", "message": "meter offline"}
                ],
            }
        )
    ]
    sites = {"pool": LIMITS, "flats": LIMITS, "greenhouse": LIMITS, "office": LIMITS}
    async with source(api, bulk=True) as src:
        results = await src.fetch(sites, now_s=NOW)
    assert len(api.requests) == 1
    assert_flats_fine(results)
    assert rejected(results, "pool").kind is Kind.NAN
    greenhouse = rejected(results, "greenhouse")
    assert greenhouse.kind is Kind.UNAVAILABLE
    assert greenhouse.message.endswith("meter offline")
    office = rejected(results, "office")
    assert office.kind is Kind.MISSING
    assert office.message == "metering API's reading list has no site 'office'"


@pytest.mark.asyncio
async def test_a_failed_bulk_request_falls_back_to_site_by_site() -> None:
    api = FakeMeteringAPI()
    api.script["/v1/readings"] = [json_response({"readings": "soon"})]
    api.script[POOL] = [json_response(raw_reading(heatDemandKW=math.nan))]
    results = await fetch(api, bulk=True)
    assert rejected(results).kind is Kind.NAN
    assert_flats_fine(results)
    assert api.calls("/v1/readings") == 1
    assert api.calls(POOL) == 1


@pytest.mark.asyncio
async def test_a_bulk_request_refused_for_its_token_rejects_every_site_at_once() -> None:
    api = FakeMeteringAPI()
    api.script["/v1/readings"] = [needs_token("s3cret")]
    results = await fetch(api, bulk=True, token="wrong")
    assert {rejected(results, s).message for s in SITES} == {
        "metering API refused the bearer token (HTTP 401): invalid bearer token"
    }
    assert len(api.requests) == 1


@pytest.mark.asyncio
async def test_a_base_url_with_the_version_reaches_the_same_paths() -> None:
    api = FakeMeteringAPI()
    async with metering_http.HttpMeteringSource(
        "https://metering.example.test/v1/", transport=api.transport()
    ) as src:
        results = await src.fetch({"pool": LIMITS}, now_s=NOW)
    assert isinstance(results["pool"], readings.SiteReading)
    assert str(api.requests[0].url) == "https://metering.example.test/v1/sites/pool/reading"


@pytest.mark.asyncio
async def test_site_ids_are_escaped_in_the_path() -> None:
    api = FakeMeteringAPI()
    async with source(api) as src:
        results = await src.fetch({"a/b c": LIMITS}, now_s=NOW)
    assert rejected(results, "a/b c").kind is Kind.MISSING
    assert api.requests[-1].url.raw_path == b"/v1/sites/a%2Fb%20c/reading"


@pytest.mark.asyncio
async def test_nothing_to_fetch_makes_no_request() -> None:
    api = FakeMeteringAPI()
    async with source(api) as src:
        assert await src.fetch({}, now_s=NOW) == {}
    assert api.requests == []


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("ftp://meter", {}),
        ("https://", {}),
        ("https://meter?x=1", {}),
        ("https://meter", {"token": "abc\n"}),
        ("https://meter", {"token": ""}),
        ("https://meter", {"timeout_s": 0}),
        ("https://meter", {"retries": -1}),
    ],
)
def test_bad_configuration_fails_at_construction(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        metering_http.HttpMeteringSource(url, **options)
