"""The reference metering API server: a scenario's buildings and tanks, served per the contract.

Owns ``heatshift metering-sim``: an aiohttp server that implements ``openapi.yaml`` for the
sites of a scenario (:mod:`heatshift.sim.scenario`). Each site's heat demand follows the
scenario's demand series at the server's clock (scenario time = start offset + (wall clock -
start) x speed; past the scenario's end the series starts over), capped at the offtaker's
rating; its tank evolves with :func:`heatshift.thermal.exchange_heat` from the IT power running
there, which comes from a pluggable :class:`LoadSource` (idle power unless told otherwise).
Each site has a heat meter whose cumulative registers (IT energy, heat delivered, heat dumped,
kWh) integrate that same power over time, so they advance with the load placed on the site.

Besides the contract (``/v1/sites``, ``/v1/sites/{siteId}/reading``, ``/v1/readings``):

- ``POST /v1/admin/faults`` ``{"site": "...", "mode": "..."}`` (``nan``, ``negative``,
  ``stale``, ``down``, ``unavailable``, ``backwards``) makes a site's readings faulty until
  reset with ``none`` (for tests and e2e).
- ``POST /v1/admin/meter`` ``{"site": "...", "action": "reset|replace"}`` resets a site's
  registers to 0, or replaces its meter (a new ``meterId``, registers from 0).
- ``POST /v1/admin/load`` ``{"site": "...", "watts": 12000}`` sets a site's IT power, overriding
  the load source; ``"watts": null`` hands it back to the load source.
- ``GET /metrics``: the readings as Prometheus gauges (``heatshift_meter_heat_demand_kw{site}``,
  ``heatshift_meter_tank_energy_kwh{site}``, ...), from a registry of its own, faults included.
- ``GET /openapi.yaml`` (the contract) and ``GET /healthz``.

With a token, every ``/v1/`` path (admin included) needs ``Authorization: Bearer <token>``;
``/metrics`` and ``/healthz`` stay open, as Prometheus and probes expect. Binds to 127.0.0.1
unless told otherwise.

Called by the CLI (:func:`add_arguments`, :func:`run_from_args`), the e2e harness and tests
(:class:`MeteringServer`, with an injected clock). With ``--kubeconfig`` the load comes from
the cluster (:class:`heatshift.kube.cluster_load.ClusterLoad`: the pods running at each
LeafSite), so the tanks heat where the operator placed work; it lives with the Kubernetes
adapter, and this module only defines the protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import hmac
import importlib.resources
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Protocol

from aiohttp import web
from prometheus_client import exposition, metrics_core
from prometheus_client import registry as prom_registry

from heatshift import argtypes, bounds, model, thermal
from heatshift.metering import readings
from heatshift.sim import scenario as scenario_mod

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_TICK_S = 1.0
"""How often (wall seconds) the tanks are brought up to date between requests, so the load
of each moment is the one that heats them."""
WATER_KWH_PER_M3_K = 1.163
"""Heat one cubic metre of water carries per kelvin: 1000 kg x 4.186 kJ/(kg K) / 3600."""
STALE_AGE_S = 86400.0
"""How old a reading claims to be under the ``stale`` fault: older than any sane limit."""
MAX_CATCH_UP_S = 30 * 86400.0
"""Scenario time one update plays at most; beyond it the tanks have long settled, so the rest
is skipped rather than stepped through (a paused process, a huge ``--speed``)."""
MAX_FORECAST_REGROUP = 60
"""Most scenario steps merged into one forecast value (or values one step is split into) to
keep the forecast's step within the contract's minute-to-day range; past it, no forecast."""
TOKEN_ENV = "HEATSHIFT_METERING_TOKEN"
"""Environment variable with the bearer token, so it need not be on the command line."""

# Nominal (supply, return) temperatures per kind of offtaker, °C: a pool runs cool, a district
# heating loop hot. Supply rises with the load on the exchanger.
_CIRCUIT_TEMPS_C: Mapping[model.OfftakerKind, tuple[float, float]] = {
    model.OfftakerKind.POOL: (40.0, 30.0),
    model.OfftakerKind.RESIDENTIAL: (60.0, 40.0),
    model.OfftakerKind.GREENHOUSE: (50.0, 30.0),
    model.OfftakerKind.DISTRICT_HEATING: (75.0, 45.0),
    model.OfftakerKind.OFFICE: (45.0, 35.0),
}


class LoadSource(Protocol):
    """Where a site's IT power comes from: total watts drawn there now, idle included."""

    async def it_power_watts(self, site: str) -> float: ...


