"""The metering API client: readings over HTTP (httpx), per the contract in ``openapi.yaml``.

Owns the metering API's side of a fetch: base URL, optional bearer token, TLS verification (on
unless told otherwise), the contract's paths and statuses, and strict decoding of its answers
(:func:`reading_from_body`: a JSON content type, UTF-8, no key twice, then
:func:`~heatshift.metering.readings.validate_with`). The request itself, with its total
deadline, size cap and retries on connect errors, timeouts, 5xx and 429, is
:class:`heatshift.metering.transport.Requester`'s.

The source's timeout (``timeoutSeconds``, at most :data:`heatshift.bounds.METERING_TIMEOUT`)
bounds a whole ``fetch``: every site's answer, retries included, arrives within it or that site
alone is rejected. So a fetch always ends before the planning cycle's own metering limit, and a
slow site never takes the others' readings with it. Every failure ends as a per-site
:class:`~heatshift.metering.readings.Rejection`; ``fetch`` raises only for programming errors.

Called by the operator once per planning cycle (one source per metering endpoint and token;
reading the token from a Kubernetes Secret is the operator's job) and by the e2e harness.
The random source and the sleep are injected, so tests of the retry schedule take no time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import urllib.parse
from collections.abc import Mapping
from types import TracebackType

import httpx

from heatshift.metering import errors, readings
from heatshift.metering import transport as transport_module

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
"""Budget of one fetch: each site's request, connect to last byte, retries included."""
DEFAULT_RETRIES = 3
"""Retries after the first attempt: at most four requests per reading."""
DEFAULT_BACKOFF_BASE_S = transport_module.DEFAULT_BACKOFF_BASE_S
DEFAULT_BACKOFF_MAX_S = transport_module.DEFAULT_BACKOFF_MAX_S
DEFAULT_MAX_CONCURRENCY = 8
"""Requests in flight at once when fetching sites one by one."""
BULK_SHARE = 0.5
"""Share of the budget the bulk request may take; the rest is for asking sites one by one if
it fails, so a broken reading list never costs the sites their readings."""


