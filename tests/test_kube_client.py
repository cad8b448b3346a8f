"""The small Kubernetes client over real HTTP: paths, auth, paging, patches, typed errors."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from heatshift import tlscert
from heatshift.kube import client


def test_paths() -> None:
    assert client.path_for("", "v1", "nodes") == "/api/v1/nodes"
    assert client.path_for("batch", "v1", "jobs", namespace="a b") == (
        "/apis/batch/v1/namespaces/a%20b/jobs"
    )
    assert (
        client.path_for("heatshift.dev", "v1alpha1", "leafsites", name="x", subresource="status")
        == "/apis/heatshift.dev/v1alpha1/leafsites/x/status"
    )


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[str, Recorder]]:
    seen = Recorder()

    async def handle(request: web.Request) -> web.Response:
        body = await request.text()
        seen.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "auth": request.headers.get("Authorization"),
                "type": request.headers.get("Content-Type"),
                "body": json.loads(body) if body else None,
            }
        )
        if request.path == "/api/v1/nodes":
            if request.query.get("continue") == "page2":
                return web.json_response({"metadata": {}, "items": [{"n": 2}]})
            return web.json_response({"metadata": {"continue": "page2"}, "items": [{"n": 1}]})
        if request.path.endswith("/conflict"):
            return web.json_response({"kind": "Status", "message": "stale version"}, status=409)
        if request.path.endswith("/missing"):
            return web.json_response({"kind": "Status", "message": "not found"}, status=404)
        if request.path.endswith("/broken"):
            return web.Response(text="oops", status=503)
        if request.path.endswith("/text"):
            return web.Response(text="not json")
        return web.json_response({"ok": True, "echo": json.loads(body) if body else None})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.mark.asyncio
async def test_list_follows_continue_tokens_and_sends_the_token(
    server: tuple[str, Recorder],
) -> None:
    url, seen = server
    async with client.Client(client.Connection(server=url, token="abc")) as api:
        items = await api.list_objects("/api/v1/nodes")
    assert items == [{"n": 1}, {"n": 2}]
    assert [r["query"].get("continue") for r in seen.requests] == [None, "page2"]
    assert all(r["auth"] == "Bearer abc" for r in seen.requests)


@pytest.mark.asyncio
async def test_patch_and_create_send_json(server: tuple[str, Recorder]) -> None:
    url, seen = server
    async with client.Client(client.Connection(server=url)) as api:
        patched = await api.patch("/x", {"spec": {"suspend": False}})
        created = await api.create("/y", {"kind": "Event"})
    assert patched["echo"] == {"spec": {"suspend": False}}
    assert created["echo"] == {"kind": "Event"}
    assert seen.requests[0]["type"] == client.MERGE_PATCH
    assert seen.requests[0]["auth"] is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "error", "status", "retryable"),
    [
        ("/conflict", client.KubeConflict, 409, True),
        ("/missing", client.KubeNotFound, 404, False),
        ("/broken", client.KubeAPIError, 503, True),
    ],
)
async def test_http_errors_are_typed(
    server: tuple[str, Recorder],
    path: str,
    error: type[client.KubeAPIError],
    status: int,
    retryable: bool,
) -> None:
    url, _ = server
    async with client.Client(client.Connection(server=url)) as api:
        with pytest.raises(error) as caught:
            await api.get(path)
    assert caught.value.status == status
    assert caught.value.retryable is retryable


@pytest.mark.asyncio
async def test_an_answer_that_is_not_json_is_an_error(server: tuple[str, Recorder]) -> None:
    url, _ = server
    async with client.Client(client.Connection(server=url)) as api:
        with pytest.raises(client.KubeAPIError, match="not JSON"):
            await api.get("/text")


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_retryable_error() -> None:
    async with client.Client(client.Connection(server="http://127.0.0.1:9"), timeout_s=2) as api:
        with pytest.raises(client.KubeAPIError) as caught:
            await api.get("/api/v1/nodes")
    assert caught.value.status == 0 and caught.value.retryable


def test_inline_certificates_are_read_as_a_kubeconfig_inlines_them(tmp_path: Path) -> None:
    # kubeconfig (and so Kopf's login) hands over base64 of PEM; PEM itself works too.
    cert_path, key_path = tlscert.write_self_signed(tmp_path, ["localhost"])
    pem = cert_path.read_text()
    inline = base64.b64encode(pem.encode()).decode()
    assert client.as_pem(inline) == pem
    assert client.as_pem(pem.encode()) == pem
    for ca in (inline, pem):
        conn = client.Connection(
            server="https://localhost:6443",
            ca_data=ca,
            certificate_data=inline,
            private_key_data=base64.b64encode(key_path.read_bytes()).decode(),
        )
        api = client.Client(conn)  # raises ssl.SSLError if any of them is misread
        asyncio.run(api.aclose())


def test_a_client_that_cannot_set_up_tls_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    conn = client.Connection(server="https://localhost:6443", ca_data="bm90IGEgY2VydA==")
    with pytest.raises(ssl.SSLError):
        client.Client(conn)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.asyncio
async def test_a_rotated_service_account_token_is_read_again(
    server: tuple[str, Recorder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = server
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    conn = client.Connection(server=url, token="first", token_path=str(token_file))
    async with client.Client(conn) as api:
        await api.patch("/x", {})
        token_file.write_text("second\n")  # the kubelet rotated it
        await api.patch("/x", {})  # within the re-read interval: still the first
        monkeypatch.setattr(client, "TOKEN_REREAD_S", 0.0)
        await api.patch("/x", {})
        token_file.unlink()  # unreadable: keep the last one
        await api.patch("/x", {})
    assert [r["auth"] for r in seen.requests] == [
        "Bearer first",
        "Bearer first",
        "Bearer second",
        "Bearer second",
    ]
