"""Readings from Prometheus: one PromQL instant query per quantity and site.

Owns the mapping from a LeafSite's PromQL queries (``spec.metering.prometheus.queries``:
demandKW, tankEnergyKWh, optional tankCapacityKWh, supplyTempC, returnTempC, flowM3PerH and the
cumulative registers heatDeliveredKWh, itEnergyKWh, heatDumpedKWh) to the metering
API's raw reading shape, which then goes through the same validation as an HTTP reading
(:func:`heatshift.metering.readings.validate_with`). Each query must return one sample: an
empty vector is a missing value, several series are malformed, a scalar is its value.

Staleness: an instant query's sample timestamp is the evaluation time, and Prometheus drops
a series from an instant query once its last sample is older than the lookback delta (5 min
by default). So a meter that stopped reporting shows up as a missing value, and the oldest
sample timestamp of a site's queries becomes ``observedAt`` (it catches a lagging Prometheus).

Why not prometheus-api-client, the field's usual library: it is synchronous (requests), so it
ran in worker threads, and neither it nor requests can bound a whole request. A Prometheus
dripping its answer kept each thread stuck past every timeout, and after a few cycles the
shared thread pool (which the planner uses too) had no worker left; nor could it cap a 50 MB
body. The instant query API is one GET (``/api/v1/query``), so this module speaks it directly
through :class:`heatshift.metering.transport.Requester` on the event loop: a total deadline
per fetch, a size cap, retries within the deadline, and nothing left running when the caller
gives up. The answer is parsed strictly (:func:`parse_sample`). Called by the operator once per
planning cycle, as a :class:`heatshift.metering.source.MeteringSource`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from types import TracebackType

import httpx
from pydantic import Field

from heatshift import bounds, model
from heatshift.metering import errors, readings
from heatshift.metering import transport as transport_module

DEFAULT_TIMEOUT_S = 5.0
"""Budget of one fetch: every query of every site, connect to last byte, retries included."""
DEFAULT_RETRIES = 2
"""Retries of one query on connect errors, timeouts, 429 and 5xx."""
DEFAULT_BACKOFF_S = 0.5
DEFAULT_MAX_CONCURRENCY = 4
"""Sites queried at once."""

_SAMPLE_VALUE = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?Inf$|^NaN$"
)
"""How Prometheus writes a sample value (Go's strconv.FormatFloat, 'f' or 'e', or Inf/NaN).
Python's ``float`` also takes ``1_000``, ``infinity`` and spaces; Prometheus never sends them."""


def _sample(pair: object, label: str) -> tuple[float, float]:
    """(timestamp, value) of a ``[<unix time>, "<value>"]`` pair, timestamp within bounds."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise errors.MeteringMalformed(
            f"PromQL for {label} returned a sample that is not [time, value]"
        )
    t_raw, x_raw = pair
    if isinstance(t_raw, bool) or not isinstance(t_raw, int | float):
        raise errors.MeteringMalformed(f"PromQL for {label} returned a sample without a time")
    try:
        t = float(t_raw)
    except OverflowError:  # an integer with hundreds of digits
        t = float("inf")
    why = bounds.timestamp_problem(t, "its sample time")
    if why is not None:
        # Checked before any datetime conversion: -1e20 would overflow it.
        raise errors.MeteringMalformed(f"PromQL for {label} returned a sample: {why}")
    if not isinstance(x_raw, str) or not _SAMPLE_VALUE.match(x_raw):
        raise errors.MeteringMalformed(
            f"PromQL for {label} returned a sample that is not [time, value]"
        )
    return t, float(x_raw)


def parse_sample(answer: object, label: str) -> tuple[float, float]:
    """(timestamp, value) of the one sample in an instant query's decoded answer.

    A vector must hold exactly one series; a scalar is its own sample; a range vector
    (matrix) or a string is malformed. Raises :mod:`heatshift.metering.errors` saying which.
    """
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise errors.MeteringMalformed(
            f"Prometheus answered the query for {label} with an unexpected body "
            "(not a successful query result)"
        )
    data = answer.get("data")
    if not isinstance(data, dict):
        raise errors.MeteringMalformed(
            f"Prometheus answered the query for {label} with an unexpected body (no data)"
        )
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _sample(result, label)
    if kind != "vector":
        words = {"matrix": "a range vector", "string": "a string"}.get(str(kind), repr(kind))
        raise errors.MeteringMalformed(
            f"PromQL for {label} returned {str(words)[:40]}, expected an instant vector "
            "with one series or a scalar"
        )
    if not isinstance(result, list):
        raise errors.MeteringMalformed(
            f"Prometheus answered the query for {label} with an unexpected body "
            "(a vector that is not a list)"
        )
    if not result:
        raise errors.MeteringNoData(
            f"{label} is missing: its PromQL returned no series (is the meter scraped?)"
        )
    if len(result) > 1:
        raise errors.MeteringMalformed(
            f"PromQL for {label} returned {len(result)} series, expected 1"
        )
    series = result[0]
    if not isinstance(series, dict):
        raise errors.MeteringMalformed(
            f"PromQL for {label} returned a sample that is not [time, value]"
        )
    return _sample(series.get("value"), label)


class SiteQueries(model.Frozen):
    """A site's PromQL instant queries; each must return a single sample."""

    demand_kw: str = Field(min_length=1, description="The offtaker's heat demand now, kW.")
    tank_energy_kwh: str = Field(min_length=1, description="The energy in the tank now, kWh.")
    tank_capacity_kwh: str | None = None
    supply_temp_c: str | None = None
    return_temp_c: str | None = None
    offtaker_available: str | None = None
    """1 when the offtaker can take heat, 0 when not; without it the offtaker is available."""
    heat_delivered_kwh: str | None = None
    """The meter's cumulative delivered heat register; the other registers need it."""
    it_energy_kwh: str | None = None
    heat_dumped_kwh: str | None = None
    flow_m3_per_h: str | None = None

    @classmethod
    def for_reference_server(cls, site: str) -> SiteQueries:
        """The queries that read the gauges of heatshift's reference metering server."""
        label = site.replace("\\", "\\\\").replace('"', '\\"')

        def gauge(name: str) -> str:
            return f'heatshift_meter_{name}{{site="{label}"}}'

        return cls(
            demand_kw=gauge("heat_demand_kw"),
            tank_energy_kwh=gauge("tank_energy_kwh"),
            tank_capacity_kwh=gauge("tank_capacity_kwh"),
            supply_temp_c=gauge("supply_temp_c"),
            return_temp_c=gauge("return_temp_c"),
            offtaker_available=gauge("offtaker_available"),
            heat_delivered_kwh=gauge("heat_delivered_kwh_total"),
            it_energy_kwh=gauge("it_energy_kwh_total"),
            heat_dumped_kwh=gauge("heat_dumped_kwh_total"),
            flow_m3_per_h=gauge("flow_m3_per_h"),
        )


class PrometheusMeteringSource:
    """Readings of any number of sites from one Prometheus server."""

    def __init__(
        self,
        url: str,
        queries: Mapping[str, SiteQueries],
        *,
        token: str | None = None,
        verify: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``timeout_s`` bounds a whole fetch; ``transport`` replaces the network (tests)."""
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self._queries = dict(queries)
        self._max_concurrency = max_concurrency
        self._requester = transport_module.Requester.connect(
            url.rstrip("/"),
            service="Prometheus",
            token=token,
            verify=verify,
            timeout_s=timeout_s,
            retries=retries,
            backoff_base_s=backoff_s,
            backoff_max_s=backoff_s * 8,
            transport=transport,
        )

    async def __aenter__(self) -> PrometheusMeteringSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._requester.client.aclose()

    async def fetch(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.SiteReading | readings.Rejection]:
        """One validated reading or rejection per site id in ``sites``, all within the
        source's timeout; never raises for a failure of Prometheus, the network or the data."""
        gate = asyncio.Semaphore(self._max_concurrency)
        deadline = self._requester.deadline()

        async def one(site_id: str, limits: readings.ReadingLimits) -> readings.ReadingResult:
            queries = self._queries.get(site_id)
            if queries is None:
                return readings.Rejection(
                    site=site_id,
                    kind=readings.RejectionKind.MISSING,
                    message=f"no PromQL queries are configured for site {site_id!r}",
                )
            async with gate:
                try:
                    raw = await self._raw_reading(site_id, queries, deadline)
                except errors.MeteringError as err:
                    return readings.Rejection(site=site_id, kind=err.kind, message=err.message)
            return readings.validate_with(raw, limits, now_s=now_s, site=site_id)

        async with asyncio.TaskGroup() as group:
            tasks = {s: group.create_task(one(s, limits)) for s, limits in sites.items()}
        return {s: task.result() for s, task in tasks.items()}

    async def _raw_reading(
        self, site_id: str, q: SiteQueries, deadline: float
    ) -> dict[str, object]:
        """The site's reading in the metering API's raw shape."""
        times: list[float] = []

        async def value(query: str | None, label: str) -> float | None:
            if query is None:
                return None
            t, x = await self._query(query, label, deadline)
            times.append(t)
            return x

        demand = await value(q.demand_kw, "heat demand")
        energy = await value(q.tank_energy_kwh, "tank energy")
        tank: dict[str, object] = {"energyKWh": energy}
        capacity = await value(q.tank_capacity_kwh, "tank capacity")
        if capacity is not None:
            tank["capacityKWh"] = capacity
        raw: dict[str, object] = {"siteId": site_id, "heatDemandKW": demand, "tank": tank}
        supply = await value(q.supply_temp_c, "supply temperature")
        if supply is not None:
            raw["supplyTempC"] = supply
        ret = await value(q.return_temp_c, "return temperature")
        if ret is not None:
            raw["returnTempC"] = ret
        available = await value(q.offtaker_available, "offtaker availability")
        if available is None:
            raw["offtakerAvailable"] = True
        elif available in (0.0, 1.0):
            raw["offtakerAvailable"] = available == 1.0
        else:
            raise errors.MeteringMalformed(
                f"PromQL for offtaker availability gave {available}, expected 0 or 1"
            )
        flow = await value(q.flow_m3_per_h, "flow")
        if flow is not None:
            raw["flowM3PerH"] = flow
        delivered = await value(q.heat_delivered_kwh, "delivered heat register")
        if delivered is not None:
            # Prometheus knows no meter id: a reset or a new meter shows as a drop to about 0.
            registers: dict[str, object] = {"heatDeliveredKWh": delivered}
            for key, query, label in (
                ("itEnergyKWh", q.it_energy_kwh, "IT energy register"),
                ("heatDumpedKWh", q.heat_dumped_kwh, "dumped heat register"),
            ):
                x = await value(query, label)
                if x is not None:
                    registers[key] = x
            raw["registers"] = registers
        # The oldest sample dates the whole reading: it is as fresh as its stalest part. Every
        # time is within bounds (parse_sample checked it), so formatting cannot overflow.
        raw["observedAt"] = readings.format_time(min(times))
        return raw

    async def _query(self, query: str, label: str, deadline: float) -> tuple[float, float]:
        """(timestamp, value) of the single sample ``query`` returns."""
        what = f"the query for {label}"
        answer = await self._requester.get(
            "/api/v1/query", what, deadline=deadline, params={"query": query}
        )
        status = answer.status
        detail = transport_module.error_detail(answer)
        if status in (400, 422):
            # Prometheus answers 400 and 422 to a query it cannot parse or run: the
            # LeafSite's PromQL is wrong, which retrying will not fix.
            raise errors.MeteringMalformed(
                f"Prometheus rejected the PromQL for {label} (HTTP {status}){detail}"
            )
        if status in (401, 403):
            raise errors.MeteringAuthError(
                f"Prometheus refused the request for {label} (HTTP {status}){detail}", status
            )
        if status != 200:
            raise errors.MeteringHTTPError(
                f"Prometheus rejected the request for {label} (HTTP {status}){detail}", status
            )
        try:
            decoded = readings.decode_json(answer.body, answer.content_type)
        except readings.BodyError as err:
            raise errors.MeteringMalformed(
                f"Prometheus answered the query for {label} with an unexpected body: {err}"
            ) from err
        return parse_sample(decoded, label)
