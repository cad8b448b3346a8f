"""Applying a release: the patch, idempotence, conflicts and retries, running work untouched."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

import kube_fixtures as kf
from heatshift.kube import apply, client, events, isolation, workloads

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
async def test_a_release_from_the_views_record_patches_without_reading() -> None:
    api = _api(kf.job())
    seen = workloads.from_job(api.objects[JOB_PATH])
    release = dataclasses.replace(_release(), seen=seen)

    outcome = await apply.apply_release(api, release, kf.NOW, events.Recorder(api))

    assert outcome is apply.Outcome.RELEASED
    assert [c.verb for c in api.calls if c.path == JOB_PATH] == ["patch"]
    (patch,) = api.patches(JOB_PATH)
    assert patch["metadata"]["resourceVersion"] == seen.resource_version != ""
    assert api.objects[JOB_PATH]["spec"]["suspend"] is False
    (event,) = api.events("Released")
    assert event["involvedObject"]["uid"] == seen.uid


@pytest.mark.asyncio
async def test_a_view_behind_the_object_is_refused_then_the_object_is_read() -> None:
    api = _api(kf.job())
    seen = workloads.from_job(api.objects[JOB_PATH])
    api.bump(JOB_PATH)  # changed after the view recorded it; the view has not caught up
    release = dataclasses.replace(_release(), seen=seen)

    outcome = await apply.apply_release(api, release, kf.NOW, events.Recorder(api))

    assert outcome is apply.Outcome.RELEASED
    assert [c.verb for c in api.calls if c.path == JOB_PATH] == ["patch", "get", "patch"]
    first, second = (p["metadata"]["resourceVersion"] for p in api.patches(JOB_PATH))
    assert first == seen.resource_version != second


@pytest.mark.asyncio
async def test_a_view_record_of_a_job_released_meanwhile_releases_nothing() -> None:
    api = _api(kf.job())
    seen = workloads.from_job(api.objects[JOB_PATH])
    # Another replica released it; our view still shows it held.
    api.objects[JOB_PATH]["spec"]["suspend"] = False
    api.objects[JOB_PATH]["metadata"]["annotations"][workloads.RELEASED_AT] = kf.NOW_TEXT
    api.bump(JOB_PATH)
    release = dataclasses.replace(_release(), seen=seen)

    outcome = await apply.apply_release(api, release, kf.NOW, events.Recorder(api))

    assert outcome is apply.Outcome.ALREADY_RELEASED
    assert api.objects[JOB_PATH]["metadata"]["annotations"][workloads.RELEASED_AT] == kf.NOW_TEXT
    assert api.events() == []


@pytest.mark.asyncio
async def test_a_pod_released_from_the_views_record_keeps_other_gates() -> None:
    pod = kf.pod("solo")
    pod["spec"]["schedulingGates"].insert(0, {"name": "other.example/quota"})
    api = _api(pod)
    seen = workloads.from_pod(api.objects[POD_PATH])
    release = dataclasses.replace(_release(workloads.Kind.POD, "solo"), seen=seen)

    outcome = await apply.apply_release(api, release, kf.NOW, events.Recorder(api))

    assert outcome is apply.Outcome.RELEASED
    assert [c.verb for c in api.calls if c.path == POD_PATH] == ["patch"]
    assert api.objects[POD_PATH]["spec"]["schedulingGates"] == [{"name": "other.example/quota"}]


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


# --- a cycle's releases: concurrent, bounded, deadline first, throttled and conflicted ---------


class Sleeps:
    """An injected sleep that records its waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _many(n: int, reason: apply.ReleaseKind, prefix: str) -> list[apply.Release]:
    return [
        dataclasses.replace(_release(name=f"{prefix}-{i:03d}"), reason=reason) for i in range(n)
    ]


def _api_with(latency_s: float, *objs: dict[str, Any]) -> kf.FakeApi:
    api = kf.FakeApi(latency_s=latency_s)
    kf.store(api, *objs)
    return api


@pytest.mark.asyncio
async def test_releases_go_out_concurrently_with_at_most_16_in_flight() -> None:
    releases = _many(60, apply.ReleaseKind.HEAT, "heat")
    api = _api_with(0.002, *(kf.job(r.name) for r in releases))
    recorder = events.Recorder(api)

    outcomes = await apply.release_all(
        api, releases, kf.NOW, recorder, guard=isolation.Guard(), sleep=Sleeps()
    )

    assert outcomes == [apply.Outcome.RELEASED] * 60
    assert api.max_in_flight == apply.MAX_IN_FLIGHT == 16
    assert len(api.applied) == 60 and len(api.events("Released")) == 60


@pytest.mark.asyncio
async def test_every_deadline_release_is_applied_before_any_other_starts() -> None:
    heat, due = (
        _many(20, apply.ReleaseKind.HEAT, "heat"),
        _many(20, apply.ReleaseKind.DEADLINE, "due"),
    )
    mixed = [r for pair in zip(heat, due, strict=True) for r in pair]
    api = _api_with(0.001, *(kf.job(r.name) for r in mixed))

    outcomes = await apply.release_all(
        api, mixed, kf.NOW, events.Recorder(api), guard=isolation.Guard(), limit=4
    )

    assert outcomes == [apply.Outcome.RELEASED] * 40
    jobs = [(edge, path.rsplit("/", 1)[1]) for edge, verb, path in api.timeline if "/jobs/" in path]
    last_due_end = max(i for i, (edge, name) in enumerate(jobs) if edge == "end" and "due" in name)
    first_heat = min(i for i, (edge, name) in enumerate(jobs) if "heat" in name)
    assert last_due_end < first_heat
    # Within a wave, releases start in the plan's order.
    assert [p.rsplit("/", 1)[1] for p in api.applied[:4]] == [r.name for r in due[:4]]