def _api_root(base_url: str) -> str:
    """The URL under which ``/v1/...`` lives. Accepts a base URL ending in ``/v1`` too."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"metering API URL must be http:// or https:// with a host: {base_url!r}")
    if parsed.query or parsed.fragment:
        raise ValueError(f"metering API URL must not have a query or fragment: {base_url!r}")
    path = parsed.path.rstrip("/")
    # LeafSite examples write the base URL with the version (".../v1"); the contract's paths
    # start with /v1. Both spellings reach the same endpoints.
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def decode_answer(body: bytes, content_type: str | None, what: str) -> object:
    """The JSON of a 200 answer, strictly (see :func:`readings.decode_json`). Raises
    :class:`~heatshift.metering.errors.MeteringMalformed` saying what is wrong."""
    try:
        return readings.decode_json(body, content_type)
    except readings.BodyError as err:
        raise errors.MeteringMalformed(
            f"metering API's answer for {what} is unusable: {err}"
        ) from err


def reading_from_body(
    body: bytes,
    content_type: str | None,
    limits: readings.ReadingLimits,
    *,
    now_s: float,
    site: str,
) -> readings.ReadingResult:
    """A site's reading from the raw body of ``GET /v1/sites/{siteId}/reading``. Never raises:
    any bytes and any content type give a reading or a rejection."""
    try:
        raw = decode_answer(body, content_type, f"site {site!r}")
    except errors.MeteringMalformed as err:
        return readings.Rejection(site=site, kind=err.kind, message=err.message)
    return readings.validate_with(raw, limits, now_s=now_s, site=site)


class HttpMeteringSource:
    """Readings from one metering API endpoint, for any number of its sites."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        verify: bool | ssl.SSLContext = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        rng: random.Random | None = None,
        sleep: transport_module.Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        bulk: bool = False,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        """``bulk`` fetches every site with one ``GET /v1/readings`` (and, if that fails, site
        by site); otherwise one request per site (``GET /v1/sites/{siteId}/reading``), so one
        site's failure stays its own.

        ``timeout_s`` bounds a whole fetch (see the module docstring). ``verify`` is True,
        False (tests only) or an SSL context with the CA to trust. ``transport`` replaces the
        network (tests use ``httpx.MockTransport``).
        """
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        root = _api_root(base_url)
        self._has_token = token is not None
        self._bulk = bulk
        self._max_concurrency = max_concurrency
        self._requester = transport_module.Requester.connect(
            root,
            service="metering API",
            token=token,
            verify=verify,
            timeout_s=timeout_s,
            retries=retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            rng=rng,
            sleep=sleep,
            transport=transport,
        )

    async def __aenter__(self) -> HttpMeteringSource:
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
        source's timeout; never raises for a failure of the API, the network or the data."""
        if not sites:
            return {}
        deadline = self._requester.deadline()
        if self._bulk:
            return await self._fetch_bulk(sites, now_s, deadline)
        return await self._fetch_each(sites, now_s, deadline)

    async def _fetch_each(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float, deadline: float
    ) -> dict[str, readings.ReadingResult]:
        gate = asyncio.Semaphore(self._max_concurrency)

        async def one(site_id: str, limits: readings.ReadingLimits) -> readings.ReadingResult:
            async with gate:
                return await self._fetch_one(site_id, limits, now_s, deadline)

        # A TaskGroup, so a programming error in one request cancels the others.
        async with asyncio.TaskGroup() as group:
            tasks = {s: group.create_task(one(s, limits)) for s, limits in sites.items()}
        return {s: task.result() for s, task in tasks.items()}

    async def _fetch_one(
        self, site_id: str, limits: readings.ReadingLimits, now_s: float, deadline: float
    ) -> readings.ReadingResult:
        path = f"/v1/sites/{urllib.parse.quote(site_id, safe='')}/reading"
        try:
            answer = await self._get(path, f"site {site_id!r}", deadline)
        except errors.MeteringError as err:
            return readings.Rejection(site=site_id, kind=err.kind, message=err.message)
        return reading_from_body(
            answer.body, answer.content_type, limits, now_s=now_s, site=site_id
        )

    async def _fetch_bulk(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float, deadline: float
    ) -> dict[str, readings.ReadingResult]:
        loop_now = asyncio.get_running_loop().time()
        bulk_deadline = loop_now + (deadline - loop_now) * BULK_SHARE
        try:
            answer = await self._get("/v1/readings", "all sites", bulk_deadline)
            raw = decode_answer(answer.body, answer.content_type, "all sites")
            if not isinstance(raw, dict) or not isinstance(raw.get("readings"), list):
                raise errors.MeteringMalformed(
                    "metering API's reading list is not an object with a readings list"
                )
        except errors.MeteringAuthError as err:  # asking site by site would be refused too
            return {
                s: readings.Rejection(site=s, kind=err.kind, message=err.message) for s in sites
            }
        except errors.MeteringError as err:
            logger.warning("metering bulk failed, asking site by site: %s", err.message)
            return await self._fetch_each(sites, now_s, deadline)
        found: dict[str, object] = {}
        for item in raw["readings"]:
            if isinstance(item, dict) and isinstance(item.get("siteId"), str):
                found.setdefault(item["siteId"], item)
        down: dict[str, str] = {}
        unavailable = raw.get("unavailable")
        if isinstance(unavailable, list):
            for item in unavailable:
                if isinstance(item, dict) and isinstance(item.get("siteId"), str):
                    message = item.get("message")
                    down[item["siteId"]] = message[:200] if isinstance(message, str) else ""
        results: dict[str, readings.ReadingResult] = {}
        for site_id, limits in sites.items():
            if site_id in found:
                results[site_id] = readings.validate_with(
                    found[site_id], limits, now_s=now_s, site=site_id
                )
            elif site_id in down:
                results[site_id] = readings.Rejection(
                    site=site_id,
                    kind=readings.RejectionKind.UNAVAILABLE,
                    message=f"metering API has no reading for the site now: {down[site_id]}",
                )
            else:
                results[site_id] = readings.Rejection(
                    site=site_id,
                    kind=readings.RejectionKind.MISSING,
                    message=f"metering API's reading list has no site {site_id!r}",
                )
        return results

    async def _get(self, path: str, what: str, deadline: float) -> transport_module.Answer:
        """The 200 answer to ``GET path``; any other final status as the error it means."""
        answer = await self._requester.get(path, what, deadline=deadline)
        status = answer.status
        if status == 200:
            return answer
        detail = transport_module.error_detail(answer)
        if status in (401, 403):
            if not self._has_token:
                message = (
                    f"metering API requires a bearer token (HTTP {status}) "
                    f"and none is configured{detail}"
                )
            else:
                message = f"metering API refused the bearer token (HTTP {status}){detail}"
            raise errors.MeteringAuthError(message, status)
        if status == 404:
            raise errors.MeteringNotFound(f"metering API has no {what} (HTTP 404){detail}", status)
        raise errors.MeteringHTTPError(
            f"metering API rejected the request for {what} (HTTP {status}){detail}", status
        )
