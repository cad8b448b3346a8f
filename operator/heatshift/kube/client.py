"""A small async Kubernetes API client: get, list, patch, create, and typed errors.

heatshift needs a handful of verbs on a handful of resources, so this speaks the REST API
directly over aiohttp (already a dependency) instead of pulling in a generated client. Kopf
keeps its own connection for watching; the wiring (:mod:`heatshift.handlers`) hands this client
the same credentials Kopf logged in with. Every HTTP error becomes a :class:`KubeAPIError`
subclass chained to its cause; 409 is :class:`KubeConflict`, 404 :class:`KubeNotFound`.

Called by the planning cycle, the webhook handlers and ``heatshift plan --dry-run``. Tests use
:class:`KubeApi`-compatible fakes or a Kubernetes API emulator.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import aiohttp

JsonObject = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT_S = 15.0
TOKEN_REREAD_S = 60.0
"""How often a rotated token file is read again."""

log = logging.getLogger(__name__)


class KubeAPIError(Exception):
    """The API server refused a request, or could not be reached (``status`` 0)."""

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


class KubeApi(Protocol):
    """The verbs heatshift uses. Paths are API paths (``/apis/batch/v1/...``)."""

    async def get(self, path: str) -> JsonObject: ...

    async def list_objects(self, path: str) -> list[JsonObject]: ...

    async def patch(
        self, path: str, body: JsonObject | list[JsonObject], content_type: str = MERGE_PATCH
    ) -> JsonObject: ...

    async def create(self, path: str, body: JsonObject) -> JsonObject: ...


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
class Connection:
    """Where the API server is and how to authenticate (mirrors Kopf's ConnectionInfo).

    The ``*_data`` fields hold PEM, or base64 of PEM as a kubeconfig inlines it."""

    server: str
    ca_path: str | None = None
    ca_data: str | bytes | None = None
    insecure: bool = False
    token: str | None = None
    scheme: str | None = None
    certificate_path: str | None = None
    certificate_data: str | bytes | None = None
    private_key_path: str | None = None
    private_key_data: str | bytes | None = None
    token_path: str | None = None
    """A file the token is re-read from (a pod's service-account token, which the kubelet
    rotates); it then replaces ``token``."""


def as_pem(data: str | bytes) -> str:
    """PEM text from PEM or from a kubeconfig's base64 of it (as Kopf reads them)."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    if text.lstrip().startswith("-----BEGIN "):
        return text
    return base64.b64decode(text).decode("ascii")


def _as_file(data: str | bytes, directory: Path, name: str) -> str:
    """Client certificates must come from files for ``ssl``; kubeconfig may inline them."""
    path = directory / name
    path.write_text(as_pem(data), encoding="ascii")
    return str(path)


def _ssl_context(conn: Connection, scratch: Path) -> ssl.SSLContext | bool:
    if not conn.server.startswith("https://"):
        return False
    if conn.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif conn.ca_data is not None:
        ctx = ssl.create_default_context(cadata=as_pem(conn.ca_data))
    else:
        ctx = ssl.create_default_context(cafile=conn.ca_path)
    cert = conn.certificate_path
    key = conn.private_key_path
    if conn.certificate_data is not None:
        cert = _as_file(conn.certificate_data, scratch, "client.crt")
    if conn.private_key_data is not None:
        key = _as_file(conn.private_key_data, scratch, "client.key")
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class Client:
    """An aiohttp session against one API server. Use as an async context manager."""

    def __init__(self, conn: Connection, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.connection = conn
        self._scratch = tempfile.TemporaryDirectory(prefix="heatshift-kube-")
        headers = {"Accept": "application/json", "User-Agent": "heatshift"}
        if conn.token:
            headers["Authorization"] = f"{conn.scheme or 'Bearer'} {conn.token}"
        try:
            self._ssl = _ssl_context(conn, Path(self._scratch.name))
        except BaseException:
            self._scratch.cleanup()  # no client, so no aclose() to do it later
            raise
        self._base = conn.server.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._token = conn.token
        self._token_read_at = time.monotonic()

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
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._scratch.cleanup()

    def _current_token(self) -> str | None:
        """The rotated service-account token, re-read at most every TOKEN_REREAD_S."""
        path = self.connection.token_path
        if path is None:
            return None
        now = time.monotonic()
        if self._token is None or now - self._token_read_at >= TOKEN_REREAD_S:
            try:
                self._token = Path(path).read_text().strip() or self._token
            except OSError as err:
                # Keep the last token: the API server says if it has really expired.
                log.warning("cannot re-read the token at %s: %s", path, err)
            self._token_read_at = now
        return self._token

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session must be born inside the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> JsonObject:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        token = self._current_token()
        if token:
            headers["Authorization"] = f"{self.connection.scheme or 'Bearer'} {token}"
        url = self._base + path
        try:
            async with self._http().request(
                method, url, data=data, headers=headers, params=params, ssl=self._ssl
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise KubeAPIError(f"{method} {path}: {err or type(err).__name__}") from err
        if status >= 400:
            raise _error(method, path, status, text)
        try:
            parsed = json.loads(text) if text else {}
        except ValueError as err:
            raise KubeAPIError(f"{method} {path}: answer is not JSON", status) from err
        if not isinstance(parsed, dict):
            raise KubeAPIError(f"{method} {path}: answer is not a JSON object", status)
        return parsed

    async def get(self, path: str) -> JsonObject:
        return await self._request("GET", path)

    async def list_objects(self, path: str) -> list[JsonObject]:
        """Every item of a collection, following ``continue`` tokens."""
        items: list[JsonObject] = []
        token = ""
        while True:
            params = {"limit": "500"} | ({"continue": token} if token else {})
            page = await self._request("GET", path, params=params)
            items.extend(i for i in page.get("items") or [] if isinstance(i, dict))
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return items

    async def patch(
        self, path: str, body: JsonObject | list[JsonObject], content_type: str = MERGE_PATCH
    ) -> JsonObject:
        return await self._request("PATCH", path, body=body, content_type=content_type)

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        return await self._request("POST", path, body=body)


def _error(method: str, path: str, status: int, text: str) -> KubeAPIError:
    detail = text[:300]
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            detail = parsed["message"]
    except ValueError:
        pass
    message = f"{method} {path}: HTTP {status}: {detail}"
    if status == 404:
        return KubeNotFound(message, status)
    if status == 409:
        return KubeConflict(message, status)
    return KubeAPIError(message, status)
