"""The watched view: records per object, the Cluster assembled from them, readers, staleness."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

import kube_fixtures as kf
from heatshift import metrics as metrics_mod
from heatshift import resources
from heatshift.kube import cycle, events, view, workloads
from test_kube_cycle import Meter

NOW = kf.NOW + 60
POLICY = "/apis/heatshift.dev/v1alpha1/heatpolicies/batch"


def _objects() -> list[dict[str, Any]]:
    return [
        kf.namespace("batch", {"team": "ml"}),
        kf.namespace("web"),
        kf.node("f1", "flats"),
        kf.node("p1", "pool"),
        kf.leafsite("flats"),
        kf.leafsite("pool"),
        kf.heatpolicy("batch", replan="5m"),
        kf.job("held", annotations={"heatshift.dev/max-delay": "2h"}),
        kf.job("running", suspend=False, annotations={workloads.SITE: "pool"}),
        kf.job("done", finished="Complete"),
        kf.job("broken", finished="Failed"),
    ]


def _api(*extra: dict[str, Any]) -> kf.FakeApi:
    api = kf.FakeApi()
    kf.store(api, *_objects(), *extra)
    return api


Index = dict[str, list[Any]]


def _index(pairs: Iterable[tuple[str, Any]]) -> Index:
    """What a Kopf index holds: key -> the values of the objects indexed under it."""
    out: Index = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _indexes(objs: Iterable[Mapping[str, Any]]) -> view.Indexes:
    """The view's indexes, filled through the same record functions as the Kopf wiring."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for obj in objs:
        by_kind.setdefault(str(obj["kind"]), []).append(obj)

    def name(o: Mapping[str, Any]) -> str:
        return str(o["metadata"]["name"])

    jobs = [(r.namespace, r) for r in map(view.job_record, by_kind.get("Job", [])) if r]
    pods = [(r.namespace, r) for r in map(view.pod_record, by_kind.get("Pod", [])) if r]
    return view.Indexes(
        leafsites=_index((name(o), view.site_record(o)) for o in by_kind.get("LeafSite", [])),
        heatpolicies=_index(
            (name(o), view.policy_record(o)) for o in by_kind.get("HeatPolicy", [])
        ),
        nodes=_index((name(o), view.node_record(o)) for o in by_kind.get("Node", [])),
        namespaces=_index(
            (name(o), view.namespace_record(o)) for o in by_kind.get("Namespace", [])
        ),
        jobs=_index(jobs),
        pods=_index(pods),
    )


# --- records -----------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", ["Complete", "Failed"])
def test_a_finished_job_leaves_the_view(condition: str) -> None:
    assert view.job_record(kf.job("done", finished=condition)) is None


def test_an_unfinished_job_keeps_only_what_the_cycle_reads() -> None:
    body = kf.job(
        "held",
        labels={"team": "ml"},
        annotations={
            "heatshift.dev/deadline": "2026-01-31T18:00:00Z",
            "kubectl.kubernetes.io/last-applied-configuration": "x" * 10_000,
        },
    )
    record = view.job_record(body)
    assert record is not None
    assert record.held and record.labels == {"team": "ml"}
    assert record.annotations == {"heatshift.dev/deadline": "2026-01-31T18:00:00Z"}
    assert record == view.job_record(body)  # records compare by value (staleness checks)


def test_only_unfinished_bare_pods_are_in_the_view() -> None:
    bare = kf.pod("gated")
    owned = kf.pod("of-a-job")
    owned["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "x", "uid": "u"}]
    done = kf.pod("done")
    done["status"] = {"phase": "Succeeded"}
    assert view.pod_record(bare) is not None
    assert view.pod_record(owned) is None
    assert view.pod_record(done) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b.update(spec="not an object"),
        lambda b: b.update(metadata={"name": 7, "labels": ["x"], "annotations": None}),
        lambda b: b["spec"].update(template={"spec": {"containers": "nope"}}),
        lambda b: b.update(status={"conditions": [None, 3, {"type": []}]}),
    ],
)
def test_a_malformed_job_is_a_record_and_never_an_error(mangle: Any) -> None:
    body = kf.job("odd")
    mangle(body)
    record = view.job_record(body)
    assert record is None or isinstance(record, workloads.Workload)


def test_a_malformed_leafsite_is_recorded_as_unusable_and_the_others_stay() -> None:
    bad = kf.leafsite("bad")
    bad["spec"]["tank"] = "full"
    mangled = {"kind": "LeafSite", "metadata": "nonsense", "spec": [1, 2]}
    records = [view.site_record(kf.leafsite("flats")), view.site_record(bad)]
    records.append(view.site_record(mangled))
    assert records[1].resource is None and records[1].problem
    assert records[2].resource is None and records[2].name == "?"

    cluster = view.assemble(
        sites=records,
        policies=[view.policy_record(kf.heatpolicy("batch"))],
        nodes=[],
        ns_labels={},
        jobs=[],
    )
    assert [s.metadata.name for s in cluster.leafsites] == ["flats"]
    assert set(cluster.invalid) == {"LeafSite/bad", "LeafSite/?"}
    assert [p.metadata.name for p in cluster.policies] == ["batch"]


# --- assembling --------------------------------------------------------------------------------