class ConstantLoad:
    """Each site draws a fixed power; :meth:`idle` makes every site draw its idle power."""

    def __init__(self, watts: Mapping[str, float], default_watts: float = 0.0) -> None:
        self._watts = dict(watts)
        self._default = default_watts

    @classmethod
    def idle(cls, sites: Iterable[model.Site]) -> ConstantLoad:
        """Every site at its idle power: a fleet with nothing running."""
        return cls({s.name: s.power.idle_watts for s in sites})

    async def it_power_watts(self, site: str) -> float:
        return self._watts.get(site, self._default)


class SettableLoad:
    """Power per site, set from code (tests, the simulator); unset sites draw ``default``."""

    def __init__(self, initial: Mapping[str, float] | None = None, default_watts: float = 0.0):
        self._watts: dict[str, float] = dict(initial or {})
        self._default = default_watts

    def set(self, site: str, watts: float) -> None:
        if not math.isfinite(watts) or watts < 0:
            raise ValueError(f"watts must be finite and >= 0, got {watts}")
        self._watts[site] = watts

    async def it_power_watts(self, site: str) -> float:
        return self._watts.get(site, self._default)


class FaultMode(enum.StrEnum):
    """What is wrong with a site's readings, on purpose."""

    NONE = "none"
    NAN = "nan"  # heat demand is NaN
    NEGATIVE = "negative"  # heat demand is negative
    STALE = "stale"  # observedAt a day in the past
    DOWN = "down"  # no reading at all: 503 for the site, absent from /v1/readings and /metrics
    UNAVAILABLE = "unavailable"  # offtakerAvailable is false
    BACKWARDS = "backwards"  # the registers read half their value: a meter going backwards


class MeterAction(enum.StrEnum):
    """What can be done to a site's meter, once."""

    RESET = "reset"  # its registers restart from 0, same meter id
    REPLACE = "replace"  # a new meter (a new id), registers from 0


@dataclasses.dataclass
class _Meter:
    """One site's simulated state: the tank, the load on it and its injected fault."""

    site: model.Site
    demand: model.DemandSeries
    energy_kwh: float
    it_watts: float = 0.0
    override_watts: float | None = None
    delivered_kwh: float = 0.0
    dumped_kwh: float = 0.0
    it_energy_kwh: float = 0.0
    delivered_kw: float = 0.0
    """Heat delivered over the last update, kW (what the flow is derived from)."""
    meter_serial: int = 1
    fault: FaultMode = FaultMode.NONE

    @property
    def meter_id(self) -> str:
        return f"{self.site.name}-meter-{self.meter_serial}"


class UnknownSite(KeyError):
    """A site the scenario does not have."""


