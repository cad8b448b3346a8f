"""Metering for LeafSites: grouping by endpoint, tokens from Secrets, and every failure as a
per-site rejection that never blocks planning."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

import pytest

import kube_fixtures as kf
from heatshift import resources
from heatshift.kube import meters
from heatshift.metering import readings, source


class ScriptedSource:
    """A metering source that answers from a script (or hangs, or breaks)."""

    def __init__(self, answers: Mapping[str, readings.ReadingResult], *, hang: bool = False):
        self.answers = answers
        self.hang = hang
        self.asked: list[str] = []
        self.closed = False

    async def fetch(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.SiteReading | readings.Rejection]:
        self.asked.extend(sites)
        if self.hang:
            await asyncio.sleep(60)
        if "boom" in sites:
            raise RuntimeError("bug in a source")
        return {s: self.answers[s] for s in sites if s in self.answers}

    async def aclose(self) -> None:
        self.closed = True


def _reading(site: str) -> readings.SiteReading:
    return readings.SiteReading(
        site=site,
        observed_at_s=kf.NOW,
        demand_kw=5.0,
        tank_energy_kwh=1.0,
        tank_capacity_kwh=80.0,
        tank_source="energy",
    )


def _site(name: str, **kwargs: Any) -> resources.LeafSite:
    return kf.parsed_site(kf.leafsite(name, **kwargs))


class Factory:
    def __init__(self, **sources: ScriptedSource) -> None:
        self.sources = sources
        self.endpoints: list[meters.Endpoint] = []

    def __call__(
        self, endpoint: meters.Endpoint, queries: Mapping[str, resources.PrometheusQueries]
    ) -> source.MeteringSource:
        self.endpoints.append(endpoint)
        return self.sources[endpoint.url.removeprefix("http://")]


@pytest.mark.asyncio
async def test_sites_sharing_an_endpoint_share_one_source_and_map_back_by_site_id() -> None:
    api = kf.FakeApi()
    src = ScriptedSource({"m-1": _reading("m-1"), "m-2": _reading("m-2")})
    factory = Factory(a=src)
    sites = [
        _site("pool", url="http://a", site_id="m-1"),
        _site("flats", url="http://a", site_id="m-2"),
    ]

    got = await meters.fetch_results(api, sites, kf.NOW, timeout_s=5, factory=factory)

    assert len(factory.endpoints) == 1 and src.closed
    assert sorted(src.asked) == ["m-1", "m-2"]
    assert isinstance(got["pool"], readings.SiteReading) and got["pool"].site == "m-1"
    assert isinstance(got["flats"], readings.SiteReading)


@pytest.mark.asyncio
async def test_a_hanging_source_times_out_into_rejections() -> None:
    factory = Factory(a=ScriptedSource({}, hang=True), b=ScriptedSource({"b": _reading("b")}))
    sites = [_site("slow", url="http://a"), _site("b", url="http://b")]

    got = await meters.fetch_results(kf.FakeApi(), sites, kf.NOW, timeout_s=0.1, factory=factory)

    slow = got["slow"]
    assert isinstance(slow, readings.Rejection)
    assert slow.kind is readings.RejectionKind.UNAVAILABLE and "0.1s" in slow.message
    assert isinstance(got["b"], readings.SiteReading)


@pytest.mark.asyncio
async def test_a_broken_source_or_a_missing_answer_is_a_rejection() -> None:
    factory = Factory(a=ScriptedSource({}))
    sites = [_site("boom", url="http://a"), _site("quiet", url="http://a")]

    got = await meters.fetch_results(kf.FakeApi(), sites, kf.NOW, timeout_s=5, factory=factory)

    assert isinstance(got["boom"], readings.Rejection)
    assert "bug in a source" in got["boom"].message
    assert isinstance(got["quiet"], readings.Rejection)


@pytest.mark.asyncio
async def test_a_source_that_cannot_be_built_rejects_its_sites() -> None:
    def factory(
        endpoint: meters.Endpoint, queries: Mapping[str, resources.PrometheusQueries]
    ) -> source.MeteringSource:
        raise ValueError("bearer token is empty")

    got = await meters.fetch_results(
        kf.FakeApi(), [_site("pool")], kf.NOW, timeout_s=5, factory=factory
    )
    assert isinstance(got["pool"], readings.Rejection)
    assert "bearer token is empty" in got["pool"].message


def _with_token(name: str) -> resources.LeafSite:
    body = kf.leafsite(name, url="http://a")
    body["spec"]["metering"]["http"]["tokenSecretRef"] = {
        "name": "meter-token",
        "namespace": "heatshift",
        "key": "token",
    }
    return kf.parsed_site(body)


def _secret(data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "meter-token", "namespace": "heatshift"},
        "data": data,
    }


@pytest.mark.asyncio
async def test_the_token_comes_from_the_secret_without_its_newline() -> None:
    api = kf.FakeApi()
    kf.store(api, _secret({"token": base64.b64encode(b"s3cret\n").decode()}))
    factory = Factory(a=ScriptedSource({"pool": _reading("pool")}))

    got = await meters.fetch_results(
        api, [_with_token("pool")], kf.NOW, timeout_s=5, factory=factory
    )

    assert factory.endpoints[0].token == "s3cret"
    assert isinstance(got["pool"], readings.SiteReading)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (None, "unreadable"),
        ({"other": "eA=="}, "has no key 'token'"),
        ({"token": "%%%"}, "not valid"),
    ],
)
@pytest.mark.asyncio
async def test_an_unusable_token_secret_rejects_the_site_in_words(
    data: dict[str, str] | None, words: str
) -> None:
    api = kf.FakeApi()
    if data is not None:
        kf.store(api, _secret(data))

    got = await meters.fetch_results(
        api, [_with_token("pool")], kf.NOW, timeout_s=5, factory=Factory()
    )

    rejection = got["pool"]
    assert isinstance(rejection, readings.Rejection)
    assert words in rejection.message and "meter-token" in rejection.message


def test_limits_follow_the_site_configuration() -> None:
    limits = meters.limits_for(_site("pool", max_thermal_kw=30.0, tank_kwh=40.0).spec)
    assert (limits.staleness_limit_s, limits.max_thermal_kw, limits.tank_capacity_kwh) == (
        600.0,
        30.0,
        40.0,
    )


def test_the_default_factory_builds_the_real_clients() -> None:
    from heatshift.metering import http, prometheus

    http_source = meters.default_source(meters.Endpoint("http", "http://m.invalid", 1.0), {})
    assert isinstance(http_source, http.HttpMeteringSource)
    asyncio.run(http_source.aclose())
    queries = resources.PrometheusQueries.model_validate(
        {"demandKW": "demand", "tankEnergyKWh": "tank"}
    )
    prom_source = meters.default_source(
        meters.Endpoint("prometheus", "http://p.invalid", 1.0), {"pool": queries}
    )
    assert isinstance(prom_source, prometheus.PrometheusMeteringSource)
    asyncio.run(prom_source.aclose())
