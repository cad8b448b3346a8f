"""Applying a release: the patch, idempotence, conflicts and retries, running work untouched."""

from __future__ import annotations

from typing import Any

import pytest

import kube_fixtures as kf
from heatshift.kube import apply, client, events, workloads

JOB_PATH = "/apis/batch/v1/namespaces/batch/jobs/train"
POD_PATH = "/api/v1/namespaces/batch/pods/solo"
SELECTOR = {kf.SITE_LABEL: "flats"}


def _release(
    kind: workloads.Kind = workloads.Kind.JOB, name: str = "train", site: str | None = "flats"
) -> apply.Release:
    return apply.Release(
        kind=kind,
        namespace="batch",
        name=name,
        site=site,
        node_selector=SELECTOR if site else {},
        decision="why flats: it wants 20 kW; why now: the plan starts it now",
        reason=apply.ReleaseKind.HEAT,
        policy="batch",
    )


def test_the_job_patch_places_unsuspends_and_records_the_decision() -> None:
    patch = apply.release_patch(kf.job(resource_version="7"), _release(), kf.NOW)
    assert patch == {
        "metadata": {
            "annotations": {
                workloads.SITE: "flats",
                workloads.RELEASED_AT: kf.NOW_TEXT,
                workloads.DECISION: _release().decision,
                workloads.POLICY: "batch",
            },
            "resourceVersion": "7",
        },
        "spec": {"suspend": False, "template": {"spec": {"nodeSelector": SELECTOR}}},
    }


def test_the_pod_patch_removes_only_our_gate() -> None:
    pod = kf.pod()
    pod["spec"]["schedulingGates"].insert(0, {"name": "example.com/other"})
    patch = apply.release_patch(pod, _release(workloads.Kind.POD, "solo"), kf.NOW)
    assert patch is not None
    assert patch["spec"] == {
        "schedulingGates": [{"name": "example.com/other"}],
        "nodeSelector": SELECTOR,
    }


def test_a_release_without_a_site_sets_no_selector() -> None:
    patch = apply.release_patch(kf.job(), _release(site=None), kf.NOW)
    assert patch is not None
    assert patch["spec"] == {"suspend": False}
    assert workloads.SITE not in patch["metadata"]["annotations"]


@pytest.mark.parametrize(
    "body",
    [
        kf.job(suspend=False),
        kf.job(annotations={workloads.RELEASED_AT: kf.NOW_TEXT}),
        kf.job(finished="Complete"),
    ],
)
def test_nothing_to_patch_when_not_held(body: dict[str, Any]) -> None:
    assert apply.release_patch(body, _release(), kf.NOW) is None


def _api(*objs: dict[str, Any]) -> kf.FakeApi:
    api = kf.FakeApi()
    kf.store(api, *objs)
    return api


@pytest.mark.asyncio
async def test_apply_releases_once_and_posts_an_event() -> None:
    api = _api(kf.job())
    recorder = events.Recorder(api)

    first = await apply.apply_release(api, _release(), kf.NOW, recorder)
    again = await apply.apply_release(api, _release(), kf.NOW + 60, recorder)

    assert (first, again) == (apply.Outcome.RELEASED, apply.Outcome.ALREADY_RELEASED)
    job = api.objects[JOB_PATH]
    assert job["spec"]["suspend"] is False
    assert job["spec"]["template"]["spec"]["nodeSelector"] == SELECTOR
    assert job["metadata"]["annotations"][workloads.RELEASED_AT] == kf.NOW_TEXT
    assert len(api.patches(JOB_PATH)) == 1  # the second run changed nothing
    (event,) = api.events("Released")
    assert event["involvedObject"]["name"] == "train"
    assert event["type"] == "Normal"
    assert "LeafSite flats" in event["message"] and "why now" in event["message"]


@pytest.mark.asyncio
async def test_a_conflict_rereads_and_retries() -> None:
    api = _api(kf.job())
    api.fail("patch", JOB_PATH, client.KubeConflict("changed", 409))

    outcome = await apply.apply_release(api, _release(), kf.NOW, events.Recorder(api))

    assert outcome is apply.Outcome.RELEASED
    assert [c.verb for c in api.calls if c.path == JOB_PATH] == ["get", "patch", "get", "patch"]


