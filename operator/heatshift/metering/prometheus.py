"""Readings from Prometheus: one PromQL instant query per quantity and site.

Owns the mapping from a LeafSite's PromQL queries (``spec.metering.prometheus.queries``:
demandKW, tankEnergyKWh, optional tankCapacityKWh, supplyTempC, returnTempC) to the metering
API's raw reading shape, which then goes through the same validation as an HTTP reading
(:func:`heatshift.metering.readings.validate_with`). Each query must return one sample: an
empty vector is a missing value, several series are malformed.

Staleness: an instant query's sample timestamp is the evaluation time, and Prometheus drops
a series from an instant query once its last sample is older than the lookback delta (5 min
by default). So a meter that stopped reporting shows up as a missing value, and the oldest
sample timestamp of a site's queries becomes ``observedAt`` (it catches a lagging Prometheus).

``prometheus_api_client`` is synchronous (requests): every site's queries run in a worker
thread via :func:`asyncio.to_thread`, a few sites at a time. Called by the operator once per
planning cycle, as a :class:`heatshift.metering.source.MeteringSource`.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping
from types import TracebackType

import requests
import urllib3
from prometheus_api_client import exceptions as prom_exceptions
from prometheus_api_client import prometheus_connect
from pydantic import Field

from heatshift import model
from heatshift.metering import errors, readings

DEFAULT_TIMEOUT_S = 5.0
"""Timeout of one query."""
DEFAULT_RETRIES = 2
"""Retries of one query on connect errors, 429 and 5xx (urllib3 backs off between them)."""
DEFAULT_BACKOFF_S = 0.5
DEFAULT_MAX_CONCURRENCY = 4
"""Sites queried at once (each in its own worker thread)."""

_STATUS = re.compile(r"HTTP Status Code (\d{3})")


class SiteQueries(model.Frozen):
    """A site's PromQL instant queries; each must return a single sample."""

    demand_kw: str = Field(min_length=1, description="The offtaker's heat demand now, kW.")
    tank_energy_kwh: str = Field(min_length=1, description="The energy in the tank now, kWh.")
    tank_capacity_kwh: str | None = None
    supply_temp_c: str | None = None
    return_temp_c: str | None = None
    offtaker_available: str | None = None
    """1 when the offtaker can take heat, 0 when not; without it the offtaker is available."""

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
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        headers: dict[str, str] = {}
        if token is not None:
            if not token or token != token.strip() or not token.isprintable():
                raise ValueError("bearer token is empty or has whitespace or control characters")
            headers["Authorization"] = f"Bearer {token}"
        self._queries = dict(queries)
        self._timeout_s = timeout_s
        self._max_concurrency = max_concurrency
        self._client = prometheus_connect.PrometheusConnect(
            url=url.rstrip("/"),
            headers=headers,
            disable_ssl=not verify,
            retry=urllib3.util.Retry(
                total=retries,
                backoff_factor=backoff_s,
                status_forcelist=(429, 500, 502, 503, 504),
                allowed_methods=("GET",),
            ),
            timeout=timeout_s,  # type: ignore[arg-type]  # annotated int, requests takes float
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
        """Close the HTTP session."""
        await asyncio.to_thread(self._client.close)

    async def fetch(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.SiteReading | readings.Rejection]:
        """One validated reading or rejection per site id in ``sites``; never raises for a
        failure of Prometheus, the network or the data."""
        gate = asyncio.Semaphore(self._max_concurrency)

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
                    raw = await asyncio.to_thread(self._raw_reading, site_id, queries)
                except errors.MeteringError as err:
                    return readings.Rejection(site=site_id, kind=err.kind, message=err.message)
            return readings.validate_with(raw, limits, now_s=now_s, site=site_id)

        async with asyncio.TaskGroup() as group:
            tasks = {s: group.create_task(one(s, limits)) for s, limits in sites.items()}
        return {s: task.result() for s, task in tasks.items()}

    def _raw_reading(self, site_id: str, q: SiteQueries) -> dict[str, object]:
        """The site's reading in the metering API's raw shape. Runs in a worker thread."""
        times: list[float] = []

        def value(query: str | None, label: str) -> float | None:
            if query is None:
                return None
            t, x = self._sample(query, label)
            times.append(t)
            return x

        demand = value(q.demand_kw, "heat demand")
        energy = value(q.tank_energy_kwh, "tank energy")
        tank: dict[str, object] = {"energyKWh": energy}
        capacity = value(q.tank_capacity_kwh, "tank capacity")
        if capacity is not None:
            tank["capacityKWh"] = capacity
        raw: dict[str, object] = {"siteId": site_id, "heatDemandKW": demand, "tank": tank}
        supply = value(q.supply_temp_c, "supply temperature")
        if supply is not None:
            raw["supplyTempC"] = supply
        ret = value(q.return_temp_c, "return temperature")
        if ret is not None:
            raw["returnTempC"] = ret
        available = value(q.offtaker_available, "offtaker availability")
        if available is None:
            raw["offtakerAvailable"] = True
        elif available in (0.0, 1.0):
            raw["offtakerAvailable"] = available == 1.0
        else:
            raise errors.MeteringMalformed(
                f"PromQL for offtaker availability gave {available}, expected 0 or 1"
            )
        # The oldest sample dates the whole reading: it is as fresh as its stalest part.
        raw["observedAt"] = readings.format_time(min(times))
        return raw

    def _sample(self, query: str, label: str) -> tuple[float, float]:
        """(timestamp, value) of the single sample ``query`` returns."""
        try:
            result = self._client.custom_query(query)
        except prom_exceptions.PrometheusApiClientException as err:
            match = _STATUS.search(str(err))
            status = int(match.group(1)) if match else 0
            if 400 <= status < 500 and status != 429:
                # Prometheus answers 400 and 422 to a query it cannot parse or run: the
                # LeafSite's PromQL is wrong, which retrying will not fix.
                raise errors.MeteringMalformed(
                    f"Prometheus rejected the PromQL for {label} (HTTP {status})"
                ) from err
            raise errors.MeteringUnavailable(
                f"Prometheus failed the query for {label} (HTTP {status or 'error'})"
            ) from err
        except requests.exceptions.JSONDecodeError as err:  # before RequestException: it is one
            raise errors.MeteringMalformed(
                f"Prometheus answered the query for {label} with an unexpected body (not JSON)"
            ) from err
        except requests.exceptions.RetryError as err:
            raise errors.MeteringUnavailable(
                f"Prometheus kept failing the query for {label} (5xx or 429 on every retry)"
            ) from err
        except requests.Timeout as err:
            raise errors.MeteringUnavailable(
                f"Prometheus timed out after {self._timeout_s:g} s on the query for {label}"
            ) from err
        except requests.RequestException as err:
            raise errors.MeteringUnavailable(
                f"Prometheus is unreachable ({type(err).__name__}) for the query for {label}"
            ) from err
        except (ValueError, KeyError, TypeError) as err:  # not JSON, or not the API's shape
            raise errors.MeteringMalformed(
                f"Prometheus answered the query for {label} with an unexpected body"
            ) from err
        if not isinstance(result, list):
            raise errors.MeteringMalformed(
                f"Prometheus answered the query for {label} with a {type(result).__name__}, "
                "expected a vector"
            )
        if not result:
            raise errors.MeteringNoData(
                f"{label} is missing: its PromQL returned no series (is the meter scraped?)"
            )
        if len(result) > 1:
            raise errors.MeteringMalformed(
                f"PromQL for {label} returned {len(result)} series, expected 1"
            )
        try:
            t_raw, x_raw = result[0]["value"]
            t, x = float(t_raw), float(x_raw)
        except (KeyError, TypeError, ValueError) as err:
            raise errors.MeteringMalformed(
                f"PromQL for {label} returned a sample that is not [time, value]"
            ) from err
        if not math.isfinite(t):
            raise errors.MeteringMalformed(f"PromQL for {label} returned a sample without a time")
        return t, x
