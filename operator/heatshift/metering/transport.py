"""One metering GET with a real deadline: the request machinery both sources share.

Owns what makes a request safe against a hostile or broken server, for
:mod:`heatshift.metering.http` and :mod:`heatshift.metering.prometheus`:

- a **total deadline**, connect to last byte, retries and their waits included
  (``asyncio.timeout_at`` around the whole thing). httpx's own timeouts are per operation, so a
  server that drips one byte every half second would never trip them; the deadline cuts it.
- a **size cap** on the body, checked while streaming (and against ``Content-Length`` before
  reading), so a 50 MB answer costs at most the cap;
- **bounded retries** with exponential backoff and jitter on connect errors, per-operation
  timeouts, 5xx and 429 (honouring ``Retry-After`` in seconds), never past the deadline: a wait
  that would end after it is not started.

Everything runs on the event loop, no worker thread: when the caller's deadline passes, the
request is cancelled and nothing is left running. Failures are raised as
:mod:`heatshift.metering.errors`; any other status is returned for the caller to judge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping

import httpx

import heatshift
from heatshift import bounds
from heatshift.metering import errors

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

DEFAULT_BACKOFF_BASE_S = 0.5
"""The first retry waits between half this and this; each further retry doubles it."""
DEFAULT_BACKOFF_MAX_S = 10.0
"""No wait is longer, whatever the attempt or a ``Retry-After`` header says."""


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A complete response: its status, headers and whole body (at most the cap)."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def content_type(self) -> str | None:
        value: str | None = self.headers.get("content-type")
        return value


def retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds from a ``Retry-After: <seconds>`` header; the HTTP-date form is ignored."""
    value = headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0.0 <= seconds < float("inf") else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_options(
    timeout_s: float, retries: int, backoff_base_s: float, backoff_max_s: float
) -> None:
    """Raise ValueError, in words, for settings a :class:`Requester` cannot work with (sources
    call it before they open a connection pool)."""
    bounds.METERING_TIMEOUT.check(timeout_s)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if not (0 <= backoff_base_s < float("inf") and 0 <= backoff_max_s < float("inf")):
        raise ValueError("backoff times must be finite and >= 0")


class Requester:
    """GETs against one ``httpx.AsyncClient`` with a deadline, a size cap and retries."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        service: str,
        timeout_s: float,
        retries: int,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        max_bytes: int = bounds.MAX_METERING_RESPONSE_BYTES,
    ) -> None:
        """``service`` names the server in messages ("metering API", "Prometheus");
        ``timeout_s`` is checked against :data:`heatshift.bounds.METERING_TIMEOUT`."""
        check_options(timeout_s, retries, backoff_base_s, backoff_max_s)
        self.client = client
        self.service = service
        self.timeout_s = timeout_s
        self._retries = retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._max_bytes = max_bytes

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        service: str,
        token: str | None,
        verify: bool | ssl.SSLContext,
        timeout_s: float,
        retries: int,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Requester:
        """A requester with its own connection pool to ``base_url``: JSON accepted, our
        User-Agent, an optional bearer token, no redirects followed. Every setting is checked
        (ValueError, in words) before the pool is opened."""
        check_options(timeout_s, retries, backoff_base_s, backoff_max_s)
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
        client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,
        )
        return cls(
            client,
            service=service,
            timeout_s=timeout_s,
            retries=retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            rng=rng,
            sleep=sleep,
        )

    def deadline(self) -> float:
        """The event loop time by which a request started now must be complete."""
        return asyncio.get_running_loop().time() + self.timeout_s

    async def get(
        self,
        path: str,
        what: str,
        *,
        deadline: float,
        params: Mapping[str, str] | None = None,
    ) -> Answer:
        """The first answer to ``GET path`` that retrying will not change (any status but
        429 and 5xx), complete by ``deadline`` (event loop time). Raises
        :class:`~heatshift.metering.errors.MeteringError` when there is none by then."""
        try:
            async with asyncio.timeout_at(deadline):
                return await self._attempts(path, what, deadline, params)
        except TimeoutError as err:
            raise errors.MeteringUnavailable(
                f"{self.service} gave no complete answer for {what} within {self.timeout_s:g} s"
            ) from err

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Wait before retry number ``attempt`` (1-based): exponential, jittered, capped."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2.0 ** (attempt - 1))
        # Jitter keeps a fleet of sites from retrying in lockstep against a struggling server.
        delay = self._rng.uniform(ceiling / 2.0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._backoff_max_s))
        return delay

    async def _attempts(
        self, path: str, what: str, deadline: float, params: Mapping[str, str] | None
    ) -> Answer:
        attempts = self._retries + 1
        loop = asyncio.get_running_loop()
        for attempt in range(1, attempts + 1):
            cause: Exception | None = None
            retry_after: float | None = None
            try:
                answer = await self._send(path, params)
            except httpx.TimeoutException as err:
                problem, cause = f"timed out after {self.timeout_s:g} s", err
            except httpx.UnsupportedProtocol as err:
                raise errors.MeteringUnavailable(
                    f"{self.service} URL is not usable: {err}"
                ) from err
            except httpx.TransportError as err:
                problem, cause = f"is unreachable ({err or type(err).__name__})", err
            except httpx.HTTPError as err:  # redirects, decoding: retrying will not help
                raise errors.MeteringUnavailable(
                    f"{self.service} request for {what} failed: {err or type(err).__name__}"
                ) from err
            else:
                if not retryable_status(answer.status):
                    return answer
                problem = f"answered HTTP {answer.status}{error_detail(answer)}"
                retry_after = retry_after_s(answer.headers)
            tried = _plural(attempt, "attempt")
            if attempt == attempts:
                raise errors.MeteringUnavailable(
                    f"{self.service} {problem} for {what} ({tried})"
                ) from cause
            delay = self._backoff_s(attempt, retry_after)
            if loop.time() + delay >= deadline:
                # Waiting would only end at the deadline: say what went wrong instead.
                raise errors.MeteringUnavailable(
                    f"{self.service} {problem} for {what} ({tried}; no time left to retry "
                    f"within {self.timeout_s:g} s)"
                ) from cause
            logger.info(
                "metering retry service=%s path=%s attempt=%d/%d problem=%r delay_s=%.2f",
                self.service,
                path,
                attempt,
                attempts,
                problem,
                delay,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    async def _send(self, path: str, params: Mapping[str, str] | None) -> Answer:
        """One GET; the body read up to the cap, never beyond it."""
        async with self.client.stream("GET", path, params=params) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise self._too_large()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > self._max_bytes:
                    raise self._too_large()
            return Answer(response.status_code, response.headers, bytes(body))

    def _too_large(self) -> errors.MeteringMalformed:
        return errors.MeteringMalformed(
            f"{self.service} response is larger than {self._max_bytes} bytes"
        )


def error_detail(answer: Answer) -> str:
    """``": <message>"`` from an error body per the metering contract (``message``) or the
    Prometheus API (``error``), if it has one; else empty. Read leniently: it only words a
    failure, no value of it is used."""
    try:
        parsed = json.loads(answer.body)
    except (ValueError, RecursionError):
        return ""
    if isinstance(parsed, dict):
        for key in ("message", "error"):
            if isinstance(parsed.get(key), str):
                return f": {parsed[key][:200]}"
    return ""