@pytest.mark.asyncio
async def test_a_real_stale_version_is_refused_and_retried_with_the_new_one() -> None:
    api = _api(kf.job())
    original_get = api.get

    async def get_then_someone_writes(path: str) -> dict[str, Any]:
        obj = await original_get(path)
        if len(api.patches(JOB_PATH)) == 0 and sum(c.verb == "get" for c in api.calls) == 1:
            api.bump(JOB_PATH)  # another writer between our read and our patch
        return obj

    api.get = get_then_someone_writes  # type: ignore[method-assign]
    outcome = await apply.apply_release(api, _release(), kf.NOW, events.Recorder(api))

    assert outcome is apply.Outcome.RELEASED
    versions = [p["metadata"]["resourceVersion"] for p in api.patches(JOB_PATH)]
    assert versions[0] != versions[1]


@pytest.mark.asyncio
async def test_endless_conflicts_give_up_after_the_bound_and_change_nothing() -> None:
    api = _api(kf.job())
    api.fail("patch", JOB_PATH, *[client.KubeConflict("changed", 409)] * 5)

    outcome = await apply.apply_release(api, _release(), kf.NOW, events.Recorder(api), attempts=3)

    assert outcome is apply.Outcome.CONFLICT
    assert len(api.patches(JOB_PATH)) == 3
    assert api.objects[JOB_PATH]["spec"]["suspend"] is True
    assert api.events() == []


@pytest.mark.asyncio
async def test_a_job_released_by_someone_else_meanwhile_is_left_alone() -> None:
    api = _api(kf.job())
    api.fail("patch", JOB_PATH, client.KubeConflict("changed", 409))
    original_patch = api.patch

    async def patch_after_other_replica(path: str, body: Any, content_type: str = "") -> Any:
        # the other replica's release lands between our read and our patch
        api.objects[JOB_PATH]["spec"]["suspend"] = False
        api.objects[JOB_PATH]["metadata"]["annotations"][workloads.RELEASED_AT] = kf.NOW_TEXT
        return await original_patch(path, body)

    api.patch = patch_after_other_replica  # type: ignore[method-assign]
    outcome = await apply.apply_release(api, _release(), kf.NOW, events.Recorder(api))

    assert outcome is apply.Outcome.ALREADY_RELEASED


@pytest.mark.asyncio
async def test_running_and_vanished_jobs_are_never_patched() -> None:
    running = kf.job(
        suspend=False, annotations={workloads.SITE: "pool", workloads.RELEASED_AT: kf.NOW_TEXT}
    )
    api = _api(running)
    recorder = events.Recorder(api)

    assert await apply.apply_release(api, _release(), kf.NOW, recorder) is (
        apply.Outcome.ALREADY_RELEASED
    )
    assert api.patches(JOB_PATH) == []
    gone = await apply.apply_release(api, _release(name="missing"), kf.NOW, recorder)
    assert gone is apply.Outcome.GONE


@pytest.mark.asyncio
async def test_an_event_that_cannot_be_posted_does_not_undo_the_release() -> None:
    api = _api(kf.pod())
    api.fail("create", "/api/v1/namespaces/batch/events", client.KubeAPIError("forbidden", 403))

    outcome = await apply.apply_release(
        api, _release(workloads.Kind.POD, "solo"), kf.NOW, events.Recorder(api)
    )

    assert outcome is apply.Outcome.RELEASED
    assert "schedulingGates" in api.objects[POD_PATH]["spec"]
    assert api.objects[POD_PATH]["spec"]["schedulingGates"] == []


@pytest.mark.asyncio
async def test_warnings_are_posted_once_per_object() -> None:
    api = kf.FakeApi()
    recorder = events.Recorder(api)
    for _ in range(3):
        await recorder.post(
            kf.job(), reason="InvalidHint", message="bad", now_s=kf.NOW, warning=True
        )
    await recorder.post(kf.job(), reason="InvalidHint", message="other", now_s=kf.NOW, warning=True)
    assert [e["message"] for e in api.events("InvalidHint")] == ["bad", "other"]
    assert all(e["type"] == "Warning" for e in api.events())


@pytest.mark.asyncio
async def test_a_refused_release_is_explained_and_does_not_raise() -> None:
    api = _api(kf.job())
    api.fail("patch", JOB_PATH, client.KubeAPIError("denied by a policy webhook", 403))

    outcome = await apply.apply_release(api, _release(), kf.NOW, events.Recorder(api))

    assert outcome is apply.Outcome.FAILED
    assert api.objects[JOB_PATH]["spec"]["suspend"] is True
    (warning,) = api.events("ReleaseFailed")
    assert warning["type"] == "Warning"
    assert "denied by a policy webhook" in warning["message"]
