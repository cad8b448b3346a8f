"""A fake Kubernetes API server on loopback, and the kubeconfigs and plugins to log in to it.

The server answers any collection with no items (enough for ``heatshift plan --dry-run``, the
metering simulator's cluster load and the client's verbs), checks the bearer token against the
ones it accepts, can require a client certificate, can be told to throttle, and records what
each request carried. The exec plugin is a small Python script printing an ExecCredential,
counting its runs in a file. Used by ``tests/test_kube_login.py`` and
``tests/test_kube_client.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import ssl
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from heatshift import tlscert


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    auth: str | None
    content_type: str | None
    body: Any


@dataclasses.dataclass
class FakeApiServer:
    url: str = ""
    accepted: set[str] | None = None
    """Bearer tokens let in; None lets everyone in (the TLS client certificate then decides)."""
    throttle: list[tuple[int, dict[str, str]]] = dataclasses.field(default_factory=list)
    """Answers (status, headers) given before the real one, one per request."""
    objects: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Answers by path; any other path is an empty collection."""
    pages: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    """Answers by path, one per request, before ``objects``."""
    watches: dict[str, list[list[Any]]] = dataclasses.field(default_factory=dict)
    """Watch requests by path: each gets the next script of events, one JSON line each; with
    none left, a watch stays open and quiet until its ``timeoutSeconds``."""
    seen: list[Seen] = dataclasses.field(default_factory=list)

    @property
    def tokens(self) -> list[str | None]:
        return [s.auth.removeprefix("Bearer ") if s.auth else None for s in self.seen]

    async def handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                request.headers.get("Authorization"),
                request.headers.get("Content-Type"),
                json.loads(text) if text else None,
            )
        )
        if self.throttle:
            status, headers = self.throttle.pop(0)
            body = {"kind": "Status", "message": "slow down", "code": status}
            return web.json_response(body, status=status, headers=headers)
        auth = request.headers.get("Authorization", "")
        if self.accepted is not None and auth.removeprefix("Bearer ") not in self.accepted:
            body = {"kind": "Status", "message": "Unauthorized", "code": 401}
            return web.json_response(body, status=401)
        if request.query.get("watch") == "true" and request.path in self.watches:
            return await self._watch(request)
        if self.pages.get(request.path):
            return web.json_response(self.pages[request.path].pop(0))
        if request.path in self.objects:
            found = self.objects[request.path]
            if callable(found):  # a fresh web.Response each time: one cannot be sent twice
                response: web.Response = found()
                return response
            return web.json_response(found)
        if request.method in ("PATCH", "POST"):
            return web.json_response({"echo": json.loads(text) if text else None})
        return web.json_response({"kind": "List", "metadata": {}, "items": []})

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        scripts = self.watches[request.path]
        if not scripts:
            await asyncio.sleep(float(request.query.get("timeoutSeconds", "1")))
            return response
        for event in scripts.pop(0):
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response


@asynccontextmanager
async def serve(
    fake: FakeApiServer, tls: ssl.SSLContext | None = None
) -> AsyncIterator[FakeApiServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@dataclasses.dataclass(frozen=True)
class Pki:
    """A server certificate (for 127.0.0.1 and ``kube.test``) and a client certificate."""

    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        ctx.load_verify_locations(self.client_cert)
        ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
        return ctx


def make_pki(directory: Path) -> Pki:
    server_cert, server_key = tlscert.write_self_signed(
        directory / "server", ["127.0.0.1", "kube.test"]
    )
    client_cert, client_key = tlscert.write_self_signed(directory / "client", ["heatshift-user"])
    return Pki(server_cert, server_key, client_cert, client_key)


PLUGIN = """\
#!{python}
# An exec credential plugin: token "exec-N" on its Nth run, valid for LIFETIME_S seconds.
import datetime, json, os, pathlib, sys
counter = pathlib.Path(os.environ["COUNT_FILE"])
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(runs))
if os.environ.get("FAIL"):
    sys.stderr.write("token service said no\\n")
    sys.exit(1)
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
status = {{"token": f"exec-{{runs}}"}}
lifetime = os.environ.get("LIFETIME_S")
if lifetime:
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=float(lifetime))
    status["expirationTimestamp"] = until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}}))
"""


def write_plugin(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PLUGIN.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def kubeconfig(
    server: str,
    user: dict[str, Any],
    *,
    cluster: dict[str, Any] | None = None,
    user_name: str = "alice",
    context: str = "lab",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [{"name": "lab", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": "lab", "user": user_name}}],
    }


def exec_user(count_file: Path, command: str, **env: str) -> dict[str, Any]:
    variables = {"COUNT_FILE": str(count_file), **env}
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": command,
            "env": [{"name": k, "value": v} for k, v in variables.items()],
            "interactiveMode": "Never",
        }
    }


def write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def now_plus(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
