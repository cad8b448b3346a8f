"""The Kueue admission check: Workloads read, decided with the planner, and answered by
server-side apply of heatshift's entry alone; Jobs and Pods Kueue queues never held."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

import kube_fixtures as kf
from heatshift import model, resources
from heatshift.kube import admission, apply, client, events, meters, workloads
from heatshift.kueue import controller, decide, objects
from heatshift.metering import readings, source
from test_kube_cycle import Meter

NOW = kf.NOW + 60
CHECK = "heatshift"
JOBS = "/apis/batch/v1/namespaces/batch/jobs"
WORKLOADS = "/apis/kueue.x-k8s.io/v1beta2/namespaces/batch/workloads"


class KueueApi(kf.FakeApi):
    """The fake API with server-side apply of Workload status, recorded as applied."""

    def __init__(self) -> None:
        super().__init__()
        self.applies: list[tuple[str, dict[str, Any], str]] = []

    async def apply(self, path: str, body: client.JsonObject, *, field_manager: str) -> Any:
        await self._enter("apply", path, body)
        self.applies.append((path, copy.deepcopy(body), field_manager))
        return body


def kueue_workload(
    name: str,
    *,
    owner: str | None = "train",
    state: str = "Pending",
    pod_sets: tuple[tuple[str, int, dict[str, str]], ...] = (("main", 1, {"cpu": "2"}),),
    reserved: bool = True,
    admitted: bool = False,
    site: str | None = None,
    created: str = kf.NOW_TEXT,
) -> dict[str, Any]:
    checks: list[dict[str, Any]] = [
        {"name": "other-check", "state": "Ready", "lastTransitionTime": kf.NOW_TEXT},
        {"name": CHECK, "state": state, "lastTransitionTime": kf.NOW_TEXT, "message": ""},
    ]
    if site is not None:
        checks[1]["podSetUpdates"] = [
            {"name": n, "annotations": {workloads.SITE: site}} for n, _, _ in pod_sets
        ]
    conditions = []
    if reserved:
        conditions.append({"type": "QuotaReserved", "status": "True"})
    if admitted:
        conditions.append({"type": "Admitted", "status": "True"})
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "batch",
        "uid": f"uid-{name}",
        "creationTimestamp": created,
    }
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": owner,
                "uid": f"uid-{owner}",
                "controller": True,
            }
        ]
    return {
        "apiVersion": objects.API_VERSION,
        "kind": "Workload",
        "metadata": meta,
        "spec": {
            "podSets": [
                {
                    "name": n,
                    "count": count,
                    "template": {
                        "spec": {"containers": [{"name": "c", "resources": {"requests": req}}]}
                    },
                }
                for n, count, req in pod_sets
            ]
        },
        "status": {"conditions": conditions, "admissionChecks": checks},
    }


def _setup(*jobs: dict[str, Any]) -> KueueApi:
    api = KueueApi()
    kf.store(api, *jobs)
    return api


def _view(*bodies: Mapping[str, Any], policy: dict[str, Any] | None = None) -> controller.View:
    return controller.View(
        policies=[kf.parsed_policy(policy or kf.heatpolicy("batch", replan="5m"))],
        leafsites=[kf.parsed_site(kf.leafsite("flats")), kf.parsed_site(kf.leafsite("pool"))],
        nodes=[
            workloads.from_node(kf.node("f1", "flats")),
            workloads.from_node(kf.node("p1", "pool")),
        ],
        ns_labels={"batch": {"team": "ml"}},
        kueue_workloads=[objects.from_workload(b) for b in bodies],
    )


async def _decide(
    api: KueueApi, view: controller.View, demand: Mapping[str, float]
) -> controller.Round:
    return await controller.decide_check(
        api, CHECK, view, events.Recorder(api), now_s=NOW, meter_factory=Meter(demand)
    )


def _entry(api: KueueApi, name: str) -> dict[str, Any]:
    (found,) = [b for p, b, _ in api.applies if p == f"{WORKLOADS}/{name}/status"]
    (entry,) = found["status"]["admissionChecks"]
    assert isinstance(entry, dict)
    return entry


# --- reading Workloads ---------------------------------------------------------------------------


def test_a_workload_is_its_pod_sets_owner_and_check_states() -> None:
    body = kueue_workload(
        "wl",
        pod_sets=(
            ("driver", 1, {"cpu": "1", "memory": "2Gi"}),
            ("workers", 4, {"cpu": "2", "nvidia.com/gpu": "1"}),
        ),
    )
    w = objects.from_workload(body)
    assert w.resources == model.Resources(cpu=9.0, memory_gib=2.0, gpu=4)
    assert w.owner == objects.Owner("batch/v1", "Job", "train", "uid-train")
    assert w.owner.path("batch") == f"{JOBS}/train"
    assert w.pending(CHECK) and not w.pending("other-check")
    # Without quota reserved, Kueue has not asked yet.
    assert not objects.from_workload(kueue_workload("wl", reserved=False)).pending(CHECK)


def test_a_ready_admitted_workload_runs_at_the_site_its_updates_name() -> None:
    body = kueue_workload("wl", state="Ready", admitted=True, site="pool")
    w = objects.as_workload(objects.from_workload(body), CHECK)
    assert (w.kind, w.site, w.held, w.running) == (workloads.Kind.WORKLOAD, "pool", False, True)


@pytest.mark.parametrize("body", [{}, {"metadata": 7, "spec": {"podSets": "x"}, "status": []}])
def test_any_body_reads_as_a_workload(body: dict[str, Any]) -> None:
    w = objects.from_workload(body)
    assert w.pod_sets == () and w.checks == () and w.owner is None


# --- deciding ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_due_workload_is_ready_with_the_sites_node_selector_on_every_pod_set() -> None:
    api = _setup(kf.job("train", annotations={"heatshift.dev/max-delay": "2m"}))
    body = kueue_workload(
        "wl", pod_sets=(("driver", 1, {"cpu": "1"}), ("workers", 2, {"cpu": "2"}))
    )

    result = await _decide(api, _view(body), {"flats": 20.0, "pool": 0.0})

    (verdict,) = result.verdicts
    assert (verdict.state, verdict.site, verdict.reason) == (
        objects.CheckState.READY,
        "flats",
        apply.ReleaseKind.DEADLINE,
    )
    entry = _entry(api, "wl")
    assert entry["state"] == "Ready" and "its max-delay annotation" in entry["message"]
    assert [u["name"] for u in entry["podSetUpdates"]] == ["driver", "workers"]
    for update in entry["podSetUpdates"]:
        assert update["nodeSelector"] == {kf.SITE_LABEL: "flats"}
        assert update["annotations"] == {workloads.SITE: "flats"}
    # Only heatshift's entry, as heatshift's field manager: the other check is never sent.
    ((path, body_sent, manager),) = api.applies
    assert manager == objects.FIELD_MANAGER and path.endswith("/wl/status")
    assert set(body_sent) == {"apiVersion", "kind", "metadata", "status"}
    # Nothing is patched: not the Job, not the Workload.
    assert [c for c in api.calls if c.verb == "patch"] == []
    (event,) = api.events(controller.ADMITTED_REASON)
    assert event["involvedObject"]["kind"] == "Job" and event["involvedObject"]["name"] == "train"


class LaterMeter(Meter):
    """Every tank full, no demand now, 40 kW wanted from an hour on."""

    def __call__(
        self, endpoint: meters.Endpoint, queries: Mapping[str, resources.PrometheusQueries]
    ) -> source.MeteringSource:
        return _Later()


class _Later:
    async def fetch(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.SiteReading | readings.Rejection]:
        forecast = model.DemandSeries(start_s=now_s, step_s=900.0, kw=(0.0,) * 4 + (40.0,) * 20)
        return {
            site: readings.SiteReading(
                site=site,
                observed_at_s=now_s - 10,
                demand_kw=0.0,
                tank_energy_kwh=80.0,
                tank_capacity_kwh=80.0,
                tank_source="energy",
                forecast=forecast,
            )
            for site in sites
        }

    async def aclose(self) -> None:
        pass


@pytest.mark.asyncio
async def test_a_workload_better_run_later_is_retried_until_its_slot() -> None:
    api = _setup(kf.job("train", annotations={"heatshift.dev/max-delay": "5h"}))
    body = kueue_workload("wl", created=kf.NOW_TEXT)

    result = await controller.decide_check(
        api, CHECK, _view(body), events.Recorder(api), now_s=NOW, meter_factory=LaterMeter({})
    )

    (verdict,) = result.verdicts
    assert verdict.state is objects.CheckState.RETRY
    assert verdict.requeue_after_s is not None
    assert decide.MIN_REQUEUE_S <= verdict.requeue_after_s <= 300
    entry = _entry(api, "wl")
    assert entry["state"] == "Retry" and entry["requeueAfterSeconds"] == verdict.requeue_after_s
    assert "podSetUpdates" not in entry and "start deadline" in entry["message"]


@pytest.mark.asyncio
async def test_metering_down_a_due_workload_is_still_ready() -> None:
    api = _setup(kf.job("train", annotations={"heatshift.dev/max-delay": "1m"}))

    result = await _decide(api, _view(kueue_workload("wl")), {})  # every meter down

    (verdict,) = result.verdicts
    assert verdict.state is objects.CheckState.READY and verdict.site in ("flats", "pool")


@pytest.mark.asyncio
async def test_an_impossible_hint_is_named_and_the_workload_admitted_by_its_deadline() -> None:
    api = _setup(
        kf.job(
            "train",
            annotations={
                "heatshift.dev/max-delay": "1m",
                "heatshift.dev/expected-duration": "forever",
                "heatshift.dev/sites": "atlantis",
            },
        )
    )

    result = await _decide(api, _view(kueue_workload("wl")), {"flats": 20.0})

    (verdict,) = result.verdicts
    assert verdict.state is objects.CheckState.READY and verdict.site is None
    entry = _entry(api, "wl")
    assert "heatshift.dev/expected-duration" in entry["message"]
    assert "podSetUpdates" not in entry
    (warning,) = api.events("InvalidHint")
    assert "heatshift.dev/expected-duration" in warning["message"]
    assert warning["involvedObject"]["name"] == "train"


@pytest.mark.asyncio
async def test_a_workload_no_policy_selects_is_ready_at_once() -> None:
    api = _setup(kf.job("train"))
    policy = kf.heatpolicy("batch", match_labels={"team": "vision"})

    result = await _decide(api, _view(kueue_workload("wl"), policy=policy), {"flats": 20.0})

    (verdict,) = result.verdicts
    assert verdict.state is objects.CheckState.READY and verdict.site is None
    assert "no HeatPolicy selects" in _entry(api, "wl")["message"]


@pytest.mark.asyncio
async def test_an_unreadable_owner_is_planned_on_the_policy_defaults() -> None:
    api = _setup()  # the Job is gone

    result = await _decide(api, _view(kueue_workload("wl")), {"flats": 20.0})

    assert len(result.verdicts) == 1 and len(result.failures) == 1
    assert "read its hints" in result.failures[0].message


@pytest.mark.asyncio
async def test_nothing_pending_means_nothing_read_or_written() -> None:
    api = _setup(kf.job("train"))
    body = kueue_workload("wl", state="Ready", admitted=True, site="pool")

    result = await _decide(api, _view(body), {"flats": 20.0})

    assert result.verdicts == () and api.calls == []


@pytest.mark.asyncio
async def test_running_kueue_workloads_hold_their_sites_capacity() -> None:
    api = _setup(kf.job("train", cpu="12", annotations={"heatshift.dev/max-delay": "1m"}))
    # flats (16 cores) is full with a Workload heatshift admitted there.
    busy = kueue_workload(
        "busy",
        state="Ready",
        admitted=True,
        site="flats",
        owner=None,
        pod_sets=(("main", 1, {"cpu": "12"}),),
    )
    waiting = kueue_workload("wl", pod_sets=(("main", 1, {"cpu": "12"}),))

    result = await _decide(api, _view(busy, waiting), {"flats": 30.0, "pool": 0.0})

    (verdict,) = result.verdicts
    assert verdict.site == "pool"


def test_the_check_keeps_its_time_when_its_state_does_not_change() -> None:
    w = objects.from_workload(kueue_workload("wl", state="Retry"))
    same = objects.check_state(w, CHECK, objects.CheckState.RETRY, "m", NOW, requeue_after_s=9)
    changed = objects.check_state(w, CHECK, objects.CheckState.READY, "m", NOW)
    assert same["lastTransitionTime"] == kf.NOW_TEXT and same["requeueAfterSeconds"] == 9
    assert changed["lastTransitionTime"] == workloads.format_time(NOW)


def test_an_admission_check_is_marked_active_once() -> None:
    new = objects.active_condition([], 3, NOW)
    assert new is not None and new[0]["type"] == "Active" and new[0]["status"] == "True"
    assert objects.active_condition(new, 3, NOW) is None
    assert objects.active_condition(new, 4, NOW) is not None


# --- coexistence ---------------------------------------------------------------------------------


def _queued(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].setdefault("labels", {})[workloads.QUEUE_NAME] = "team-queue"
    return obj


def _owned(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": api_version, "kind": kind, "name": "o", "uid": "u", "controller": True}
    ]
    return obj


POLICIES = [kf.parsed_policy(kf.heatpolicy("batch", hold_bare_pods=True))]


@pytest.mark.parametrize(
    "job",
    [
        _queued(kf.job("queued")),
        _owned(kf.job("in-jobset"), "jobset.x-k8s.io/v1alpha2", "JobSet"),
        _owned(kf.job("in-workload"), "kueue.x-k8s.io/v1beta2", "Workload"),
    ],
)
def test_a_job_kueue_or_a_higher_workload_manages_is_never_held_or_released(
    job: dict[str, Any],
) -> None:
    assert admission.hold_job(job, POLICIES, {}) == (None, None)
    assert workloads.from_job(job).held is False
    release = apply.Release(
        kind=workloads.Kind.JOB,
        namespace="batch",
        name=job["metadata"]["name"],
        site="pool",
        node_selector={kf.SITE_LABEL: "pool"},
        decision="d",
        reason=apply.ReleaseKind.DEADLINE,
        policy="batch",
    )
    assert apply.release_patch(job, release, NOW) is None


def test_a_job_a_cronjob_owns_is_still_held() -> None:
    job = _owned(kf.job("nightly"), "batch/v1", "CronJob")
    assert admission.hold_job(job, POLICIES, {})[0] == {"spec": {"suspend": True}}
    assert workloads.from_job(job).held


@pytest.mark.parametrize("label", [workloads.QUEUE_NAME, workloads.KUEUE_MANAGED])
def test_a_pod_kueue_manages_is_never_gated(label: str) -> None:
    pod = kf.pod("p", gated=False, labels={label: "x"})
    assert admission.hold_pod(pod, POLICIES, {}) == (None, None)
    assert workloads.from_pod(kf.pod("p", labels={label: "x"})).held is False
    assert workloads.from_pod(kf.pod("p")).held is True


# --- wiring --------------------------------------------------------------------------------------


def test_a_pending_workload_wakes_the_check_whatever_memo_copy_it_arrives_with() -> None:
    import asyncio

    import kopf

    from heatshift import handlers as core
    from heatshift import metrics as metrics_mod
    from heatshift.kueue import handlers as kueue_handlers

    state = core.State(core.RunOptions(), metrics_mod.Metrics(), session=None)  # type: ignore[arg-type]
    memo = kopf.Memo(heatshift=state)
    # Kopf hands each object's handlers a shallow copy of the operator's memo.
    daemon_memo, event_memo = copy.copy(memo), copy.copy(memo)
    wake = kueue_handlers._wakes(daemon_memo).setdefault(CHECK, asyncio.Event())
    kueue_handlers.notice_workloads(memo=event_memo)
    assert wake.is_set()
    registry = kopf.OperatorRegistry()
    kueue_handlers.register(registry)
    kueue_handlers.register(registry)  # once per registry, however often asked
    ids = {h.id for h in registry._indexing.get_all_handlers()}
    assert ids == {"kueue_workloads"}


@pytest.mark.asyncio
async def test_the_check_reads_sites_and_nodes_from_the_watched_view_the_cycles_share() -> None:
    from heatshift.kube import view
    from heatshift.kueue import handlers as kueue_handlers

    broken = kf.leafsite("broken")
    broken["spec"]["tank"] = "full"
    running = view.job_record(
        kf.job("render", suspend=False, annotations={workloads.SITE: "flats"})
    )
    indexes = {
        "view_leafsites": {
            None: [view.site_record(kf.leafsite("flats")), view.site_record(broken)]
        },
        "view_nodes": {None: [view.node_record(kf.node("n1", site="flats"))]},
        "view_heatpolicies": {None: [view.policy_record(kf.heatpolicy("batch"))]},
        "namespace_labels": {"ml": [{"team": "a"}]},
        "kueue_workloads": {},
    }
    # The planning cycles' reader over the same indexes, Jobs from the informers' store.
    reader = view.WatchedReader(
        view.Indexes(
            leafsites=indexes["view_leafsites"],
            heatpolicies=indexes["view_heatpolicies"],
            nodes=indexes["view_nodes"],
            namespaces=indexes["namespace_labels"],
            jobs={"batch": [running]},
            pods={},
        ),
        view.Heard(),
        kf.FakeApi(),
    )

    seen = kueue_handlers._view(await reader.read(NOW), indexes)

    # An unusable LeafSite is left out here; the view's own check reports it in status.
    assert [s.metadata.name for s in seen.leafsites] == ["flats"]
    assert [n.name for n in seen.nodes] == ["n1"]
    assert [p.metadata.name for p in seen.policies] == ["batch"]
    assert seen.ns_labels == {"ml": {"team": "a"}}
    assert [w.name for w in seen.plain_workloads] == ["render"]


def _memory(api: KueueApi) -> Any:
    from heatshift import metrics as metrics_mod
    from heatshift.kube import cycle

    return cycle.Memory(recorder=events.Recorder(api), metrics=metrics_mod.Metrics())


@pytest.mark.asyncio
async def test_plain_jobs_heatshift_released_hold_capacity_for_the_check_too() -> None:
    from heatshift.kube import view

    api = _setup(kf.job("train", cpu="12", annotations={"heatshift.dev/max-delay": "1m"}))
    # flats (16 cores) is full with a plain Job a planning cycle released there.
    plain = view.job_record(
        kf.job("render", cpu="12", suspend=False, annotations={workloads.SITE: "flats"})
    )
    assert plain is not None
    waiting = kueue_workload("wl", pod_sets=(("main", 1, {"cpu": "12"}),))
    seen = dataclasses.replace(_view(waiting), plain_workloads=[plain])

    result = await controller.decide_check(
        api,
        CHECK,
        seen,
        events.Recorder(api),
        now_s=NOW,
        meter_factory=Meter({"flats": 30.0, "pool": 0.0}),
        shared=_memory(api),
    )

    (verdict,) = result.verdicts
    assert verdict.site == "pool"


@pytest.mark.asyncio
async def test_what_the_check_admits_to_a_site_the_planning_cycles_count_there() -> None:
    from heatshift.kube import cycle

    # The Workload's own Job is Kueue's (queue-name label): no planning cycle holds it.
    train = kf.job(
        "train",
        cpu="12",
        labels={"kueue.x-k8s.io/queue-name": "q"},
        annotations={"heatshift.dev/max-delay": "1m"},
    )
    api = _setup(train)
    memory = _memory(api)
    waiting = kueue_workload("wl", pod_sets=(("main", 1, {"cpu": "12"}),))
    first = await controller.decide_check(
        api,
        CHECK,
        _view(waiting),
        events.Recorder(api),
        now_s=NOW,
        meter_factory=Meter({"flats": 30.0, "pool": 0.0}),
        shared=memory,
    )
    (verdict,) = first.verdicts
    assert verdict.site == "flats"
    # Made Ready but not admitted by Kueue yet: the cycles count it at flats already.
    (admitted,) = memory.kueue_admitted[CHECK]
    assert (admitted.site, admitted.running) == ("flats", True)

    # A plain Job due now, that would go to flats for its heat, goes to pool instead.
    kf.store(
        api,
        kf.namespace("batch", {"team": "ml"}),
        kf.node("f1", "flats"),
        kf.node("p1", "pool"),
        kf.leafsite("flats"),
        kf.leafsite("pool"),
        kf.heatpolicy("batch", replan="5m"),
        kf.job("due", cpu="12", annotations={"heatshift.dev/max-delay": "0s"}),
    )
    result = await cycle.run_cycle(
        api, "batch", memory, now_s=NOW, meter_factory=Meter({"flats": 30.0, "pool": 0.0})
    )
    releases = {r.name: r.site for r in result.releases}
    assert releases.get("due") == "pool", releases


@pytest.mark.asyncio
async def test_the_workloads_held_for_heat_are_counted_in_the_policys_status() -> None:
    from heatshift.kube import cycle

    train = kf.job(
        "train",
        labels={"kueue.x-k8s.io/queue-name": "q"},
        annotations={"heatshift.dev/max-delay": "5h"},
    )
    api = _setup(train)
    memory = _memory(api)
    await controller.decide_check(
        api,
        CHECK,
        _view(kueue_workload("wl")),
        events.Recorder(api),
        now_s=NOW,
        meter_factory=LaterMeter({}),
        shared=memory,
    )
    assert memory.kueue_waiting == {CHECK: {"batch": 1}}

    kf.store(
        api,
        kf.namespace("batch", {"team": "ml"}),
        kf.node("f1", "flats"),
        kf.leafsite("flats"),
        kf.heatpolicy("batch", replan="5m"),
    )
    await cycle.run_cycle(api, "batch", memory, now_s=NOW, meter_factory=LaterMeter({}))

    status = api.objects["/apis/heatshift.dev/v1alpha1/heatpolicies/batch"]["status"]
    assert status["kueueWaiting"] == 1
