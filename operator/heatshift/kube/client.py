"""The verbs heatshift uses on the Kubernetes API (get, list, patch, create) and typed errors.

A thin facade over ``kubernetes_asyncio``'s :class:`ApiClient`: the library owns the
connection, TLS, proxies and credentials (:mod:`heatshift.kube.login` sets them up the way
kubectl does); this module adds what heatshift's callers want on top:

- API paths in, plain JSON dicts out: the cycle, snapshot and apply code read raw objects.
- Every failure a :class:`KubeAPIError` with ``status`` and ``retryable``, chained to its cause;
  409 is :class:`KubeConflict`, 404 :class:`KubeNotFound`, a credential that cannot be had or is
  refused :class:`KubeCredentialError`, naming the kubeconfig user.
- A briefly busy API server is waited out: 429 (after its Retry-After) and 5xx are retried a
  few times within a capped total, so the planning cycle does not lose a deadline release to
  one throttled request. A 401 renews the credential once (an exec plugin is run again) and
  retries, as client-go does.

Called by the planning cycle, the webhook handlers, ``heatshift plan --dry-run`` and the
metering simulator's cluster load. Tests use :class:`KubeApi`-compatible fakes or a fake API
server on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import random
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

if TYPE_CHECKING:
    from kubernetes_asyncio.client import api_client

JsonObject = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
"""Server-side apply; JSON is YAML, so the body is sent as JSON."""
DEFAULT_TIMEOUT_S = 15.0
USER_AGENT = "heatshift"

log = logging.getLogger(__name__)


class KubeAPIError(Exception):
    """The API server refused a request, or could not be reached (``status`` 0)."""

    retry_after_s: float | None = None
    """How long the API server asked the client to wait (Retry-After), if it did."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        """True for errors a later attempt may not see: conflicts, throttling, 5xx, network."""
        return self.status in (0, 409, 429) or self.status >= 500


class KubeNotFound(KubeAPIError):
    """The object (or resource type) does not exist."""


class KubeConflict(KubeAPIError):
    """The object changed since it was read (a stale resourceVersion): re-read and retry."""


class KubeGone(KubeAPIError):
    """410: a watch asked for a resourceVersion the server no longer has; list again."""


class KubeCredentialError(KubeAPIError):
    """No usable credential: the plugin is missing or failed, the token file is gone, or the
    API server refused the credential (401, 403). The message names the kubeconfig user."""

    def __init__(self, message: str, status: int = 401, *, by_server: bool = False) -> None:
        super().__init__(message, status)
        self.by_server = by_server
        """The API server refused it (rather than no credential being had at all)."""


class KubeApi(Protocol):
    """The verbs heatshift uses. Paths are API paths (``/apis/batch/v1/...``)."""

    async def get(self, path: str) -> JsonObject: ...

    async def list_objects(self, path: str) -> list[JsonObject]: ...

    async def patch(
        self, path: str, body: JsonObject | list[JsonObject], content_type: str = MERGE_PATCH
    ) -> JsonObject: ...

    async def create(self, path: str, body: JsonObject) -> JsonObject: ...


class Credentials(Protocol):
    """Who the client is, for error messages, and how to get a fresh credential."""

    @property
    def who(self) -> str:
        """E.g. ``kubeconfig user 'eks-admin' (context 'prod')``."""
        ...

    async def renew(self) -> bool:
        """Fetch a fresh credential after a 401; False when there is nothing to renew."""
        ...


def path_for(
    group: str,
    version: str,
    plural: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The API path of a collection or an object (core group when ``group`` is empty)."""
    root = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    parts = [root]
    if namespace is not None:
        parts.append(f"namespaces/{urllib.parse.quote(namespace, safe='')}")
    parts.append(plural)
    if name is not None:
        parts.append(urllib.parse.quote(name, safe=""))
        if subresource is not None:
            parts.append(subresource)
    return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """How long a busy or failing API server is waited out before an error is raised."""

    attempts: int = 4
    """Tries per request, the first included."""
    first_s: float = 0.5
    """The first wait; each next one doubles (with jitter), unless Retry-After says more."""
    longest_s: float = 8.0
    """No single wait is longer, whatever Retry-After asks."""
    budget_s: float = 20.0
    """Total waiting per request; a wait that would pass it is not made."""