def test_the_same_records_in_any_order_make_the_same_cluster() -> None:
    objs = _objects()
    first = view.assemble(**_records(objs))
    shuffled = list(objs)
    random.Random(7).shuffle(shuffled)
    assert view.assemble(**_records(list(reversed(shuffled)))) == first
    assert [w.name for w in first.workloads] == ["held", "running"]


def _records(objs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    ix = _indexes(objs)

    def values(store: Mapping[str, list[Any]]) -> list[Any]:
        return [v for vs in store.values() for v in vs]

    return {
        "sites": values(ix.leafsites),
        "policies": values(ix.heatpolicies),
        "nodes": values(ix.nodes),
        "ns_labels": {k: v[0] for k, v in ix.namespaces.items()},
        "jobs": values(ix.jobs),
        "pods": values(ix.pods),
    }


def test_bare_pods_count_only_when_a_policy_holds_them() -> None:
    objs = [*_objects(), kf.pod("gated")]
    assert all(w.kind is workloads.Kind.JOB for w in view.assemble(**_records(objs)).workloads)
    holding = kf.heatpolicy("pods", replan="5m")
    holding["spec"]["holdBarePods"] = True
    kinds = {w.kind for w in view.assemble(**_records([*objs, holding])).workloads}
    assert kinds == {workloads.Kind.JOB, workloads.Kind.POD}


@pytest.mark.asyncio
async def test_the_watched_view_and_a_listing_make_the_same_cluster_and_the_view_asks_nothing() -> (
    None
):
    api = _api()
    listed = await view.ListingReader(api).read(NOW)
    api.calls.clear()

    watched = await view.WatchedReader(_indexes(api.objects.values()), view.Heard(), api).read(NOW)

    assert api.calls == []
    assert watched == listed  # heard_at too: a fresh view was heard from at its first read


# --- staleness ---------------------------------------------------------------------------------


def _stale_heard(kinds: Iterable[str], at_s: float) -> view.Heard:
    heard = view.Heard()
    heard.ready(NOW)
    for kind in kinds:
        heard.saw(kind, at_s)
    return heard


@pytest.mark.asyncio
async def test_a_quiet_but_current_view_is_confirmed_by_one_get() -> None:
    api = _api()
    heard = _stale_heard(["jobs"], NOW - 3600)
    reader = view.WatchedReader(_indexes(api.objects.values()), heard, api)
    cluster = await reader.read(NOW)

    assert await reader.stale(cluster, 300.0, NOW) == {}
    assert [(c.verb, c.path) for c in api.calls] == [
        ("get", "/apis/batch/v1/namespaces/batch/jobs/held")
    ]
    assert heard.at["jobs"] == NOW


@pytest.mark.asyncio
async def test_a_view_behind_the_api_server_is_reported_with_its_age() -> None:
    api = _api()
    reader = view.WatchedReader(
        _indexes(api.objects.values()), _stale_heard(["jobs"], NOW - 3600), api
    )
    cluster = await reader.read(NOW)
    # The job changed, but the watch never said so.
    api.objects["/apis/batch/v1/namespaces/batch/jobs/held"]["spec"]["suspend"] = False

    assert await reader.stale(cluster, 300.0, NOW) == {"jobs": 3600.0}


@pytest.mark.asyncio
async def test_a_cycle_from_a_stale_view_still_releases_and_says_so_in_status() -> None:
    api = _api(kf.job("due", annotations={"heatshift.dev/max-delay": "0s"}))
    reader = view.WatchedReader(
        _indexes(api.objects.values()), _stale_heard(["jobs"], NOW - 3600), api
    )
    # The job the view checks changed, and the watch never said so.
    due = api.objects["/apis/batch/v1/namespaces/batch/jobs/due"]
    due["metadata"]["annotations"]["heatshift.dev/power-watts"] = "300"
    memory = cycle.Memory(recorder=events.Recorder(api), metrics=metrics_mod.Metrics())

    result = await cycle.run_cycle(
        api, "batch", memory, now_s=NOW, meter_factory=Meter({"flats": 20.0}), reader=reader
    )

    assert result.stale_view == {"jobs": 3600.0}
    assert result.applied["batch/due"].value == "released"
    assert not any(c.verb == "list" for c in api.calls)
    planned = next(c for c in api.objects[POLICY]["status"]["conditions"] if c["type"] == "Planned")
    assert "cluster view older than the staleness limit" in planned["message"]
    assert "jobs 3600s" in planned["message"]


def test_a_stale_view_is_worded_for_people() -> None:
    words = view.stale_words({"nodes": 61.2, "jobs": 900.0}, 60.0)
    assert words.startswith("planned from a cluster view older than the staleness limit (60s)")
    assert "jobs 900s, nodes 61s" in words


def test_parsing_for_the_metering_simulator_agrees_with_the_view() -> None:
    bad = kf.leafsite("bad")
    bad["spec"]["tank"] = "full"
    invalid: dict[str, str] = {}
    parsed = cycle._parse([kf.leafsite("flats"), bad], "LeafSite", invalid)
    assert [r.metadata.name for r in parsed if isinstance(r, resources.LeafSite)] == ["flats"]
    assert invalid == {"LeafSite/bad": view.site_record(bad).problem}
