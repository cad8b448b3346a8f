"""Cluster objects into a Snapshot: quantities, workloads, selection, sites, states, jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

import kube_fixtures as kf
from heatshift import model
from heatshift.kube import selection, snapshot, workloads
from heatshift.metering import readings


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", 0.25),
        ("2", 2.0),
        ("1.5Gi", 1.5 * 1024**3),
        ("1e3", 1000.0),
        ("4k", 4000.0),
        (3, 3.0),
    ],
)
def test_quantities(text: object, value: float) -> None:
    assert workloads.parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "1Xi", "1.2.3"])
def test_bad_quantities_raise_a_typed_error(text: str) -> None:
    with pytest.raises(workloads.QuantityError):
        workloads.parse_quantity(text)


def test_a_suspended_job_is_held_with_its_shape_times_parallelism() -> None:
    w = workloads.from_job(kf.job(cpu="500m", memory="2Gi", gpu=1, parallelism=3))
    assert w.held and not w.running and not w.finished
    assert w.id == "job/batch/train"
    assert w.resources == model.Resources(cpu=1.5, memory_gib=6.0, gpu=3)
    assert w.created_s == kf.NOW


@pytest.mark.parametrize(
    ("body", "held", "running"),
    [
        (kf.job(suspend=False), False, False),  # the owner runs it: not ours
        (kf.job(annotations={workloads.RELEASED_AT: kf.NOW_TEXT}), False, False),
        (
            kf.job(
                suspend=False,
                annotations={workloads.RELEASED_AT: kf.NOW_TEXT, workloads.SITE: "pool"},
            ),
            False,
            True,
        ),
        (kf.job(finished="Complete"), False, False),
        (
            kf.job(
                suspend=False,
                finished="Failed",
                annotations={workloads.RELEASED_AT: kf.NOW_TEXT, workloads.SITE: "pool"},
            ),
            False,
            False,
        ),
    ],
)
def test_job_states(body: dict[str, Any], held: bool, running: bool) -> None:
    w = workloads.from_job(body)
    assert (w.held, w.running) == (held, running)


def test_bare_pods_gates_and_owners() -> None:
    assert workloads.from_pod(kf.pod()).held
    assert not workloads.from_pod(kf.pod(gated=False)).held
    assert workloads.is_bare_pod(kf.pod())
    assert not workloads.is_bare_pod(kf.pod(owned=True))
    assert workloads.from_pod(kf.pod(phase="Succeeded")).finished


def test_nodes_that_are_not_ready_or_cordoned_do_not_count() -> None:
    ready = workloads.from_node(kf.node("a", "pool"))
    assert ready.schedulable and ready.allocatable.cpu == 16.0
    assert not workloads.from_node(kf.node("b", "pool", ready=False)).schedulable
    cordoned = kf.node("c", "pool")
    cordoned["spec"] = {"unschedulable": True}
    assert not workloads.from_node(cordoned).schedulable


def test_the_first_policy_by_name_manages_a_workload() -> None:
    a = kf.parsed_policy(kf.heatpolicy("a-gpu", match_labels={"kind": "gpu"}))
    b = kf.parsed_policy(kf.heatpolicy("b-all"))
    c = kf.parsed_policy(kf.heatpolicy("c-all"))
    ns = selection.namespace_labels("batch", None)

    def owner(labels: dict[str, str], is_pod: bool = False) -> str | None:
        found = selection.managing_policy([c, b, a], labels=labels, ns_labels=ns, is_pod=is_pod)
        return found.metadata.name if found else None

    assert owner({"kind": "gpu"}) == "a-gpu"
    assert owner({"kind": "cpu"}) == "b-all"
    assert owner({}, is_pod=True) is None  # no policy holds bare pods


def _reading(site: str, demand_kw: float, tank_kwh: float = 10.0) -> readings.SiteReading:
    return readings.SiteReading(
        site=site,
        observed_at_s=kf.NOW - 30,
        demand_kw=demand_kw,
        tank_energy_kwh=tank_kwh,
        tank_capacity_kwh=80.0,
        tank_source="energy",
    )


def _build(
    jobs: Sequence[dict[str, Any]],
    *,
    results: dict[str, readings.SiteReading | readings.Rejection] | None = None,
    policy: dict[str, Any] | None = None,
    policies: Sequence[dict[str, Any]] = (),
    sites: Sequence[str] = ("flats", "pool"),
) -> snapshot.Built:
    own = kf.parsed_policy(policy or kf.heatpolicy("batch"))
    return snapshot.build_snapshot(
        own,
        policies=[own, *(kf.parsed_policy(p) for p in policies)],
        leafsites=[kf.parsed_site(kf.leafsite(s)) for s in sites],
        nodes=[
            workloads.from_node(kf.node("f1", "flats", cpu="8")),
            workloads.from_node(kf.node("f2", "flats", cpu="8", memory="32Gi")),
            workloads.from_node(kf.node("p1", "pool", cpu="4")),
            workloads.from_node(kf.node("p2", "pool", ready=False)),
        ],
        all_workloads=[workloads.from_job(j) for j in jobs],
        ns_labels={"batch": {"team": "ml"}},
        results=results if results is not None else {"flats": _reading("flats", 20.0)},
        now_s=kf.NOW + 600,
    )


def test_sites_get_the_allocatable_of_their_ready_nodes() -> None:
    built = _build([])
    assert built.snapshot.site("flats").capacity == model.Resources(cpu=16, memory_gib=96)
    assert built.snapshot.site("pool").capacity == model.Resources(cpu=4, memory_gib=64)


def test_a_site_without_a_valid_reading_is_heat_unaware() -> None:
    stale = readings.Rejection(
        site="pool", kind=readings.RejectionKind.STALE, message="reading is 2 h old"
    )
    built = _build([], results={"flats": _reading("flats", 20.0), "pool": stale})
    assert built.snapshot.states["flats"].heat_aware
    assert built.snapshot.states["flats"].demand_kw == 20.0
    assert not built.snapshot.states["pool"].heat_aware
    assert "reading is 2 h old" in built.snapshot.states["pool"].reason
    missing = _build([], results={})
    assert not any(s.heat_aware for s in missing.snapshot.states.values())


def test_held_jobs_become_requests_with_hints_and_sla_defaults() -> None:
    built = _build(
        [
            kf.job("plain"),
            kf.job(
                "hinted",
                annotations={
                    "heatshift.dev/max-delay": "1h",
                    "heatshift.dev/expected-duration": "30m",
                    "heatshift.dev/power-watts": "900",
                    "heatshift.dev/sites": "pool",
                },
            ),
            kf.job("urgent", labels={"heatshift.dev/sla-class": "urgent"}),
        ]
    )
    jobs = {j.id: j for j in built.snapshot.pending}
    plain, hinted, urgent = (
        jobs["job/batch/plain"],
        jobs["job/batch/hinted"],
        jobs["job/batch/urgent"],
    )
    assert plain.release_s == kf.NOW
    assert plain.deadline_s == kf.NOW + 6 * 3600  # the standard class
    assert plain.duration_s == snapshot.DEFAULT_DURATION_S
    assert built.deadline_sources["job/batch/plain"] == "its SLA class"
    assert hinted.deadline_s == kf.NOW + 3600
    assert (hinted.duration_s, hinted.power_watts) == (1800.0, 900.0)
    assert hinted.allowed_sites == frozenset({"pool"})
    assert (urgent.deadline_s, urgent.priority) == (kf.NOW + 900, 5)
    assert built.problems == {}


def test_a_malformed_hint_keeps_the_job_and_reports_the_problem() -> None:
    built = _build(
        [
            kf.job("bad", annotations={"heatshift.dev/deadline": "soon"}),
            kf.job("odd-class", labels={"heatshift.dev/sla-class": "platinum"}),
        ]
    )
    jobs = {j.id: j for j in built.snapshot.pending}
    assert jobs["job/batch/bad"].deadline_s == kf.NOW + 6 * 3600
    (problem,) = built.problems["job/batch/bad"]
    assert problem.annotation == "heatshift.dev/deadline"
    (class_problem,) = built.problems["job/batch/odd-class"]
    assert "platinum" in class_problem.message and "'standard' applies" in class_problem.message


def test_only_the_managing_policys_jobs_are_pending() -> None:
    mine = kf.heatpolicy("b-batch")
    theirs = kf.heatpolicy("a-gpu", match_labels={"kind": "gpu"})
    built = _build(
        [kf.job("cpu-job"), kf.job("gpu-job", labels={"kind": "gpu"})],
        policy=mine,
        policies=[theirs],
    )
    assert [j.id for j in built.snapshot.pending] == ["job/batch/cpu-job"]
    assert set(built.held) == {"job/batch/cpu-job"}


def test_running_jobs_hold_capacity_at_their_site_whoever_released_them() -> None:
    released = {
        workloads.SITE: "flats",
        workloads.RELEASED_AT: kf.NOW_TEXT,
        "heatshift.dev/expected-duration": "2h",
    }
    overrun = {**released, "heatshift.dev/expected-duration": "1m"}
    built = _build(
        [
            kf.job("a", suspend=False, annotations=released, labels={"kind": "gpu"}),
            kf.job("b", suspend=False, annotations=overrun),
            kf.job("c", suspend=False, annotations={**released, workloads.SITE: "elsewhere"}),
        ]
    )
    running = {r.id: r for r in built.snapshot.running}
    assert set(running) == {"job/batch/a", "job/batch/b"}
    assert running["job/batch/a"].end_s == kf.NOW + 7200
    assert running["job/batch/a"].power_watts == 40.0  # 4 cores at 10 W each
    # past its expected end it still holds its resources for a while
    assert running["job/batch/b"].end_s == kf.NOW + 600 + snapshot.MIN_REMAINING_S
    assert built.snapshot.pending == ()


def test_policy_sites_restrict_the_snapshot() -> None:
    built = _build([], policy=kf.heatpolicy("batch", sites=["pool"]))
    assert [s.name for s in built.snapshot.sites] == ["pool"]
