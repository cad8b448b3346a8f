"""Hostile input against the operator: whole planning cycles over generated odd objects.

Jobs with odd annotations and wrong types in any field, LeafSites, HeatPolicies, Nodes and
meter payloads are generated and stored in the in-memory API beside well-formed Jobs whose
start deadline has come. Whatever the rest holds, a cycle must not raise, and every one of
those Jobs must be released in that cycle: compute never waits for bad input. (The nodes have
room for every job, so that capacity, a hard limit the planner's own tests cover, never
decides who starts.) Conversions and
hint parsing are fuzzed on their own too, with more examples, since they are cheap.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kube_fixtures as kf
from heatshift import bounds, metrics, resources
from heatshift.kube import apply, cycle, events, hints, isolation, meters, workloads
from heatshift.metering import readings, source

NOW = kf.NOW + 60
JOBS = "/apis/batch/v1/namespaces/batch/jobs"

HOSTILE_TEXT = [
    "",
    " ",
    "99999999h",
    "9" * 400 + "h",
    "-1h",
    "0.5ns",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+01:00",
    "2023-11-14T22:13:20",
    "2023-11-14T22:13:20Z",
    "\x00",
    "\u202e",
    "x" * 5000,
    ",,,",
    "Pool_Zuid",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from([10**400, -(10**400), 2**63, -1, 0])
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(HOSTILE_TEXT)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
WRONG_TYPES: list[Any] = [
    7,
    -1,
    10**400,
    1.5,
    float("nan"),
    float("inf"),
    True,
    "x",
    ["x", 1],
    [{"a": 1}],
    {"a": [1]},
    {},
    [],
    None,
]
"""Values of every JSON type but the expected one, tried first wherever a field is odd."""
odd_values = st.sampled_from(WRONG_TYPES) | json_values
hint_values = st.sampled_from(HOSTILE_TEXT) | st.text(max_size=20) | json_values
hostile_annotations = st.dictionaries(
    st.sampled_from(
        [
            hints.DEADLINE,
            hints.MAX_DELAY,
            hints.EXPECTED_DURATION,
            hints.POWER_WATTS,
            hints.SITES,
            workloads.SITE,
            workloads.RELEASED_AT,
            "example.com/other",
        ]
    ),
    hint_values,
    max_size=5,
)

JOB_FIELDS: list[tuple[str | int, ...]] = [
    ("spec", "parallelism"),
    ("spec", "completions"),
    ("spec", "activeDeadlineSeconds"),
    ("spec", "suspend"),
    ("spec", "template"),
    ("spec", "template", "spec"),
    ("spec", "template", "spec", "containers"),
    ("spec", "template", "spec", "containers", 0, "resources"),
    ("spec", "template", "spec", "containers", 0, "resources", "requests", "cpu"),
    ("spec", "template", "spec", "containers", 0, "resources", "requests", "memory"),
    ("spec", "template", "spec", "containers", 0, "resources", "requests", "nvidia.com/gpu"),
    ("spec", "template", "spec", "schedulingGates"),
    ("spec",),
    ("metadata", "labels"),
    ("metadata", "labels", hints.SLA_CLASS),
    ("metadata", "annotations"),
    ("metadata", "creationTimestamp"),
    ("metadata", "resourceVersion"),
    ("metadata", "uid"),
    ("metadata",),
    ("status",),
    ("status", "conditions"),
    ("status", "phase"),
]
SITE_FIELDS: list[tuple[str | int, ...]] = [
    ("spec", "nodeSelector"),
    ("spec", "power", "idleWatts"),
    ("spec", "power", "wattsPerCPU"),
    ("spec", "heatRecoveryEfficiency"),
    ("spec", "tank", "capacityKWh"),
    ("spec", "tank", "lossPerHour"),
    ("spec", "offtaker", "maxThermalKW"),
    ("spec", "stalenessLimit"),
    ("spec", "metering"),
    ("spec",),
    ("status",),
    ("status", "tankEnergyKWh"),
    ("status", "conditions"),
]
POLICY_FIELDS: list[tuple[str | int, ...]] = [
    ("spec", "slaClasses"),
    ("spec", "slaClasses", 0, "maxDelay"),
    ("spec", "planning", "horizon"),
    ("spec", "planning", "step"),
    ("spec", "sites"),
    ("spec", "objective"),
    ("spec", "holdBarePods"),
    ("status",),
    ("status", "released"),
]
NODE_FIELDS: list[tuple[str | int, ...]] = [
    ("status", "allocatable", "cpu"),
    ("status", "allocatable", "memory"),
    ("status", "allocatable", "nvidia.com/gpu"),
    ("status", "conditions"),
    ("spec",),
    ("metadata", "labels"),
]


def _set(obj: Any, path: tuple[str | int, ...], value: Any, delete: bool) -> None:
    """Set (or delete) ``obj[path]``, creating dicts on the way; a wrong type on the way ends
    the walk (the object is odd enough already)."""
    for key in path[:-1]:
        if isinstance(obj, dict) and isinstance(key, str):
            obj = obj.setdefault(key, {})
        elif isinstance(obj, list) and isinstance(key, int) and key < len(obj):
            obj = obj[key]
        else:
            return
    last = path[-1]
    if isinstance(obj, dict) and isinstance(last, str):
        if delete:
            obj.pop(last, None)
        else:
            obj[last] = value
    elif isinstance(obj, list) and isinstance(last, int) and last < len(obj) and not delete:
        obj[last] = value


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], fields: list[tuple[str | int, ...]]) -> Any:
    obj = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        _set(obj, draw(st.sampled_from(fields)), draw(odd_values), draw(st.booleans()))
    return obj


@st.composite
def hostile_job(draw: st.DrawFn, i: int) -> dict[str, Any]:
    base = kf.job(
        f"odd-{i}",
        annotations=draw(hostile_annotations),
        created=draw(st.sampled_from([kf.NOW_TEXT, *HOSTILE_TEXT])),
    )
    return dict(draw(mutated(base, JOB_FIELDS)))


@st.composite
def due_job(draw: st.DrawFn, i: int) -> dict[str, Any]:
    """A well-formed held Job whose start deadline falls before the next decision (5 min)."""
    a_month_ago = workloads.format_time(NOW - bounds.MAX_DELAY.high_s - 3600)
    way = draw(st.sampled_from(["max-delay", "old", "deadline", "urgent", "huge"]))
    name = f"due-{i}"
    if way == "max-delay":
        delay = draw(st.sampled_from(["0s", "30s", "1m", "4m"]))
        return kf.job(name, annotations={hints.MAX_DELAY: delay})
    if way == "old":  # created a month ago: older than any SLA class allows
        return kf.job(name, created=a_month_ago)
    if way == "deadline":  # must finish in 30 min, runs an hour: overdue
        end = workloads.format_time(NOW + 1800)
        return kf.job(name, annotations={hints.DEADLINE: end, hints.EXPECTED_DURATION: "1h"})
    if way == "urgent":  # the 15 min class, created 20 min ago
        created = workloads.format_time(NOW - 1200)
        return kf.job(name, labels={hints.SLA_CLASS: "urgent"}, created=created)
    # Allowed only at a site that does not exist: it still starts by its deadline.
    return kf.job(name, annotations={hints.MAX_DELAY: "0s", hints.SITES: "nowhere"})


class HostileMeter:
    """A source factory: raises, or answers each site with a generated payload that goes
    through the real reading validation, a bare value, or nothing."""

    def __init__(self, payloads: list[Any], mode: str) -> None:
        self.payloads = payloads
        self.mode = mode

    def __call__(
        self, endpoint: meters.Endpoint, queries: Mapping[str, resources.PrometheusQueries]
    ) -> source.MeteringSource:
        if self.mode == "factory-raises":
            raise RuntimeError("the metering client could not be built")
        return _HostileSource(self.payloads, self.mode)


class _HostileSource:
    def __init__(self, payloads: list[Any], mode: str) -> None:
        self.payloads = payloads
        self.mode = mode

    async def fetch(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.SiteReading | readings.Rejection]:
        if self.mode == "fetch-raises":
            raise OverflowError("cannot convert float infinity to integer")
        if self.mode == "hangs":
            await asyncio.sleep(3600)
        out: dict[str, Any] = {}
        for n, (site, limits) in enumerate(sorted(sites.items())):
            raw = self.payloads[n % len(self.payloads)] if self.payloads else None
            out[site] = readings.validate_with(raw, limits, now_s=now_s, site=site)
        return out

    async def aclose(self) -> None:
        if self.mode == "close-raises":
            raise RuntimeError("already closed")


def _good_payload(site: str, demand: float, tank: float) -> dict[str, Any]:
    return {
        "siteId": site,
        "observedAt": workloads.format_time(NOW - 10),
        "heatDemandKW": demand,
        "tank": {"energyKWh": tank, "capacityKWh": 80.0},
        "supplyTempC": 60.0,
        "returnTempC": 40.0,
        "offtakerAvailable": True,
    }


payloads = st.lists(
    st.builds(
        _good_payload,
        st.sampled_from(["flats", "pool", "odd-site"]),
        st.floats(min_value=0, max_value=60) | st.sampled_from([float("nan"), 1e308, -1.0]),
        st.floats(min_value=0, max_value=80) | st.sampled_from([float("inf"), 1e9]),
    )
    | json_values,
    max_size=3,
)


@st.composite
def hostile_cluster(draw: st.DrawFn) -> tuple[kf.FakeApi, list[str], HostileMeter]:
    api = kf.FakeApi()
    policy = kf.heatpolicy(
        "batch",
        max_delay=draw(st.sampled_from(["6h", "0s", "720h"])),
        sites=draw(st.sampled_from([(), ("flats",), ("flats", "missing")])),
        solver_limit="200ms",
        hold_bare_pods=draw(st.booleans()),
    )
    # Other policies select other workloads only, so "batch" manages every due Job.
    others = [
        draw(
            mutated(
                kf.heatpolicy(f"other-{i}", match_labels={"owner": "someone-else"}), POLICY_FIELDS
            )
        )
        for i in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    sites = [kf.leafsite("flats"), kf.leafsite("pool", max_thermal_kw=20.0)]
    sites += [
        draw(mutated(kf.leafsite(f"odd-site-{i}"), SITE_FIELDS))
        for i in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    # Room at each site for every job there can be (each asks at most bounds.MAX_CPU_CORES):
    # capacity, a hard limit the planner's own tests cover, must not decide who starts here.
    nodes = [
        kf.node(f"{site}-{n}", site, cpu="1e6", memory="1e8Gi")
        for site in ("flats", "pool")
        for n in range(10)
    ]
    nodes += [
        draw(mutated(kf.node(f"odd-node-{i}", "flats"), NODE_FIELDS))
        for i in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    due = [draw(due_job(i)) for i in range(draw(st.integers(min_value=1, max_value=4)))]
    odd = [draw(hostile_job(i)) for i in range(draw(st.integers(min_value=0, max_value=6)))]
    pods = [
        dict(draw(mutated(kf.pod(f"odd-pod-{i}"), JOB_FIELDS)))
        for i in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    kf.store(api, kf.namespace("batch"), policy, *due)
    for plural, group, objs in [
        ("heatpolicies", "heatshift.dev/v1alpha1", others),
        ("leafsites", "heatshift.dev/v1alpha1", sites),
        ("nodes", "v1", nodes),
    ]:
        root = f"/apis/{group}" if "/" in group else f"/api/{group}"
        for n, obj in enumerate(objs):
            name = (
                obj.get("metadata", {}).get("name")
                if isinstance(obj.get("metadata"), dict)
                else None
            )
            # Stored under its name where it has one, so its status can be written.
            api.put(f"{root}/{plural}/{name if isinstance(name, str) else n}", obj)
    for n, obj in enumerate(odd):
        api.put(f"{JOBS}/odd-{n}", obj)
    for n, obj in enumerate(pods):
        api.put(f"/api/v1/namespaces/batch/pods/odd-pod-{n}", obj)

    # Status and Event writes fail now and then: that must cost no release.
    api.fault = draw(st.sampled_from([None, "status", "events"])) and _write_faults(
        draw(st.sampled_from(["status", "events"]))
    )
    mode = draw(
        st.sampled_from(["answers", "answers", "factory-raises", "fetch-raises", "close-raises"])
    )
    return api, [j["metadata"]["name"] for j in due], HostileMeter(draw(payloads), mode)


def _write_faults(which: str) -> kf.Fault:
    def fault(verb: str, path: str) -> kf.client.KubeAPIError | None:
        if which == "status" and verb == "patch" and path.endswith("/status"):
            return kf.client.KubeAPIError("etcd is slow", 500)
        if which == "events" and verb == "create":
            return kf.client.KubeAPIError("forbidden", 403)
        return None

    return fault


@given(hostile_cluster())
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_whole_cycles_over_hostile_objects_raise_nothing_and_release_every_due_job(
    case: tuple[kf.FakeApi, list[str], HostileMeter],
) -> None:
    api, due, meter = case
    memory = cycle.Memory(recorder=events.Recorder(api), metrics=metrics.Metrics())

    result = asyncio.run(
        cycle.run_cycle(
            api, "batch", memory, now_s=NOW, meter_factory=meter, metering_timeout_s=0.2
        )
    )

    held = {n: api.objects[f"{JOBS}/{n}"]["spec"].get("suspend") for n in due}
    assert held == dict.fromkeys(due, False), (
        [(r.name, r.reason.value, r.site) for r in result.releases],
        result.applied,
        [(j.id, j.deadline_s - NOW) for j in result.built.snapshot.pending],
        result.failures,
        [api.objects[f"{JOBS}/{n}"] for n in due],
    )
    for name in due:
        assert result.applied[f"batch/{name}"] is not None


any_body = (
    st.tuples(st.just("job"), st.integers(0, 9).flatmap(hostile_job))
    | st.tuples(st.just("pod"), mutated(kf.pod(), JOB_FIELDS))
    | st.tuples(st.just("node"), mutated(kf.node("n", "flats"), NODE_FIELDS))
    | st.tuples(st.sampled_from(["job", "pod", "node"]), json_values)
)


@given(any_body)
@settings(max_examples=400)
def test_converting_any_body_never_raises_and_stays_within_bounds(case: tuple[str, Any]) -> None:
    kind, body = case
    obj = body if isinstance(body, dict) else {"spec": body, "metadata": body, "status": body}
    if kind == "node":
        node = workloads.from_node(obj)
        assert node.allocatable.cpu <= bounds.MAX_CPU_CORES
        return
    w = workloads.from_job(obj) if kind == "job" else workloads.from_pod(obj)
    assert 0 <= w.resources.cpu <= bounds.MAX_CPU_CORES
    assert 0 <= w.resources.memory_gib <= bounds.MAX_MEMORY_GIB
    assert 0 <= w.resources.gpu <= bounds.MAX_GPUS
    assert w.active_deadline_s is None or 0 < w.active_deadline_s <= bounds.JOB_DURATION.high_s
    assert bounds.timestamp_problem(w.created_s, "t") is None or w.created_s == 0.0


@given(hostile_annotations)
@settings(max_examples=300)
def test_parsing_any_hints_never_raises_and_every_hint_is_within_bounds(
    annotations: dict[str, Any],
) -> None:
    found, problems = hints.parse_hints({k: str(v) for k, v in annotations.items()})

    assert found.max_delay_s is None or bounds.MAX_DELAY.problem(found.max_delay_s) is None
    assert found.duration_s is None or bounds.JOB_DURATION.problem(found.duration_s) is None
    assert found.deadline_s is None or bounds.timestamp_problem(found.deadline_s, "t") is None
    assert all(len(p.message) < 400 for p in problems)


# --- each per-object step fails for its object alone ---------------------------------------------


def _cluster(*objs: dict[str, Any]) -> kf.FakeApi:
    api = kf.FakeApi()
    kf.store(
        api,
        kf.namespace("batch"),
        kf.node("f1", "flats"),
        kf.node("p1", "pool"),
        kf.leafsite("flats"),
        kf.leafsite("pool"),
        kf.heatpolicy("batch"),
        *objs,
    )
    return api


def _run(api: kf.FakeApi) -> cycle.CycleResult:
    memory = cycle.Memory(recorder=events.Recorder(api), metrics=metrics.Metrics())
    meter = HostileMeter([_good_payload("flats", 20.0, 10.0), _good_payload("pool", 0, 10)], "x")
    return asyncio.run(cycle.run_cycle(api, "batch", memory, now_s=NOW, meter_factory=meter))


def _due(name: str) -> dict[str, Any]:
    return kf.job(name, annotations={hints.MAX_DELAY: "0s"})


def _step_failures(api: kf.FakeApi, name: str) -> list[str]:
    return [
        e["message"]
        for e in api.events(isolation.EVENT_REASON)
        if e["involvedObject"]["name"] == name and e["type"] == "Warning"
    ]


def test_a_leafsite_that_cannot_become_a_site_leaves_the_others_planning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    to_site = resources.LeafSite.to_site

    def broken(self: resources.LeafSite, capacity: Any) -> Any:
        if self.metadata.name == "pool":
            raise ArithmeticError("capacity overflow")
        return to_site(self, capacity)

    monkeypatch.setattr(resources.LeafSite, "to_site", broken)
    api = _cluster(_due("a"))

    result = _run(api)

    assert [s.name for s in result.built.snapshot.sites] == ["flats"]
    assert api.objects[f"{JOBS}/a"]["spec"]["suspend"] is False
    (message,) = _step_failures(api, "pool")
    assert message.startswith("heatshift could not use this LeafSite in this planning cycle: ")
    assert "ArithmeticError: capacity overflow" in message


def test_a_job_whose_hints_break_its_request_is_planned_on_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse = hints.parse_hints

    def broken(annotations: Mapping[str, str]) -> Any:
        if annotations.get("example.com/poison"):
            raise RecursionError("too deep")
        return parse(annotations)

    monkeypatch.setattr(hints, "parse_hints", broken)
    poisoned = kf.job("poisoned", annotations={"example.com/poison": "1", hints.MAX_DELAY: "0s"})
    api = _cluster(poisoned, _due("fine"))

    result = _run(api)

    job = next(j for j in result.built.snapshot.pending if j.id == "job/batch/poisoned")
    assert job.deadline_s == kf.NOW + 6 * 3600.0  # the default class: not stranded, not dropped
    assert api.objects[f"{JOBS}/fine"]["spec"]["suspend"] is False
    assert "could not read its hints" in _step_failures(api, "poisoned")[0]
    (hint,) = api.events("InvalidHint")
    assert "the policy's default class applies" in hint["message"]


def test_a_release_whose_words_cannot_be_written_still_goes_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> str:
        raise ValueError("year 13431 is out of range")

    monkeypatch.setattr(cycle, "_decision", broken)
    api = _cluster(_due("a"), _due("b"))

    result = _run(api)

    assert {r.name: r.reason.value for r in result.releases} == {"a": "deadline", "b": "deadline"}
    for name in ("a", "b"):
        job = api.objects[f"{JOBS}/{name}"]
        assert job["spec"]["suspend"] is False
        assert job["metadata"]["annotations"][workloads.DECISION].endswith("deadline release")
        assert "year 13431 is out of range" in _step_failures(api, name)[0]


def test_a_release_that_raises_fails_alone_and_the_others_go_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patch_for = apply.patch_for

    def broken(w: workloads.Workload, release: apply.Release, now_s: float) -> Any:
        if release.name == "odd":
            raise KeyError("spec")
        return patch_for(w, release, now_s)

    monkeypatch.setattr(apply, "patch_for", broken)
    api = _cluster(_due("odd"), _due("fine"))

    result = _run(api)

    assert result.applied == {
        "batch/odd": apply.Outcome.FAILED,
        "batch/fine": apply.Outcome.RELEASED,
    }
    assert api.objects[f"{JOBS}/fine"]["spec"]["suspend"] is False
    assert api.objects[f"{JOBS}/odd"]["spec"]["suspend"] is True
    assert (
        "could not release it in this planning cycle: KeyError: 'spec'"
        in (_step_failures(api, "odd")[0])
    )


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": 7, "spec": {"suspend": True}},
        {"metadata": {"name": "x"}, "spec": {"suspend": True, "schedulingGates": 7}},
        {"metadata": {}, "spec": {"schedulingGates": [7, {"name": workloads.PLACEMENT_GATE}]}},
    ],
)
def test_a_release_patch_is_made_from_any_body(body: dict[str, Any]) -> None:
    for kind in workloads.Kind:
        release = apply.Release(
            kind, "batch", "x", None, {}, "why", apply.ReleaseKind.DEADLINE, "p"
        )
        patch = apply.release_patch(body, release, NOW)
        if patch is not None and kind is workloads.Kind.JOB:
            assert patch["spec"] == {"suspend": False}
        elif patch is not None:  # our gate goes, anything else stays as it was
            assert patch["spec"]["schedulingGates"] in ([], [7])


def test_a_status_that_cannot_be_built_costs_no_release(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("tankPercent must be finite")

    monkeypatch.setattr(cycle.status_mod, "leafsite_status", broken)
    api = _cluster(_due("a"))

    _run(api)

    assert api.objects[f"{JOBS}/a"]["spec"]["suspend"] is False
    assert "could not write its status" in _step_failures(api, "flats")[0]
    assert "status" in api.objects["/apis/heatshift.dev/v1alpha1/heatpolicies/batch"]