class MeterSimulation:
    """The scenario's sites on a clock: demand from the series, tanks from the physics.

    No HTTP here: :class:`MeteringServer` serves it, tests drive it directly.
    """

    def __init__(
        self,
        scenario: scenario_mod.Scenario,
        *,
        load: LoadSource | None = None,
        speed: float = 1.0,
        clock: Callable[[], float] = time.time,
        start_offset_s: float = 0.0,
        forecast_horizon_s: float = 0.0,
    ) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be positive, got {speed}")
        if forecast_horizon_s < 0:
            raise ValueError(f"forecast horizon must be >= 0, got {forecast_horizon_s}")
        self.scenario = scenario
        self.speed = speed
        self._load: LoadSource = load if load is not None else ConstantLoad.idle(scenario.sites)
        self._clock = clock
        self._forecast_horizon_s = forecast_horizon_s
        self._start_wall_s = clock()
        self._start_offset_s = start_offset_s
        self._wall_s = self._start_wall_s  # the wall time the state below is at
        self._t_s = start_offset_s  # the scenario time the state below is at
        self._lock = asyncio.Lock()
        self._meters: dict[str, _Meter] = {}
        for site in scenario.sites:
            demand = scenario.demand.get(site.name) or model.DemandSeries(
                start_s=0.0, step_s=scenario.step_s, kw=(0.0,)
            )
            energy = scenario.initial_tank_kwh.get(site.name, 0.0)
            self._meters[site.name] = _Meter(
                site=site,
                demand=demand,
                energy_kwh=min(max(energy, 0.0), site.tank.capacity_kwh),
                it_watts=site.power.idle_watts,
            )

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(self._meters)

    @property
    def scenario_time_s(self) -> float:
        """The scenario time of the last update."""
        return self._t_s

    def _meter(self, site: str) -> _Meter:
        meter = self._meters.get(site)
        if meter is None:
            raise UnknownSite(site)
        return meter

    def _demand_kw(self, meter: _Meter, t_s: float) -> float:
        """Capped demand at scenario time ``t_s``; the series repeats past its end."""
        duration = self.scenario.duration_s
        t = t_s % duration if duration > 0 else t_s
        return thermal.capped_demand_kw(meter.site, meter.demand.value_at(t))

    async def _refresh_load(self) -> None:
        for name, meter in self._meters.items():
            if meter.override_watts is not None:
                meter.it_watts = meter.override_watts
                continue
            try:
                watts = await self._load.it_power_watts(name)
            except Exception:  # a pluggable source may fail any way; keep the last figure
                logger.warning("metering-sim load source failed site=%s", name, exc_info=True)
                continue
            if math.isfinite(watts) and watts >= 0:
                meter.it_watts = watts

    async def advance(self) -> None:
        """Bring every tank up to the clock's time, with the load of now since the last update."""
        async with self._lock:
            wall = self._clock()
            target = self._start_offset_s + (wall - self._start_wall_s) * self.speed
            if target > self._t_s:
                await self._refresh_load()
                t = max(self._t_s, target - MAX_CATCH_UP_S)
                step = self.scenario.step_s
                while t < target - 1e-9:
                    # Chunks end at step boundaries, so demand is constant within each.
                    boundary = (math.floor(t / step + 1e-9) + 1) * step
                    end = min(boundary, target)
                    hours = (end - t) / model.SECONDS_PER_HOUR
                    for meter in self._meters.values():
                        meter.it_energy_kwh += meter.it_watts / 1000.0 * hours
                        flows = thermal.exchange_heat(
                            meter.site.tank,
                            meter.energy_kwh,
                            thermal.recovered_heat_kw(meter.site, meter.it_watts) * hours,
                            self._demand_kw(meter, t) * hours,
                            hours,
                        )
                        meter.energy_kwh = flows.energy_after_kwh
                        meter.delivered_kwh += flows.delivered_kwh
                        meter.dumped_kwh += flows.dumped_kwh
                        meter.delivered_kw = flows.delivered_kwh / hours if hours > 0 else 0.0
                    t = end
                self._t_s = target
            self._wall_s = max(self._wall_s, wall)

    async def set_fault(self, site: str, mode: FaultMode) -> None:
        meter = self._meter(site)
        await self.advance()
        meter.fault = mode

    async def set_load(self, site: str, watts: float | None) -> None:
        """Override a site's IT power from now on; None hands it back to the load source."""
        meter = self._meter(site)
        if watts is not None and (not math.isfinite(watts) or watts < 0):
            raise ValueError(f"watts must be finite and >= 0, got {watts}")
        await self.advance()  # the time so far ran at the old load
        meter.override_watts = watts
        if watts is not None:
            meter.it_watts = watts

    async def act_on_meter(self, site: str, action: MeterAction) -> None:
        """Reset a site's registers to 0, or put in a new meter (a new id, from 0)."""
        meter = self._meter(site)
        await self.advance()  # the time so far is counted on the old registers
        meter.it_energy_kwh = meter.delivered_kwh = meter.dumped_kwh = 0.0
        if action is MeterAction.REPLACE:
            meter.meter_serial += 1

    def registers(self, site: str) -> readings.RegistersPayload:
        """The site's cumulative registers as of the last update, with its fault applied."""
        meter = self._meter(site)
        scale = 0.5 if meter.fault is FaultMode.BACKWARDS else 1.0
        return {
            "meterId": meter.meter_id,
            "heatDeliveredKWh": round(meter.delivered_kwh * scale, 6),
            "itEnergyKWh": round(meter.it_energy_kwh * scale, 6),
            "heatDumpedKWh": round(meter.dumped_kwh * scale, 6),
        }

    def is_down(self, site: str) -> bool:
        return self._meter(site).fault is FaultMode.DOWN

    def reading(self, site: str) -> readings.ReadingPayload:
        """The site's reading as of the last update, with its fault applied (not ``down``)."""
        meter = self._meter(site)
        demand = self._demand_kw(meter, self._t_s)
        supply_c, return_c = _CIRCUIT_TEMPS_C.get(meter.site.offtaker.kind, (55.0, 35.0))
        load_fraction = demand / meter.site.offtaker.max_thermal_kw
        supply_c = return_c + (supply_c - return_c) * min(1.0, max(0.2, load_fraction))
        observed = self._wall_s
        available = True
        if meter.fault is FaultMode.NAN:
            demand = math.nan
        elif meter.fault is FaultMode.NEGATIVE:
            demand = -(demand + 1.0)
        elif meter.fault is FaultMode.STALE:
            observed -= STALE_AGE_S
        elif meter.fault is FaultMode.UNAVAILABLE:
            available = False
        payload: readings.ReadingPayload = {
            "siteId": site,
            "observedAt": readings.format_time(observed),
            "heatDemandKW": demand,
            "tank": {
                "energyKWh": round(meter.energy_kwh, 6),
                "capacityKWh": meter.site.tank.capacity_kwh,
            },
            "supplyTempC": round(supply_c, 2),
            "returnTempC": return_c,
            "offtakerAvailable": available,
            # Water carries 1.163 kWh per m³ and kelvin: the flow that moves the heat delivered.
            "flowM3PerH": round(
                meter.delivered_kw / (WATER_KWH_PER_M3_K * (supply_c - return_c)), 4
            )
            if supply_c > return_c
            else 0.0,
            "registers": self.registers(site),
        }
        forecast = self._forecast(meter) if self._forecast_horizon_s > 0 else None
        if forecast is not None:
            payload["forecast"] = forecast
        return payload

    def _forecast(self, meter: _Meter) -> readings.ForecastPayload | None:
        """The scenario's own demand ahead (a perfect forecast), on the wall clock.

        Within the contract's bounds whatever the speed: scenario steps shorter than a minute
        of wall time are merged (their mean), one longer than a day is split, and no forecast
        has more than ``MAX_SERIES_SAMPLES`` values. None at a speed that would need more
        than :data:`MAX_FORECAST_REGROUP` steps per value (or values per step)."""
        step = self.scenario.step_s
        first = math.floor(self._t_s / step + 1e-9) * step
        start_wall = self._wall_s - (self._t_s - first) / self.speed
        steps = max(1, math.ceil(self._forecast_horizon_s / step))
        wall_step = step / self.speed
        merge = max(1, math.ceil(bounds.FORECAST_STEP.low_s / wall_step - 1e-9))
        split = max(1, math.ceil(wall_step / bounds.FORECAST_STEP.high_s - 1e-9))
        if merge > MAX_FORECAST_REGROUP or split > MAX_FORECAST_REGROUP:
            return None
        demand: list[float] = []
        for k in range(0, steps, merge):
            chunk = [self._demand_kw(meter, first + (k + j) * step) for j in range(merge)]
            demand.extend([sum(chunk) / merge] * split)
            if len(demand) >= bounds.MAX_SERIES_SAMPLES:
                break
        return {
            "start": readings.format_time(start_wall),
            "stepSeconds": wall_step * merge / split,
            "demandKW": demand[: bounds.MAX_SERIES_SAMPLES],
        }

    def metrics(self) -> list[metrics_core.Metric]:
        """The readings (faults included) and the heat counters, as Prometheus families."""

        def gauge(name: str, doc: str) -> metrics_core.GaugeMetricFamily:
            return metrics_core.GaugeMetricFamily(f"heatshift_meter_{name}", doc, labels=["site"])

        demand = gauge("heat_demand_kw", "Heat the offtaker would take now, kW.")
        energy = gauge("tank_energy_kwh", "Usable energy in the buffer tank, kWh.")
        capacity = gauge("tank_capacity_kwh", "Usable capacity of the buffer tank, kWh.")
        supply = gauge("supply_temp_c", "Supply temperature to the building, °C.")
        ret = gauge("return_temp_c", "Return temperature from the building, °C.")
        available = gauge("offtaker_available", "1 when the offtaker can take heat, else 0.")
        power = gauge("it_power_watts", "IT power drawn at the site, W.")
        # The meter's registers, in the contract's unit: a Prometheus metering source reads
        # them as they are (heatDeliveredKWh, ...). Absent while the meter is down.
        delivered = metrics_core.CounterMetricFamily(
            "heatshift_meter_heat_delivered_kwh",
            "Delivered heat register of the meter, kWh.",
            labels=["site"],
        )
        dumped = metrics_core.CounterMetricFamily(
            "heatshift_meter_heat_dumped_kwh",
            "Dumped heat register of the meter, kWh.",
            labels=["site"],
        )
        it_energy = metrics_core.CounterMetricFamily(
            "heatshift_meter_it_energy_kwh",
            "IT energy register of the meter, kWh.",
            labels=["site"],
        )
        flow = gauge("flow_m3_per_h", "Water flow through the heat meter, m³/h.")
        for name, meter in self._meters.items():
            power.add_metric([name], meter.it_watts)
            if meter.fault is FaultMode.DOWN:
                continue
            r = self.reading(name)
            regs = self.registers(name)
            delivered.add_metric([name], regs["heatDeliveredKWh"])
            dumped.add_metric([name], regs.get("heatDumpedKWh", 0.0))
            it_energy.add_metric([name], regs.get("itEnergyKWh", 0.0))
            flow.add_metric([name], r.get("flowM3PerH", 0.0))
            demand.add_metric([name], r["heatDemandKW"])
            energy.add_metric([name], meter.energy_kwh)
            capacity.add_metric([name], meter.site.tank.capacity_kwh)
            supply.add_metric([name], r["supplyTempC"])
            ret.add_metric([name], r["returnTempC"])
            available.add_metric([name], 1.0 if r["offtakerAvailable"] else 0.0)
        clock = metrics_core.GaugeMetricFamily(
            "heatshift_meter_scenario_time_seconds",
            "Scenario time of the last update, seconds from the scenario start.",
            value=self._t_s,
        )
        return [
            demand,
            energy,
            capacity,
            supply,
            ret,
            available,
            power,
            delivered,
            dumped,
            it_energy,
            flow,
            clock,
        ]