@pytest.mark.asyncio
async def test_a_throttled_deadline_release_is_retried_within_the_cycle() -> None:
    api = _api(kf.job())
    throttled = client.KubeAPIError("too many requests", 429)
    api.fail("patch", JOB_PATH, throttled, client.KubeAPIError("unavailable", 503))
    sleeps = Sleeps()
    due = dataclasses.replace(_release(), reason=apply.ReleaseKind.DEADLINE)

    outcome = await apply.apply_release(api, due, kf.NOW, events.Recorder(api), sleep=sleeps)

    assert outcome is apply.Outcome.RELEASED
    assert sleeps.waits == [0.25, 0.5]
    assert api.applied == [JOB_PATH]


@pytest.mark.asyncio
async def test_a_deadline_release_waits_as_long_as_retry_after_asks_up_to_a_bound() -> None:
    api = _api(kf.job())
    polite, greedy = client.KubeAPIError("slow down", 429), client.KubeAPIError("later", 429)
    polite.retry_after_s = 3.0
    greedy.retry_after_s = 600.0
    api.fail("get", JOB_PATH, polite, greedy)
    sleeps = Sleeps()
    due = dataclasses.replace(_release(), reason=apply.ReleaseKind.DEADLINE)

    outcome = await apply.apply_release(api, due, kf.NOW, events.Recorder(api), sleep=sleeps)

    assert outcome is apply.Outcome.RELEASED
    assert sleeps.waits == [3.0, apply.MAX_RETRY_WAIT_S]


@pytest.mark.asyncio
async def test_a_deadline_release_gives_up_after_its_bounded_backoff() -> None:
    api = _api(kf.job())
    api.fail("patch", JOB_PATH, *[client.KubeAPIError("unavailable", 503)] * 10)
    sleeps = Sleeps()
    due = dataclasses.replace(_release(), reason=apply.ReleaseKind.DEADLINE)

    outcome = await apply.apply_release(api, due, kf.NOW, events.Recorder(api), sleep=sleeps)

    assert outcome is apply.Outcome.DEFERRED
    assert sleeps.waits == list(apply.DEADLINE_BACKOFF_S)
    assert sum(sleeps.waits) < 5.0
    assert api.objects[JOB_PATH]["spec"]["suspend"] is True


@pytest.mark.asyncio
async def test_a_throttled_heat_release_is_left_to_the_next_cycle_without_a_warning() -> None:
    api = _api(kf.job())
    api.fail("patch", JOB_PATH, client.KubeAPIError("too many requests", 429))
    recorder, sleeps = events.Recorder(api), Sleeps()

    first = await apply.apply_release(api, _release(), kf.NOW, recorder, sleep=sleeps)
    second = await apply.apply_release(api, _release(), kf.NOW + 300, recorder, sleep=sleeps)

    assert (first, second) == (apply.Outcome.DEFERRED, apply.Outcome.RELEASED)
    assert sleeps.waits == []
    assert api.events("ReleaseFailed") == []


@pytest.mark.asyncio
async def test_a_release_whose_answer_was_lost_is_not_applied_twice() -> None:
    api = _api(kf.job())
    lost = [client.KubeAPIError("connection reset", 0)]
    api.lost_answer = lambda verb, path: lost.pop() if verb == "patch" and lost else None
    due = dataclasses.replace(_release(), reason=apply.ReleaseKind.DEADLINE)

    outcome = await apply.apply_release(api, due, kf.NOW, events.Recorder(api), sleep=Sleeps())

    assert outcome is apply.Outcome.ALREADY_RELEASED
    assert api.applied == [JOB_PATH]


@pytest.mark.asyncio
async def test_injected_conflicts_and_throttling_release_every_job_once_and_no_running_one() -> (
    None
):
    due, heat = _many(30, apply.ReleaseKind.DEADLINE, "due"), _many(30, apply.ReleaseKind.HEAT, "h")
    running = kf.job(
        "busy", suspend=False, annotations={workloads.SITE: "pool", workloads.RELEASED_AT: "x"}
    )
    releases = [*due, *heat, _release(name="busy")]
    api = _api_with(0.0, *(kf.job(r.name) for r in releases[:-1]), running)
    rng = random.Random(7)
    faults = {
        0: client.KubeConflict("changed", 409),
        1: client.KubeAPIError("too many requests", 429),
        2: client.KubeAPIError("unavailable", 503),
    }

    def fault(verb: str, path: str) -> client.KubeAPIError | None:
        roll = rng.randrange(6)
        if verb == "patch" and roll in faults:
            return faults[roll]
        if verb == "get" and roll == 3:
            return faults[1]
        return None

    api.fault = fault
    recorder, left = events.Recorder(api), releases
    for cycle_no in range(10):  # consecutive cycles re-plan what is still held
        outcomes = await apply.release_all(
            api, left, kf.NOW + cycle_no, recorder, guard=isolation.Guard(), sleep=Sleeps()
        )
        assert all(o is not apply.Outcome.FAILED for o in outcomes)
        left = [r for r, o in zip(left, outcomes, strict=True) if o is not apply.Outcome.RELEASED]
        left = [r for r in left if api.objects[r_path(r)]["spec"]["suspend"] is True]
        if not left:
            break

    assert left == []
    paths = [r_path(r) for r in releases[:-1]]
    assert sorted(api.applied) == sorted(paths)  # each held job patched into effect once
    assert r_path(releases[-1]) not in api.applied  # the running job never touched
    assert len(api.events("Released")) == 60


def r_path(r: apply.Release) -> str:
    return apply.path_of(r.kind, r.namespace, r.name)
