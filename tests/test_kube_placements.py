"""Policies sharing a site place one at a time, and count each other's releases the watch has
not delivered yet (:mod:`heatshift.kube.placements`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import kube_fixtures as kf
from heatshift import metrics as metrics_mod
from heatshift.kube import cycle, events, placements, view, workloads
from test_kube_cycle import Meter
from test_kube_view import _indexes

NOW = kf.NOW + 60
JOBS = "/apis/batch/v1/namespaces/batch/jobs"


def _record(name: str, **kwargs: Any) -> workloads.Workload:
    record = view.job_record(kf.job(name, **kwargs))
    assert record is not None
    return record


def test_a_booked_release_counts_as_running_until_the_view_shows_it() -> None:
    book = placements.Placements()
    held = _record("a")
    book.book([(held, "flats")], NOW)

    (seen,) = book.overlay([held], NOW + 1)
    assert (seen.held, seen.site, seen.running) == (False, "flats", True)
    # The watch delivers the release: the view's own record wins and the booking goes.
    released = _record("a", suspend=False, annotations={workloads.SITE: "flats"})
    assert book.overlay([released], NOW + 2) == [released]
    assert book.booked == {}


def test_a_booking_of_a_deleted_or_long_unconfirmed_workload_is_dropped() -> None:
    book = placements.Placements()
    book.book([(_record("gone"), "flats"), (_record("quiet"), "flats")], NOW)
    quiet = _record("quiet")

    assert book.overlay([quiet], NOW + 1)[0].running  # gone was deleted: dropped
    assert list(book.booked) == [quiet.id]
    assert book.overlay([quiet], NOW + placements.KEEP_S + 1) == [quiet]
    assert book.booked == {}


def _two_policies_on_one_node() -> kf.FakeApi:
    api = kf.FakeApi()
    jobs = [
        kf.job(
            f"{team}{i}", labels={"queue": team}, annotations={"heatshift.dev/power-watts": "3000"}
        )
        for team in ("a", "b")
        for i in range(4)
    ]
    kf.store(
        api,
        kf.namespace("batch", {"team": "ml"}),
        kf.node("f1", "flats"),  # 16 CPUs: four of the 4-CPU jobs at once
        kf.leafsite("flats", max_thermal_kw=100.0),
        kf.heatpolicy("a", match_labels={"queue": "a"}, sites=["flats"]),
        kf.heatpolicy("b", match_labels={"queue": "b"}, sites=["flats"]),
        *jobs,
    )
    return api


def _released(api: kf.FakeApi) -> list[str]:
    return sorted(
        path.rsplit("/", 1)[1]
        for path, obj in api.objects.items()
        if path.startswith(JOBS) and obj["spec"].get("suspend") is False
    )


@pytest.mark.asyncio
async def test_two_policies_planning_at_once_never_overfill_the_site_they_share() -> None:
    api = _two_policies_on_one_node()
    # A view the watch never updates: each policy's release is invisible to the other's read.
    reader = view.WatchedReader(_indexes(api.objects.values()), view.Heard(), api)
    memory = cycle.Memory(recorder=events.Recorder(api), metrics=metrics_mod.Metrics())

    async def one(policy: str) -> cycle.CycleResult:
        return await cycle.run_cycle(
            api, policy, memory, now_s=NOW, meter_factory=Meter({"flats": 90.0}), reader=reader
        )

    first, second = await asyncio.gather(one("a"), one("b"))

    # The site wants all the heat it can get. The first to place takes its share (half the
    # held work is its own), the second sees those two running and fills the rest.
    released = _released(api)
    assert len(released) == 4, released
    assert sorted([len(first.releases), len(second.releases)]) == [2, 2]
    assert sorted([len(first.built.snapshot.running), len(second.built.snapshot.running)]) == [
        0,
        2,
    ]


@pytest.mark.asyncio
async def test_deadline_releases_are_never_cut_to_a_share() -> None:
    api = _two_policies_on_one_node()
    # b's Jobs are all due now: deadline releases are never cut to a share.
    for i in range(4):
        path = f"{JOBS}/b{i}"
        api.objects[path]["metadata"]["annotations"]["heatshift.dev/max-delay"] = "0s"
    reader = view.WatchedReader(_indexes(api.objects.values()), view.Heard(), api)
    memory = cycle.Memory(recorder=events.Recorder(api), metrics=metrics_mod.Metrics())

    due = await cycle.run_cycle(
        api, "b", memory, now_s=NOW, meter_factory=Meter({"flats": 90.0}), reader=reader
    )

    assert len(due.releases) == 4
    assert {r.reason.value for r in due.releases} == {"deadline"}
