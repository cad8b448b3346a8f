"""Shared helpers of the metering tests: readings, limits, a scripted fake API, a tiny scenario.

Used by ``tests/test_metering_*.py`` only. Everything here is data or in-process fakes; the
tests that need a real socket bind to 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import types
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from heatshift import model
from heatshift.metering import readings
from heatshift.sim import scenario as scenario_mod

import builders

NOW = 1_700_000_000.0
"""The tests' Unix clock."""
STALENESS_S = 600.0
MAX_THERMAL_KW = 50.0
TANK_KWH = 80.0

LIMITS = readings.ReadingLimits(
    staleness_limit_s=STALENESS_S, max_thermal_kw=MAX_THERMAL_KW, tank_capacity_kwh=TANK_KWH
)


def raw_reading(site: str = "pool", *, age_s: float = 30.0, **overrides: Any) -> dict[str, Any]:
    """A valid wire reading observed ``age_s`` before :data:`NOW`; keyword args replace fields
    (``heatDemandKW=None`` removes the field)."""
    body: dict[str, Any] = {
        "siteId": site,
        "observedAt": readings.format_time(NOW - age_s),
        "heatDemandKW": 12.5,
        "tank": {"energyKWh": 40.0, "capacityKWh": TANK_KWH},
        "supplyTempC": 45.0,
        "returnTempC": 30.0,
        "offtakerAvailable": True,
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def validate(raw: object, site: str | None = "pool") -> readings.SiteReading | readings.Rejection:
    return readings.validate_reading(
        raw,
        now_s=NOW,
        staleness_limit_s=STALENESS_S,
        max_thermal_kw=MAX_THERMAL_KW,
        tank_capacity_kwh=TANK_KWH,
        site=site,
    )


def json_response(body: object, status: int = 200, **headers: str) -> httpx.Response:
    # json.dumps writes NaN as the bare token NaN, as a sloppy server would.
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeMeteringAPI:
    """An ``httpx.MockTransport`` handler: per path, a script of answers, then a default.

    ``script["/v1/sites/pool/reading"] = [httpx.ReadTimeout("slow"), response]`` answers the
    first request with a timeout and the second with ``response``; later requests get the
    default (a valid reading for the site, or 404). Every request is recorded.
    """

    def __init__(self, sites: Sequence[str] = ("pool", "flats")) -> None:
        self.sites = list(sites)
        self.script: dict[str, list[Step]] = defaultdict(list)
        self.requests: list[httpx.Request] = []

    def reading_path(self, site: str) -> str:
        return f"/v1/sites/{site}/reading"

    def calls(self, path: str) -> int:
        return sum(1 for r in self.requests if r.url.path == path)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        steps = self.script.get(request.url.path)
        if steps:
            step = steps.pop(0)
            if isinstance(step, Exception):
                raise step
            if isinstance(step, httpx.Response):
                return step
            return step(request)
        for site in self.sites:
            if request.url.path == self.reading_path(site):
                return json_response(raw_reading(site))
        if request.url.path == "/v1/readings":
            return json_response({"readings": [raw_reading(s) for s in self.sites]})
        return json_response({"code": "NotFound", "message": "no such path"}, 404)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class RecordingSleep:
    """An async sleep that returns at once and remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class FakeClock:
    """A wall clock that moves only when told."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def tiny_scenario(
    demand_kw: Mapping[str, Sequence[float]] | None = None,
    *,
    step_s: float = 900.0,
    initial_tank_kwh: float = 10.0,
) -> scenario_mod.Scenario:
    """Two sites without standing loss: ``pool`` (demand 0 by default, so its tank only fills)
    and ``flats`` (demand 20 kW); 4 steps of 15 min."""
    demand_kw = demand_kw or {"pool": [0.0] * 4, "flats": [20.0] * 4}
    sites = (
        builders.site("pool", max_thermal_kw=MAX_THERMAL_KW, tank_kwh=TANK_KWH, loss_per_hour=0.0),
        builders.site(
            "flats",
            max_thermal_kw=MAX_THERMAL_KW,
            tank_kwh=TANK_KWH,
            loss_per_hour=0.0,
            kind=model.OfftakerKind.RESIDENTIAL,
        ),
    )
    steps = max(len(v) for v in demand_kw.values())
    return scenario_mod.Scenario(
        name="tiny",
        source=None,
        duration_s=steps * step_s,
        step_s=step_s,
        sites=sites,
        initial_tank_kwh=types.MappingProxyType({s.name: initial_tank_kwh for s in sites}),
        demand=types.MappingProxyType(
            {
                name: model.DemandSeries(start_s=0.0, step_s=step_s, kw=tuple(kw))
                for name, kw in demand_kw.items()
            }
        ),
        jobs=(),
    )


def is_nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)