NO_RETRY = Backoff(attempts=1)

_GATEWAY_ERRORS = frozenset({500, 502, 503, 504})


def _worth_retrying(method: str, status: int) -> bool:
    """429 was not processed, so any verb may repeat it. Otherwise only what repeats safely:
    reads and heatshift's merge patches; a create only when the server said it is unavailable."""
    if status == 429:
        return True
    if method == "POST":
        return status == 503
    return status == 0 or status in _GATEWAY_ERRORS


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), if any."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class _Anonymous:
    """For a client built without a login (tests): nobody, nothing to renew."""

    who = "the client"

    async def renew(self) -> bool:
        return False


class Client:
    """:class:`KubeApi` on a ``kubernetes_asyncio`` ApiClient. Use as an async context manager
    (closing it closes the ApiClient)."""

    def __init__(
        self,
        api: api_client.ApiClient,
        credentials: Credentials | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        backoff: Backoff = Backoff(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api_client = api
        # The API server names the field manager of a patch after the user agent: heatshift's
        # writes show as "heatshift" in managedFields.
        api.user_agent = USER_AGENT
        self.credentials: Credentials = credentials or _Anonymous()
        self._timeout_s = timeout_s
        self._backoff = backoff
        self._sleep = sleep

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.api_client.close()

    async def _once(
        self, method: str, path: str, body: object, content_type: str, query: list[tuple[str, str]]
    ) -> JsonObject:
        # Imported here: the generated client is large, and most heatshift commands never
        # talk to a cluster.
        from kubernetes_asyncio.client import exceptions

        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            found = await self.api_client.call_api(
                path,
                method,
                query_params=query,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object"},
                _return_http_data_only=True,
                _request_timeout=self._timeout_s,
            )
        except exceptions.ApiException as err:
            raise _error(method, path, err, self.credentials.who) from err
        except (aiohttp.ClientError, TimeoutError) as err:
            raise KubeAPIError(f"{method} {path}: {err or type(err).__name__}") from err
        if not isinstance(found, dict):
            raise KubeAPIError(f"{method} {path}: answer is not a JSON object", 200)
        return found

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> JsonObject:
        """One call, with throttling and a 401 handled; the last error if all tries fail."""
        waited = 0.0
        renewed = False
        attempt = 1
        while True:
            try:
                return await self._once(method, path, body, content_type, query or [])
            except KubeCredentialError as err:
                # A token may expire before its stated time (or state none): renew it once.
                if err.status == 401 and err.by_server and not renewed:
                    renewed = True
                    if await self.credentials.renew():
                        continue
                raise
            except KubeAPIError as err:
                if attempt >= self._backoff.attempts or not _worth_retrying(method, err.status):
                    raise
                pause = self._pause(attempt, err)
                if waited + pause > self._backoff.budget_s:
                    raise
                log.info("%s %s: %s; trying again in %.1fs", method, path, err, pause)
                await self._sleep(pause)
                waited += pause
                attempt += 1

    def _pause(self, attempt: int, err: KubeAPIError) -> float:
        if err.retry_after_s is not None:
            return min(err.retry_after_s, self._backoff.longest_s)
        doubled: float = self._backoff.first_s * 2.0 ** (attempt - 1)
        return min(doubled * random.uniform(0.8, 1.2), self._backoff.longest_s)

    async def get(self, path: str) -> JsonObject:
        return await self._request("GET", path)

    async def list_objects(self, path: str) -> list[JsonObject]:
        """Every item of a collection, following ``continue`` tokens."""
        items, _ = await self.list_versioned(path)
        return items

    async def list_pages(
        self, path: str, *, limit: int = 500
    ) -> AsyncIterator[tuple[list[JsonObject], str]]:
        """A collection's items a page at a time, each with the list's resourceVersion (to
        watch from). The pages of one list are one consistent snapshot (the server's
        ``continue`` token); a caller that keeps only what it needs of each page never holds
        the whole collection's JSON at once."""
        token = ""
        version = ""
        while True:
            query = [("limit", str(limit))] + ([("continue", token)] if token else [])
            page = await self._request("GET", path, query=query)
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "")
            yield [i for i in page.get("items") or [] if isinstance(i, dict)], version
            if not token:
                return

    async def list_versioned(self, path: str) -> tuple[list[JsonObject], str]:
        """Every item of a collection and the collection's resourceVersion."""
        items: list[JsonObject] = []
        version = ""
        async for page, page_version in self.list_pages(path):
            items.extend(page)
            version = page_version
        return items, version

    async def watch(
        self, path: str, resource_version: str, *, timeout_s: float
    ) -> AsyncIterator[JsonObject]:
        """The events of one watch request from ``resource_version`` (bookmarks included),
        until the server ends it after ``timeout_s``. A 410 is :class:`KubeGone`; a refused
        credential is renewed (an exec plugin run again) before the error is raised, so the
        caller's next watch has a fresh one."""
        from kubernetes_asyncio.client import exceptions

        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(max(1, int(timeout_s)))),
        ]
        method = "WATCH"
        try:
            response = await self.api_client.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                # The server ends the watch; this only bounds a connection that went silent.
                _request_timeout=timeout_s + 60,
            )
        except exceptions.ApiException as err:
            found = _error(method, path, err, self.credentials.who)
            if isinstance(found, KubeCredentialError) and found.status == 401:
                await self.credentials.renew()
            raise found from err
        except (aiohttp.ClientError, TimeoutError) as err:
            raise KubeAPIError(f"{method} {path}: {err or type(err).__name__}") from err
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, TimeoutError) as err:
                    raise KubeAPIError(f"{method} {path}: {err or type(err).__name__}") from err
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError as err:
                    problem = f"{method} {path}: an event is not JSON: {err}"
                    raise KubeAPIError(problem, 200) from err
                if not isinstance(event, dict):
                    raise KubeAPIError(f"{method} {path}: an event is not a JSON object", 200)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    code = int(status.get("code") or 0)
                    message = f"{method} {path}: HTTP {code}: {status.get('message', '')}"
                    raise KubeGone(message, code) if code == 410 else KubeAPIError(message, code)
                yield event
        finally:
            response.release()

    async def patch(
        self, path: str, body: JsonObject | list[JsonObject], content_type: str = MERGE_PATCH
    ) -> JsonObject:
        return await self._request("PATCH", path, body=body, content_type=content_type)

    async def apply(self, path: str, body: JsonObject, *, field_manager: str) -> JsonObject:
        """Server-side apply of ``body`` as ``field_manager``, taking over conflicting fields
        (as controllers do: the manager owns what it applies)."""
        query = [("fieldManager", field_manager), ("force", "true")]
        return await self._request("PATCH", path, body=body, content_type=APPLY_PATCH, query=query)

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        return await self._request("POST", path, body=body)


def _error(method: str, path: str, err: Any, who: str) -> KubeAPIError:
    status = int(getattr(err, "status", 0) or 0)
    text = err.body if isinstance(err.body, str) else ""
    detail = text[:300] or str(getattr(err, "reason", "") or "")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            detail = parsed["message"]
    except ValueError:
        pass
    message = f"{method} {path}: HTTP {status}: {detail}"
    found: KubeAPIError
    if status == 401:
        found = KubeCredentialError(
            f"{who}: the API server refused the credential: {message}", status, by_server=True
        )
    elif status == 403:
        found = KubeCredentialError(f"{who} is not allowed: {message}", status, by_server=True)
    elif status == 404:
        found = KubeNotFound(message, status)
    elif status == 409:
        found = KubeConflict(message, status)
    else:
        found = KubeAPIError(message, status)
    found.retry_after_s = _retry_after(getattr(err, "headers", None))
    return found
