"""The facade over kubernetes_asyncio's client over real HTTP: paths, paging, patches, typed
errors, and a busy API server waited out within bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

import fake_apiserver as fake
from heatshift.kube import client, login


def test_paths() -> None:
    assert client.path_for("", "v1", "nodes") == "/api/v1/nodes"
    assert client.path_for("batch", "v1", "jobs", namespace="a b") == (
        "/apis/batch/v1/namespaces/a%20b/jobs"
    )
    assert (
        client.path_for("heatshift.dev", "v1alpha1", "leafsites", name="x", subresource="status")
        == "/apis/heatshift.dev/v1alpha1/leafsites/x/status"
    )


@pytest_asyncio.fixture
async def server() -> AsyncIterator[fake.FakeApiServer]:
    async with fake.serve(fake.FakeApiServer()) as found:
        found.objects = {
            "/x/conflict": lambda: web.json_response({"message": "stale"}, status=409),
            "/x/missing": lambda: web.json_response({"message": "gone"}, status=404),
            "/x/broken": lambda: web.Response(text="oops", status=503),
            "/x/text": lambda: web.Response(text="not json"),
        }
        yield found


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest_asyncio.fixture
async def session(
    server: fake.FakeApiServer, tmp_path: Path
) -> AsyncIterator[tuple[login.Session, Sleeps]]:
    path = fake.write(tmp_path / "kubeconfig", fake.kubeconfig(server.url, {"token": "abc"}))
    sleeps = Sleeps()
    async with await login.connect(path) as found:
        found.api = client.Client(found.api.api_client, found, sleep=sleeps)
        yield found, sleeps


@pytest.mark.asyncio
async def test_list_follows_continue_tokens_and_sends_the_token(
    server: fake.FakeApiServer, session: tuple[login.Session, Sleeps]
) -> None:
    server.pages["/api/v1/nodes"] = [
        {"metadata": {"continue": "page2"}, "items": [{"n": 1}]},
        {"metadata": {}, "items": [{"n": 2}]},
    ]
    assert await session[0].api.list_objects("/api/v1/nodes") == [{"n": 1}, {"n": 2}]
    assert [s.query.get("continue") for s in server.seen] == [None, "page2"]
    assert all(s.query.get("limit") == "500" for s in server.seen)
    assert set(server.tokens) == {"abc"}


@pytest.mark.asyncio
async def test_patch_and_create_send_json(
    server: fake.FakeApiServer, session: tuple[login.Session, Sleeps]
) -> None:
    api = session[0].api
    patched = await api.patch("/y", {"spec": {"suspend": False}})
    created = await api.create("/z", {"kind": "Event"})
    assert patched["echo"] == {"spec": {"suspend": False}}
    assert created["echo"] == {"kind": "Event"}
    assert server.seen[0].content_type == client.MERGE_PATCH
    assert server.seen[1].method == "POST"


@pytest.mark.asyncio
async def test_apply_is_a_forced_server_side_apply_as_the_named_manager(
    server: fake.FakeApiServer, session: tuple[login.Session, Sleeps]
) -> None:
    body = {"apiVersion": "v1", "kind": "X", "status": {"a": 1}}
    applied = await session[0].api.apply("/w/status", body, field_manager="heatshift-check")
    assert applied["echo"] == body
    (seen,) = server.seen
    assert (seen.method, seen.content_type) == ("PATCH", client.APPLY_PATCH)
    assert seen.query == {"fieldManager": "heatshift-check", "force": "true"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "error", "status", "retryable"),
    [
        ("/x/conflict", client.KubeConflict, 409, True),
        ("/x/missing", client.KubeNotFound, 404, False),
        ("/x/broken", client.KubeAPIError, 503, True),
    ],
)
async def test_http_errors_are_typed(
    session: tuple[login.Session, Sleeps],
    path: str,
    error: type[client.KubeAPIError],
    status: int,
    retryable: bool,
) -> None:
    with pytest.raises(error) as caught:
        await session[0].api.get(path)
    assert caught.value.status == status
    assert caught.value.retryable is retryable


@pytest.mark.asyncio
async def test_an_answer_that_is_not_json_is_an_error(
    session: tuple[login.Session, Sleeps],
) -> None:
    with pytest.raises(client.KubeAPIError, match="not a JSON object"):
        await session[0].api.get("/x/text")


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_retryable_error(tmp_path: Path) -> None:
    path = fake.write(tmp_path / "k", fake.kubeconfig("http://127.0.0.1:9", {"token": "t"}))
    async with await login.connect(path) as found:
        api = client.Client(found.api.api_client, found, backoff=client.NO_RETRY, timeout_s=2)
        with pytest.raises(client.KubeAPIError) as caught:
            await api.get("/api/v1/nodes")
    assert caught.value.status == 0 and caught.value.retryable


@pytest.mark.asyncio
async def test_throttling_is_waited_out_as_retry_after_asks_within_a_cap(
    server: fake.FakeApiServer, session: tuple[login.Session, Sleeps]
) -> None:
    api, sleeps = session[0].api, session[1]
    server.throttle = [(429, {"Retry-After": "2"}), (429, {"Retry-After": "600"}), (500, {})]
    assert await api.patch("/release", {"spec": {"suspend": False}}) == {
        "echo": {"spec": {"suspend": False}}
    }
    assert len(server.seen) == 4
    assert sleeps.waits[:2] == [2.0, client.Backoff().longest_s]  # 600 s is not waited
    assert 0.8 * 2.0 <= sleeps.waits[2] <= 1.2 * 2.0  # the third doubles, with jitter


@pytest.mark.asyncio
async def test_a_server_busy_for_longer_is_an_error_after_a_few_tries(
    server: fake.FakeApiServer, session: tuple[login.Session, Sleeps]
) -> None:
    api, sleeps = session[0].api, session[1]
    server.throttle = [(503, {})] * 10
    with pytest.raises(client.KubeAPIError) as caught:
        await api.get("/api/v1/nodes")
    assert caught.value.status == 503 and caught.value.retryable
    assert len(server.seen) == client.Backoff().attempts
    assert sum(sleeps.waits) <= client.Backoff().budget_s


@pytest.mark.asyncio
async def test_a_create_is_not_repeated_after_an_error_that_may_have_applied_it(
    server: fake.FakeApiServer, session: tuple[login.Session, Sleeps]
) -> None:
    server.throttle = [(500, {})]
    with pytest.raises(client.KubeAPIError) as caught:
        await session[0].api.create("/api/v1/namespaces/a/events", {"kind": "Event"})
    assert caught.value.status == 500
    assert len(server.seen) == 1
