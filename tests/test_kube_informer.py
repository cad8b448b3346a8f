"""The Job and Pod informers over real HTTP (a fake API server on loopback): list, watch,
resume, list again after a 410, and the client's watch verb beneath them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import fake_apiserver as fake
import kube_fixtures as kf
from heatshift.kube import client, informer, login, view, workloads

JOBS = "/apis/batch/v1/jobs"


@pytest_asyncio.fixture
async def server() -> AsyncIterator[fake.FakeApiServer]:
    async with fake.serve(fake.FakeApiServer()) as found:
        yield found


@pytest_asyncio.fixture
async def api(server: fake.FakeApiServer, tmp_path: Path) -> AsyncIterator[client.Client]:
    path = fake.write(tmp_path / "kubeconfig", fake.kubeconfig(server.url, {"token": "abc"}))
    async with await login.connect(path) as session:
        yield session.api


def _job(name: str, version: str, **kwargs: Any) -> dict[str, Any]:
    body = kf.job(name, **kwargs)
    body["metadata"].update(uid=f"uid-{name}", resourceVersion=version)
    return body


def _event(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": body}


def _bookmark(version: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "Job", "metadata": {"resourceVersion": version}}}


def _gone() -> dict[str, Any]:
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    return {"type": "ERROR", "object": status}


def _names(inf: informer.Informer[workloads.Workload]) -> list[str]:
    return sorted(r.name for records in inf.store.values() for r in records)


async def _until(done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async def poll() -> None:
        while not done():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


@pytest.mark.asyncio
async def test_the_watch_verb_streams_events_from_a_version_and_a_410_is_gone(
    server: fake.FakeApiServer, api: client.Client
) -> None:
    server.watches[JOBS] = [[_event("ADDED", _job("a", "11")), _bookmark("12")], [_gone()]]

    events = [e async for e in api.watch(JOBS, "10", timeout_s=30)]

    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    (seen,) = server.seen
    assert seen.query == {
        "watch": "true",
        "resourceVersion": "10",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "30",
    }
    assert seen.auth == "Bearer abc"
    with pytest.raises(client.KubeGone):
        async for _ in api.watch(JOBS, "12", timeout_s=30):
            pass


@pytest.mark.asyncio
async def test_a_versioned_list_follows_pages_and_keeps_the_first_pages_version(
    server: fake.FakeApiServer, api: client.Client
) -> None:
    server.pages[JOBS] = [
        {"metadata": {"continue": "p2", "resourceVersion": "40"}, "items": [{"n": 1}]},
        {"metadata": {"resourceVersion": "40"}, "items": [{"n": 2}]},
    ]
    assert await api.list_versioned(JOBS) == ([{"n": 1}, {"n": 2}], "40")


@pytest.mark.asyncio
async def test_an_informer_lists_then_follows_the_watch_and_finished_jobs_leave(
    server: fake.FakeApiServer, api: client.Client
) -> None:
    server.pages[JOBS] = [
        {"metadata": {"resourceVersion": "10"}, "items": [_job("old", "9", suspend=False)]}
    ]
    server.watches[JOBS] = [
        [
            _event("ADDED", _job("held", "11")),
            _event("MODIFIED", _job("old", "12", suspend=False, finished="Complete")),
            _bookmark("13"),
        ]
    ]
    heard = view.Heard()
    woken: list[str] = []
    inf = informer.Informer(
        api,
        JOBS,
        "jobs",
        view.job_record,
        heard,
        on_change=lambda r: woken.append(r.name),
        first_pause_s=0.01,
    )
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(inf.synced.wait(), 10)
        await _until(lambda: _names(inf) == ["held"])
        # The second watch resumes from the bookmark's version, with no list in between.
        await _until(lambda: len([s for s in server.seen if s.query.get("watch")]) == 2)
    finally:
        task.cancel()
    watches = [s.query["resourceVersion"] for s in server.seen if s.query.get("watch")]
    assert watches == ["10", "13"]
    assert inf.lists == 1
    assert woken == ["old", "held"]
    assert "jobs" in heard.at


@pytest.mark.asyncio
async def test_after_a_410_the_informer_lists_again_and_forgets_what_was_deleted_meanwhile(
    server: fake.FakeApiServer, api: client.Client
) -> None:
    server.pages[JOBS] = [
        {"metadata": {"resourceVersion": "10"}, "items": [_job("a", "5"), _job("b", "6")]},
        # Listed again after the 410: b was deleted while no watch was open.
        {"metadata": {"resourceVersion": "30"}, "items": [_job("a", "5"), _job("c", "29")]},
    ]
    server.watches[JOBS] = [[_gone()]]
    inf = informer.Informer(api, JOBS, "jobs", view.job_record, view.Heard(), first_pause_s=0.01)
    task = asyncio.create_task(inf.run())
    try:
        await _until(lambda: inf.lists == 2)
    finally:
        task.cancel()
    assert _names(inf) == ["a", "c"]


@pytest.mark.asyncio
async def test_an_api_server_refusing_the_list_is_tried_again_and_nothing_plans_before(
    server: fake.FakeApiServer, api: client.Client
) -> None:
    refusals = [(403, {})]
    server.throttle = refusals
    server.pages[JOBS] = [{"metadata": {"resourceVersion": "7"}, "items": [_job("a", "5")]}]
    server.watches[JOBS] = []
    inf = informer.Informer(api, JOBS, "jobs", view.job_record, view.Heard(), first_pause_s=0.01)
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(inf.synced.wait(), 10)
    finally:
        task.cancel()
    assert _names(inf) == ["a"] and inf.lists == 1
    assert refusals == []  # the first list was refused, the second one taken


class _PagedApi:
    """Lists in pages and records what the informer had done when each page was asked for."""

    def __init__(self, pages: list[list[dict[str, Any]]], inf_of: Callable[[], Any]) -> None:
        self.pages = pages
        self.inf_of = inf_of
        self.recorded_before_page: list[int] = []
        self.stored_before_page: list[list[str]] = []
        self.recorded = 0

    def record(self, body: Any) -> workloads.Workload | None:
        self.recorded += 1
        return view.job_record(body)

    async def list_pages(self, path: str) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        for page in self.pages:
            self.recorded_before_page.append(self.recorded)
            self.stored_before_page.append(_names(self.inf_of()))
            yield page, "50"

    async def watch(
        self, path: str, resource_version: str, *, timeout_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        await asyncio.sleep(3600)
        yield {}


@pytest.mark.asyncio
async def test_a_list_is_taken_a_page_at_a_time_and_swapped_in_whole() -> None:
    # Each page is reduced to records before the next is fetched (so the collection's JSON
    # is never held at once), and readers see the old store until the last page is in.
    pages = [[_job("a", "1"), _job("b", "2")], [_job("c", "3")], [_job("d", "4")]]
    holder: list[informer.Informer[workloads.Workload]] = []
    api = _PagedApi(pages, lambda: holder[0])
    inf = informer.Informer(api, JOBS, "jobs", api.record, view.Heard())
    inf.store.by_ns["batch"] = {"uid-old": view.job_record(_job("old", "0"))}
    holder.append(inf)
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(inf.synced.wait(), 10)
    finally:
        task.cancel()
    assert api.recorded_before_page == [0, 2, 3]
    assert api.stored_before_page == [["old"], ["old"], ["old"]]
    assert _names(inf) == ["a", "b", "c", "d"]


def test_a_namespaced_operator_watches_each_of_its_namespaces() -> None:
    found = informer.Informers(kf.FakeApi(), ["ml", "render"], view.Heard())  # type: ignore[arg-type]
    assert [i.path for i in found.informers] == [
        "/apis/batch/v1/namespaces/ml/jobs",
        "/apis/batch/v1/namespaces/render/jobs",
        "/api/v1/namespaces/ml/pods",
        "/api/v1/namespaces/render/pods",
        # Cluster-scoped, for the webhook: in every replica, whatever it watches.
        "/apis/heatshift.dev/v1alpha1/heatpolicies",
        "/api/v1/namespaces",
    ]
    cluster_wide = informer.Informers(kf.FakeApi(), [], view.Heard())  # type: ignore[arg-type]
    assert [i.path for i in cluster_wide.informers][:2] == [JOBS, "/api/v1/pods"]
