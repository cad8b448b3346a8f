"""The metering API client: readings over HTTP (httpx), per the contract in ``openapi.yaml``.

Owns the transport concerns: base URL, optional bearer token, TLS verification (on unless told
otherwise), a per-request timeout, bounded retries with exponential backoff and jitter on
connect errors, timeouts, 5xx and 429 (never on other 4xx), and a cap on response size. Every
failure ends as a per-site :class:`~heatshift.metering.readings.Rejection`; ``fetch`` raises
only for programming errors. Inside, failures travel as :mod:`heatshift.metering.errors`.

Called by the operator once per planning cycle (one source per metering endpoint and token;
reading the token from a Kubernetes Secret is the operator's job) and by the e2e harness.
The random source and the sleep are injected, so tests of the retry schedule take no time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType

import httpx

import heatshift
from heatshift.metering import errors, readings

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

DEFAULT_TIMEOUT_S = 5.0
"""Timeout of one request (connect, read, write and pool each)."""
DEFAULT_RETRIES = 3
"""Retries after the first attempt: at most four requests per reading."""
DEFAULT_BACKOFF_BASE_S = 0.5
"""The first retry waits between half this and this; each further retry doubles it."""
DEFAULT_BACKOFF_MAX_S = 10.0
"""No wait is longer, whatever the attempt or a ``Retry-After`` header says."""
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""A reading list with long forecasts for a large fleet fits; anything larger is a fault."""
DEFAULT_MAX_CONCURRENCY = 8
"""Requests in flight at once when fetching sites one by one."""


def _retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


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


def _retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds from a ``Retry-After: <seconds>`` header; the HTTP-date form is ignored."""
    value = headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0.0 else None


def _detail(body: bytes) -> str:
    """The message of an error body per the contract's error model, if it has one."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return f": {parsed['message'][:200]}"
    return ""


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
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        bulk: bool = False,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        """``bulk`` fetches every site with one ``GET /v1/readings``; otherwise one request
        per site (``GET /v1/sites/{siteId}/reading``), so one site's failure stays its own.

        ``verify`` is True, False (tests only) or an SSL context with the CA to trust.
        ``transport`` replaces the network (tests use ``httpx.MockTransport``).
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_base_s < 0 or backoff_max_s < 0:
            raise ValueError("backoff times must be >= 0")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        headers = {
            "Accept": "application/json",
            "User-Agent": f"heatshift/{heatshift.__version__}",
        }
        if token is not None:
            if not token or token != token.strip() or not token.isprintable():
                # A Secret read with its trailing newline is the usual cause; say so early
                # rather than send a header the server will refuse on every cycle.
                raise ValueError("bearer token is empty or has whitespace or control characters")
            headers["Authorization"] = f"Bearer {token}"
        self._root = _api_root(base_url)
        self._has_token = token is not None
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._bulk = bulk
        self._max_concurrency = max_concurrency
        self._client = httpx.AsyncClient(
            base_url=self._root,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,
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
        await self._client.aclose()

    async def fetch(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.SiteReading | readings.Rejection]:
        """One validated reading or rejection per site id in ``sites``; never raises for a
        failure of the API, the network or the data."""
        if not sites:
            return {}
        if self._bulk:
            return await self._fetch_bulk(sites, now_s)
        gate = asyncio.Semaphore(self._max_concurrency)

        async def one(site_id: str, limits: readings.ReadingLimits) -> readings.ReadingResult:
            async with gate:
                return await self._fetch_one(site_id, limits, now_s)

        # A TaskGroup, so a programming error in one request cancels the others.
        async with asyncio.TaskGroup() as group:
            tasks = {s: group.create_task(one(s, limits)) for s, limits in sites.items()}
        return {s: task.result() for s, task in tasks.items()}

    async def _fetch_one(
        self, site_id: str, limits: readings.ReadingLimits, now_s: float
    ) -> readings.ReadingResult:
        path = f"/v1/sites/{urllib.parse.quote(site_id, safe='')}/reading"
        try:
            raw = await self._get_json(path, f"site {site_id!r}")
        except errors.MeteringError as err:
            return readings.Rejection(site=site_id, kind=err.kind, message=err.message)
        return readings.validate_with(raw, limits, now_s=now_s, site=site_id)

    async def _fetch_bulk(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.ReadingResult]:
        try:
            raw = await self._get_json("/v1/readings", "all sites")
            if not isinstance(raw, dict) or not isinstance(raw.get("readings"), list):
                raise errors.MeteringMalformed(
                    "metering API's reading list is not an object with a readings list"
                )
        except errors.MeteringError as err:
            return {
                s: readings.Rejection(site=s, kind=err.kind, message=err.message) for s in sites
            }
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

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Wait before retry number ``attempt`` (1-based): exponential, jittered, capped."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2.0 ** (attempt - 1))
        # Jitter keeps a fleet of sites from retrying in lockstep against a struggling API.
        delay = self._rng.uniform(ceiling / 2.0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self._backoff_max_s))
        return delay

    async def _send(self, path: str) -> tuple[int, httpx.Headers, bytes]:
        """One GET; the body read up to :data:`MAX_RESPONSE_BYTES`."""
        async with self._client.stream("GET", path) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_RESPONSE_BYTES:
                    raise errors.MeteringMalformed(
                        f"metering API response is larger than {MAX_RESPONSE_BYTES} bytes"
                    )
            return response.status_code, response.headers, bytes(body)

    async def _get_json(self, path: str, what: str) -> object:
        """The decoded JSON of a 200 answer to ``GET path``, retrying what may pass."""
        attempts = self._retries + 1
        for attempt in range(1, attempts + 1):
            cause: Exception | None = None
            retry_after: float | None = None
            try:
                status, headers, body = await self._send(path)
            except httpx.TimeoutException as err:
                problem, cause = f"timed out after {self._timeout_s:g} s", err
            except httpx.UnsupportedProtocol as err:
                raise errors.MeteringUnavailable(f"metering API URL is not usable: {err}") from err
            except httpx.TransportError as err:
                problem, cause = f"is unreachable ({err or type(err).__name__})", err
            except httpx.HTTPError as err:  # redirects, decoding: retrying will not help
                raise errors.MeteringUnavailable(
                    f"metering API request for {what} failed: {err or type(err).__name__}"
                ) from err
            else:
                if status == 200:
                    return self._decode(body, what)
                detail = _detail(body)
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
                    raise errors.MeteringNotFound(
                        f"metering API has no {what} (HTTP 404){detail}", status
                    )
                if not _retryable_status(status):
                    raise errors.MeteringHTTPError(
                        f"metering API rejected the request for {what} (HTTP {status}){detail}",
                        status,
                    )
                problem = f"answered HTTP {status}{detail}"
                retry_after = _retry_after_s(headers)
            if attempt == attempts:
                raise errors.MeteringUnavailable(
                    f"metering API {problem} for {what} ({attempts} attempts)"
                ) from cause
            delay = self._backoff_s(attempt, retry_after)
            logger.info(
                "metering retry path=%s attempt=%d/%d problem=%r delay_s=%.2f",
                path,
                attempt,
                attempts,
                problem,
                delay,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    @staticmethod
    def _decode(body: bytes, what: str) -> object:
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as err:
            raise errors.MeteringMalformed(
                f"metering API sent invalid JSON for {what}: {str(err)[:120]}"
            ) from err