class _Collector(prom_registry.Collector):
    """Hands the simulation's families to the registry at scrape time."""

    def __init__(self, sim: MeterSimulation) -> None:
        self._sim = sim

    def collect(self) -> Iterable[metrics_core.Metric]:
        return self._sim.metrics()


def _error(status: int, code: str, message: str) -> web.Response:
    body: readings.ErrorPayload = {"code": code, "message": message}
    headers = {"WWW-Authenticate": 'Bearer realm="heatshift-metering"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


def contract_text() -> str:
    """The metering API contract, ``openapi.yaml``, as shipped in the package."""
    return (importlib.resources.files("heatshift.metering") / "openapi.yaml").read_text("utf-8")


class MeteringServer:
    """The HTTP face of a :class:`MeterSimulation`. Use as ``async with``, or start/stop."""

    def __init__(
        self,
        sim: MeterSimulation,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        tick_s: float | None = DEFAULT_TICK_S,
    ) -> None:
        """``port=0`` picks a free port (see :attr:`url` once started); ``tick_s=None``
        updates the tanks only when asked (tests with a fake clock)."""
        self.sim = sim
        self.host = host
        self.port = port
        self._token = token
        self._tick_s = tick_s
        self._registry = prom_registry.CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(sim))
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.app = self._build_app()

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/v1/sites", self._sites)
        app.router.add_get("/v1/sites/{siteId}/reading", self._reading)
        app.router.add_get("/v1/readings", self._readings)
        app.router.add_post("/v1/admin/faults", self._faults)
        app.router.add_post("/v1/admin/load", self._load)
        app.router.add_post("/v1/admin/meter", self._meter_action)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/openapi.yaml", self._contract)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self) -> None:
        """Bind and serve; with ``port=0`` the bound port is in :attr:`port` afterwards."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = sock.getsockname()[1]
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        if self._tick_s is not None:
            self._ticker = asyncio.create_task(self._tick(self._tick_s))

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MeteringServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _tick(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.sim.advance()

    @web.middleware
    async def _auth(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if self._token is not None and request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "")
            scheme, _, credentials = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), self._token.encode()
            ):
                message = "a bearer token is required" if not given else "invalid bearer token"
                return _error(401, "Unauthorized", message)
        return await handler(request)

    async def _sites(self, request: web.Request) -> web.Response:
        body: readings.SiteListPayload = {"sites": list(self.sim.site_ids)}
        return web.json_response(body)

    async def _reading(self, request: web.Request) -> web.Response:
        site = request.match_info["siteId"]
        if site not in self.sim.site_ids:
            return _error(404, "NotFound", f"no site {site!r}")
        await self.sim.advance()
        if self.sim.is_down(site):
            return _error(
                503, "Unavailable", f"the meter of site {site!r} is down (fault injected)"
            )
        return web.json_response(self.sim.reading(site))

    async def _readings(self, request: web.Request) -> web.Response:
        await self.sim.advance()
        body: readings.ReadingListPayload = {"readings": [], "unavailable": []}
        for site in self.sim.site_ids:
            if self.sim.is_down(site):
                body["unavailable"].append(
                    {
                        "siteId": site,
                        "code": "Unavailable",
                        "message": f"the meter of site {site!r} is down (fault injected)",
                    }
                )
            else:
                body["readings"].append(self.sim.reading(site))
        return web.json_response(body)

    async def _json_object(self, request: web.Request) -> dict[str, object] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "BadRequest", "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "the body is not a JSON object")
        site = body.get("site")
        if not isinstance(site, str):
            return _error(400, "BadRequest", "site is missing or not a string")
        if site not in self.sim.site_ids:
            return _error(404, "NotFound", f"no site {site!r}")
        return body

    async def _faults(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if isinstance(body, web.Response):
            return body
        try:
            mode = FaultMode(str(body.get("mode")))
        except ValueError:
            modes = ", ".join(m.value for m in FaultMode)
            return _error(400, "BadRequest", f"mode must be one of {modes}")
        site = str(body["site"])
        await self.sim.set_fault(site, mode)
        logger.info("metering-sim fault site=%s mode=%s", site, mode.value)
        return web.json_response({"site": site, "mode": mode.value})

    async def _load(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if isinstance(body, web.Response):
            return body
        watts = body.get("watts")
        if watts is not None and (
            isinstance(watts, bool)
            or not isinstance(watts, int | float)
            or not math.isfinite(watts)
            or watts < 0
        ):
            return _error(400, "BadRequest", "watts must be a number >= 0, or null")
        site = str(body["site"])
        await self.sim.set_load(site, None if watts is None else float(watts))
        logger.info("metering-sim load site=%s watts=%s", site, watts)
        return web.json_response({"site": site, "watts": watts})

    async def _meter_action(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if isinstance(body, web.Response):
            return body
        try:
            action = MeterAction(str(body.get("action")))
        except ValueError:
            actions = ", ".join(a.value for a in MeterAction)
            return _error(400, "BadRequest", f"action must be one of {actions}")
        site = str(body["site"])
        await self.sim.act_on_meter(site, action)
        logger.info("metering-sim meter site=%s action=%s", site, action.value)
        return web.json_response({"site": site, "action": action.value})

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.sim.advance()
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})

    async def _contract(self, request: web.Request) -> web.Response:
        return web.Response(text=contract_text(), content_type="application/yaml")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")


async def serve(
    scenario: scenario_mod.Scenario,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    speed: float = 1.0,
    token: str | None = None,
    load: LoadSource | None = None,
    start_offset_s: float = 0.0,
    forecast_horizon_s: float = 0.0,
    stop: asyncio.Event | None = None,
    ready: Callable[[MeteringServer], None] | None = None,
) -> None:
    """Serve ``scenario`` until ``stop`` is set (or the task is cancelled).

    ``ready`` is called with the started server (its :attr:`MeteringServer.url` is final).
    """
    sim = MeterSimulation(
        scenario,
        load=load,
        speed=speed,
        start_offset_s=start_offset_s,
        forecast_horizon_s=forecast_horizon_s,
    )
    async with MeteringServer(sim, host=host, port=port, token=token) as server:
        logger.info(
            "metering-sim serving url=%s scenario=%s sites=%d speed=%g",
            server.url,
            scenario.name,
            len(scenario.sites),
            speed,
        )
        if ready is not None:
            ready(server)
        await (stop if stop is not None else asyncio.Event()).wait()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``heatshift metering-sim``."""
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="scenario YAML file (default: the built-in winter week)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=argtypes.port,
        default=DEFAULT_PORT,
        help=f"port to bind, 0 for any free one (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--speed",
        type=argtypes.positive_number,
        default=1.0,
        help="scenario seconds per wall-clock second, e.g. 60 plays an hour a minute (default: 1)",
    )
    parser.add_argument(
        "--token",
        help=f"require this bearer token on /v1/ (default: ${TOKEN_ENV}, else none); "
        "a flag is visible to other users of the machine, the variable is not",
    )
    parser.add_argument(
        "--start-at",
        type=argtypes.duration_or_zero,
        default=0.0,
        metavar="DURATION",
        help="scenario time to start at, e.g. 48h (default: 0s)",
    )
    parser.add_argument(
        "--forecast-horizon",
        type=argtypes.duration_or_zero,
        default=0.0,
        metavar="DURATION",
        help="include the scenario's demand this far ahead as a forecast, e.g. 24h "
        "(default: 0s, no forecast)",
    )
    argtypes.add_login_arguments(
        parser,
        what="read each site's IT load from this cluster: the LeafSite of the same name, its "
        "idle power plus the pods running on its nodes (re-read every few seconds; the last "
        "load is kept while the API fails). Without --kubeconfig or --context, sites draw idle "
        "power unless set through /v1/admin/load. ",
    )
    parser.add_argument(
        "--cluster-load",
        action="store_true",
        help="read each site's IT load from the cluster, as --kubeconfig does, logging in the "
        "default way: in a pod its service account (it needs get, list and watch on nodes, "
        "pods, jobs and leafsites), else $KUBECONFIG or ~/.kube/config",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``heatshift metering-sim`` until SIGINT or SIGTERM; returns the exit status."""
    try:
        scenario = (
            scenario_mod.load_scenario(args.scenario)
            if args.scenario is not None
            else scenario_mod.load_builtin_scenario()
        )
    except scenario_mod.ScenarioError as err:
        sys.stderr.write(f"heatshift metering-sim: {err}\n")
        return 2
    token = args.token or os.environ.get(TOKEN_ENV) or None
    from_cluster = args.cluster_load or args.kubeconfig is not None or args.context is not None
    server_url = ""

    def announce(server: MeteringServer) -> None:
        sys.stderr.write(
            f"metering-sim: serving {len(scenario.sites)} sites of scenario "
            f"{scenario.name!r} at {server.url} (speed {args.speed:g}x"
            f"{', bearer token required' if token else ''}"
            f"{f', IT load from {server_url}' if server_url else ''}); Ctrl-C stops\n"
        )

    async def main() -> None:
        nonlocal server_url
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            load: LoadSource | None = None
            if from_cluster:
                # Imported here: the cluster adapter pulls in the planner and the Kubernetes
                # client, which only this option needs.
                from heatshift.kube import cluster_load, login

                # Logged in before serving, so a kubeconfig that cannot be used is said at once.
                session = await login.connect(args.kubeconfig, args.context)
                await stack.enter_async_context(session)
                server_url = session.api.server
                load = cluster_load.ClusterLoad(session.api, scenario.sites)
            await serve(
                scenario,
                args.host,
                args.port,
                speed=args.speed,
                token=token,
                load=load,
                start_offset_s=args.start_at,
                forecast_horizon_s=args.forecast_horizon,
                stop=stop,
                ready=announce,
            )

    # Imported here, like the cluster adapter: only the login's error type is needed.
    from heatshift.kube import client as kube_client

    try:
        asyncio.run(main())
    except kube_client.KubeCredentialError as err:
        sys.stderr.write(f"heatshift metering-sim: cannot log in: {err}\n")
        return 2
    except OSError as err:  # the port is taken, the address is not ours
        sys.stderr.write(
            f"heatshift metering-sim: cannot serve on {args.host}:{args.port}: {err}\n"
        )
        return 1
    return 0
