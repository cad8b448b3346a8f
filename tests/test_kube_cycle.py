"""One planning cycle against an in-memory API: releases, deadlines without metering or solver,
dry runs, statuses, Events and metrics."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import pytest

import kube_fixtures as kf
from heatshift import metrics as metrics_mod
from heatshift import model, resources
from heatshift.kube import apply, cycle, events, hints, meters, workloads
from heatshift.metering import readings, source
from heatshift.planner import policies

NOW = kf.NOW + 60
JOBS = "/apis/batch/v1/namespaces/batch/jobs"
SITES = "/apis/heatshift.dev/v1alpha1/leafsites"
POLICY = "/apis/heatshift.dev/v1alpha1/heatpolicies/batch"


class Meter:
    """A source factory whose sites answer with these demands (kW); absent sites are down.
    With ``registers``, each site's reading carries those cumulative registers (kWh)."""

    def __init__(
        self,
        demand_kw: Mapping[str, float],
        registers: Mapping[str, readings.Registers] | None = None,
    ) -> None:
        self.demand_kw = demand_kw
        self.registers = registers or {}

    def __call__(
        self, endpoint: meters.Endpoint, queries: Mapping[str, resources.PrometheusQueries]
    ) -> source.MeteringSource:
        return _Source(self.demand_kw, self.registers)


class _Source:
    def __init__(
        self, demand_kw: Mapping[str, float], registers: Mapping[str, readings.Registers]
    ) -> None:
        self.demand_kw = demand_kw
        self.registers = registers

    async def fetch(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.SiteReading | readings.Rejection]:
        out: dict[str, readings.SiteReading | readings.Rejection] = {}
        for site in sites:
            if site in self.demand_kw:
                out[site] = readings.SiteReading(
                    site=site,
                    observed_at_s=now_s - 10,
                    demand_kw=self.demand_kw[site],
                    tank_energy_kwh=10.0,
                    tank_capacity_kwh=80.0,
                    tank_source="energy",
                    registers=self.registers.get(site),
                )
            else:
                out[site] = readings.Rejection(
                    site=site, kind=readings.RejectionKind.UNAVAILABLE, message="503 from meter"
                )
        return out

    async def aclose(self) -> None:
        pass


def _cluster(*jobs: dict[str, Any], policy: dict[str, Any] | None = None) -> kf.FakeApi:
    api = kf.FakeApi()
    kf.store(
        api,
        kf.namespace("batch", {"team": "ml"}),
        kf.node("f1", "flats"),
        kf.node("p1", "pool"),
        kf.leafsite("flats"),
        kf.leafsite("pool"),
        policy or kf.heatpolicy("batch", replan="5m"),
        *jobs,
    )
    return api


def _memory(api: kf.FakeApi) -> cycle.Memory:
    return cycle.Memory(recorder=events.Recorder(api), metrics=metrics_mod.Metrics())


async def _cycle(
    api: kf.FakeApi, memory: cycle.Memory, demand: Mapping[str, float], **kwargs: Any
) -> cycle.CycleResult:
    return await cycle.run_cycle(
        api, "batch", memory, now_s=NOW, meter_factory=Meter(demand), **kwargs
    )


def _value(memory: cycle.Memory, name: str, **labels: str) -> float | None:
    return memory.metrics.registry.get_sample_value(name, labels)


@pytest.mark.asyncio
async def test_a_due_job_goes_to_the_site_that_wants_heat_and_everything_is_reported() -> None:
    api = _cluster(kf.job("render", annotations={"heatshift.dev/max-delay": "2m"}))
    memory = _memory(api)

    result = await _cycle(api, memory, {"flats": 20.0, "pool": 0.0})

    (release,) = result.releases
    assert (release.site, release.reason) == ("flats", apply.ReleaseKind.DEADLINE)
    assert result.applied == {"batch/render": apply.Outcome.RELEASED}
    job = api.objects[f"{JOBS}/render"]
    assert job["spec"]["suspend"] is False
    assert job["metadata"]["annotations"][workloads.SITE] == "flats"
    assert "its max-delay annotation" in job["metadata"]["annotations"][workloads.DECISION]

    flats = api.objects[f"{SITES}/flats"]["status"]
    assert flats["demandKW"] == 20.0 and flats["heatAware"] is True
    assert {c["type"]: c["status"] for c in flats["conditions"]} == {
        "Ready": "True",
        "MeteringFresh": "True",
    }
    policy = api.objects[POLICY]["status"]
    assert (policy["held"], policy["released"], policy["deadlineForcedReleases"]) == (0, 1, 1)
    assert policy["solverStatus"] in ("optimal", "feasible")
    assert _value(memory, "heatshift_jobs_released_total", site="flats", reason="deadline") == 1
    assert _value(memory, "heatshift_deadline_releases_total", policy="batch") == 1
    assert _value(memory, "heatshift_plan_seconds_count", policy="batch") == 1
    assert len(api.events("Released")) == 1


@pytest.mark.asyncio
async def test_deadlines_hold_with_no_metering_and_a_broken_solver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        def decide(self, snapshot: model.Snapshot) -> model.Plan:
            raise RuntimeError("solver crashed")

    monkeypatch.setattr(policies, "make_policy", lambda name, cfg: Broken())
    api = _cluster(
        kf.job("due", annotations={"heatshift.dev/max-delay": "0s"}),
        kf.job("later", created=workloads.format_time(NOW)),
    )
    memory = _memory(api)

    result = await _cycle(api, memory, {})  # every site's meter is down

    assert result.outcome.error is not None and "solver crashed" in result.outcome.error
    released = {r.name: r for r in result.releases}
    assert released["due"].reason is apply.ReleaseKind.DEADLINE
    assert "heat-unaware plan" in released["due"].decision
    assert api.objects[f"{JOBS}/due"]["spec"]["suspend"] is False
    pool = api.objects[f"{SITES}/pool"]["status"]
    fresh = next(c for c in pool["conditions"] if c["type"] == "MeteringFresh")
    assert (fresh["status"], fresh["reason"]) == ("False", "MeteringUnavailable")
    assert "503 from meter" in fresh["message"]
    planned = next(c for c in api.objects[POLICY]["status"]["conditions"] if c["type"] == "Planned")
    assert planned["status"] == "False" and "solver crashed" in planned["message"]
    assert _value(memory, "heatshift_planner_fallbacks_total", policy="batch") == 1
    assert _value(memory, "heatshift_metering_errors_total", site="pool", kind="unavailable") == 1


@pytest.mark.asyncio
async def test_a_job_no_site_can_take_still_starts_by_its_deadline() -> None:
    api = _cluster(kf.job("huge", cpu="500", annotations={"heatshift.dev/max-delay": "1m"}))

    result = await _cycle(api, _memory(api), {"flats": 20.0})

    (release,) = result.releases
    assert release.site is None and release.reason is apply.ReleaseKind.DEADLINE
    assert "no LeafSite can take it" in release.decision
    job = api.objects[f"{JOBS}/huge"]
    assert job["spec"]["suspend"] is False
    assert "nodeSelector" not in job["spec"]["template"]["spec"]


@pytest.mark.asyncio
async def test_a_due_job_with_every_site_full_waits_in_the_clusters_queue_not_held() -> None:
    # Both sites full of running work for hours; the due job cannot start anywhere now.
    busy = [
        kf.job(
            f"busy-{site}-{i}",
            suspend=False,
            annotations={workloads.SITE: site, "heatshift.dev/expected-duration": "5h"},
        )
        for site in ("flats", "pool")
        for i in range(4)
    ]
    api = _cluster(*busy, kf.job("due", annotations={"heatshift.dev/max-delay": "0s"}))

    result = await _cycle(api, _memory(api), {"flats": 20.0, "pool": 20.0})

    (release,) = result.releases
    assert release.name == "due" and release.reason is apply.ReleaseKind.DEADLINE
    assert release.site in ("flats", "pool")
    assert "full" in release.decision and "start deadline" in release.decision
    job = api.objects[f"{JOBS}/due"]
    # Unsuspended onto its site: the scheduler starts it the moment room frees there.
    assert job["spec"]["suspend"] is False
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {kf.SITE_LABEL: release.site}


@pytest.mark.asyncio
async def test_a_dry_run_changes_nothing() -> None:
    api = _cluster(kf.job("due", annotations={"heatshift.dev/max-delay": "0s"}))

    result = await _cycle(api, _memory(api), {"flats": 20.0}, apply_plan=False)

    assert [r.name for r in result.releases] == ["due"]
    assert result.applied == {}
    assert [c for c in api.calls if c.verb in ("patch", "create")] == []


@pytest.mark.asyncio
async def test_a_malformed_hint_is_reported_once_and_the_job_still_planned() -> None:
    api = _cluster(
        kf.job(
            "odd",
            created=workloads.format_time(NOW),
            annotations={"heatshift.dev/power-watts": "x"},
        )
    )
    memory = _memory(api)

    first = await _cycle(api, memory, {"flats": 20.0})
    await _cycle(api, memory, {"flats": 20.0})

    assert [j.id for j in first.built.snapshot.pending] == ["job/batch/odd"]
    (warning,) = api.events("InvalidHint")
    assert warning["type"] == "Warning"
    assert "heatshift.dev/power-watts" in warning["message"]
    assert warning["involvedObject"] == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "odd",
        "namespace": "batch",
        "uid": "uid-batch-odd",
    }


@pytest.mark.asyncio
async def test_an_invalid_or_missing_policy_is_a_typed_error() -> None:
    bad = kf.heatpolicy("batch")
    bad["spec"]["defaultSLAClass"] = "gold"
    api = _cluster(policy=bad)
    with pytest.raises(cycle.PolicyInvalid, match="defaultSLAClass"):
        await _cycle(api, _memory(api), {})
    with pytest.raises(cycle.PolicyNotFound):
        await cycle.run_cycle(api, "nope", _memory(api), now_s=NOW, meter_factory=Meter({}))


@pytest.mark.asyncio
async def test_an_overrunning_planner_is_cut_off_for_the_heat_unaware_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Slow:
        def decide(self, snapshot: model.Snapshot) -> model.Plan:
            time.sleep(0.5)
            raise AssertionError("too late to matter")

    monkeypatch.setattr(policies, "make_policy", lambda name, cfg: Slow())
    api = _cluster(kf.job("a"))
    built = (await _cycle(api, _memory(api), {"flats": 1.0}, apply_plan=False)).built
    cfg = kf.parsed_policy(kf.heatpolicy()).spec.planner_config()

    outcome = await cycle.make_plan(built.snapshot, cfg, timeout_s=0.05)

    assert outcome.error == "the planner took longer than 0.05s"
    assert outcome.plan.status is model.SolveStatus.HEURISTIC
    assert [p.job_id for p in outcome.plan.placements] == ["job/batch/a"]


@pytest.mark.asyncio
async def test_heat_totals_accumulate_across_cycles() -> None:
    released = {workloads.SITE: "flats", workloads.RELEASED_AT: kf.NOW_TEXT}
    api = _cluster(kf.job("busy", suspend=False, cpu="16", annotations=released))
    memory = _memory(api)

    await cycle.run_cycle(api, "batch", memory, now_s=NOW, meter_factory=Meter({"flats": 50.0}))
    await cycle.run_cycle(
        api, "batch", memory, now_s=NOW + 300, meter_factory=Meter({"flats": 50.0})
    )

    status = api.objects[f"{SITES}/flats"]["status"]
    # idle 200 W + 16 cores at 10 W = 360 W; 85 % of it for 5 minutes, all wanted
    assert status["itLoadKW"] == pytest.approx(0.36)
    assert status["heatDeliveredKWh"] == pytest.approx(0.36 * 0.85 * 300 / 3600, abs=1e-3)
    assert status["heatDumpedKWh"] == 0.0
    # The fake meter has no registers: the ledger is estimated, and says so.
    period = status["ledger"]["current"]
    assert period["heatDelivered"]["source"] == "estimated"
    assert period["itEnergy"]["kwh"] == pytest.approx(0.36 * 300 / 3600, abs=1e-6)
    delivered_j = _value(
        memory, "heatshift_heat_delivered_joules_total", site="flats", source="estimated"
    )
    assert delivered_j == pytest.approx(0.36 * 0.85 * 300 / 3600 * 3.6e6)


def _past_the_models(policy: resources.HeatPolicy, max_delay: str) -> resources.HeatPolicy:
    """``policy`` with its default SLA class's maxDelay set without validation: a value the CRD
    and the models refuse, as if one got past them (an old CRD, a model bug)."""
    classes = tuple(
        resources.SLAClass.model_construct(name=c.name, max_delay=max_delay, priority=c.priority)
        if c.name == policy.spec.default_sla_class
        else c
        for c in policy.spec.sla_classes
    )
    spec = policy.spec.model_copy(update={"sla_classes": classes})
    return policy.model_copy(update={"spec": spec})


@pytest.mark.asyncio
async def test_sla_max_delay_99999999h_does_not_stop_due_releases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = cycle.read_cluster

    async def read_past_the_models(*args: Any, **kwargs: Any) -> cycle.Cluster:
        cluster = await read(*args, **kwargs)
        bad = tuple(_past_the_models(p, "99999999h") for p in cluster.policies)
        return dataclasses.replace(cluster, policies=bad)

    monkeypatch.setattr(cycle, "read_cluster", read_past_the_models)
    api = _cluster(
        kf.job("due", annotations={"heatshift.dev/max-delay": "0s"}),
        kf.job("waits", created=workloads.format_time(NOW)),
    )
    memory = _memory(api)

    result = await _cycle(api, memory, {"flats": 20.0})

    # ("waits" may start too: the flats want more heat than the site makes, so holding it
    # buys none.)
    assert result.applied["batch/due"] == apply.Outcome.RELEASED
    assert api.objects[f"{JOBS}/due"]["spec"]["suspend"] is False
    waits = next(j for j in result.built.snapshot.pending if j.id == "job/batch/waits")
    assert waits.deadline_s == NOW + 720 * 3600.0
    (warning,) = api.events("InvalidSpec")
    assert warning["type"] == "Warning"
    assert warning["involvedObject"]["kind"] == "HeatPolicy"
    assert warning["message"] == (
        "SLA class 'standard': maxDelay '99999999h' cannot be used (a maximum delay must be "
        "between 0s and 720h); its jobs are held at most 720h"
    )
    planned = next(c for c in api.objects[POLICY]["status"]["conditions"] if c["type"] == "Planned")
    assert "maxDelay '99999999h' cannot be used" in planned["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize("value", ["99999999h", "9" * 400 + "h", "2000000h"])
async def test_max_delay_hint_99999999h_does_not_stop_due_releases(value: str) -> None:
    api = _cluster(
        kf.job("due", annotations={"heatshift.dev/max-delay": "0s"}),
        kf.job("long", created=workloads.format_time(NOW), annotations={hints.MAX_DELAY: value}),
    )

    result = await _cycle(api, _memory(api), {"flats": 20.0, "pool": 20.0})

    assert result.applied["batch/due"] is apply.Outcome.RELEASED
    assert api.objects[f"{JOBS}/due"]["spec"]["suspend"] is False
    long = next(j for j in result.built.snapshot.pending if j.id == "job/batch/long")
    assert long.deadline_s == NOW + 6 * 3600.0  # the SLA class's 6h, not the hint
    (warning,) = api.events("InvalidHint")
    assert warning["involvedObject"]["name"] == "long"
    assert "heatshift.dev/max-delay" in warning["message"]
    assert "a maximum delay must be between 0s and 720h" in warning["message"]


@pytest.mark.asyncio
async def test_a_deadline_hint_in_the_year_10000_does_not_stop_due_releases() -> None:
    api = _cluster(
        kf.job("due", annotations={"heatshift.dev/max-delay": "0s"}),
        kf.job(
            "far",
            created=workloads.format_time(NOW),
            annotations={hints.DEADLINE: "9999-12-31T23:59:59-12:00"},
        ),
    )

    result = await _cycle(api, _memory(api), {"flats": 20.0, "pool": 20.0})

    assert result.applied["batch/due"] is apply.Outcome.RELEASED
    (warning,) = api.events("InvalidHint")
    assert "the deadline must be a time between 2000 and 2100" in warning["message"]


def _registers(t_s: float, delivered: float, it: float) -> readings.Registers:
    return readings.Registers(
        meter_id="m-1", observed_at_s=t_s, heat_delivered_kwh=delivered, it_energy_kwh=it
    )


@pytest.mark.asyncio
async def test_the_ledger_is_metered_from_register_deltas_and_survives_a_restart() -> None:
    api = _cluster()
    memory = _memory(api)

    async def at(t_s: float, delivered: float, it: float, mem: cycle.Memory) -> None:
        regs = {"flats": _registers(t_s - 10, delivered, it)}
        meter = Meter({"flats": 20.0, "pool": 0.0}, regs)
        await cycle.run_cycle(api, "batch", mem, now_s=t_s, meter_factory=meter)

    # Within what the site can make: its one node's 16 cores at 10 W and 200 W idle.
    await at(NOW, 1000.0, 2000.0, memory)
    await at(NOW + 300, 1000.015, 2000.02, memory)
    # A restarted operator: nothing in memory, the ledger continues from status.
    await at(NOW + 600, 1000.03, 2000.04, _memory(api))

    period = api.objects[f"{SITES}/flats"]["status"]["ledger"]["current"]
    assert period["heatDelivered"]["meteredKWh"] == pytest.approx(0.03)
    assert period["heatDelivered"]["registerStartKWh"] == 1000.0
    assert period["heatDelivered"]["source"] == "metered"
    assert period["itEnergy"]["kwh"] == pytest.approx(0.04)
    # ERE of 0.04 kWh IT with 0.03 kWh reused: (0.04 - 0.03) / 0.04; fuel / 0.9, CO2 x 0.202.
    assert period["ere"] == pytest.approx(0.25)
    assert period["fuelAvoidedKWh"] == pytest.approx(0.03 / 0.9)
    assert period["co2AvoidedKg"] == pytest.approx(0.03 / 0.9 * 0.202)
    conditions = {c["type"]: c for c in api.objects[f"{SITES}/flats"]["status"]["conditions"]}
    assert conditions["MeterRegistersValid"]["status"] == "True"


@pytest.mark.asyncio
async def test_a_register_going_backwards_is_a_condition_and_never_a_negative_delta() -> None:
    api = _cluster()
    memory = _memory(api)
    for t_s, delivered in ((NOW, 500.0), (NOW + 300, 501.0), (NOW + 600, 300.0)):
        meter = Meter({"flats": 20.0, "pool": 0.0}, {"flats": _registers(t_s, delivered, 0.0)})
        await cycle.run_cycle(api, "batch", memory, now_s=t_s, meter_factory=meter)

    status = api.objects[f"{SITES}/flats"]["status"]
    assert status["ledger"]["current"]["heatDelivered"]["meteredKWh"] == pytest.approx(1.0)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["MeterRegistersValid"]["status"] == "False"
    assert conditions["MeterRegistersValid"]["reason"] == "RegisterBackwards"
    assert conditions["MeteringFresh"]["status"] == "True"  # planning still uses the reading
    assert _value(memory, "heatshift_metering_errors_total", site="flats", kind="backwards") == 1


@pytest.mark.asyncio
async def test_a_register_the_meter_no_longer_has_leaves_no_stale_start_in_status() -> None:
    api = _cluster()
    memory = _memory(api)
    for t_s, it in ((NOW, 2000.0), (NOW + 300, None)):
        regs = readings.Registers(
            meter_id="m-1", observed_at_s=t_s, heat_delivered_kwh=1.0, it_energy_kwh=it
        )
        meter = Meter({"flats": 20.0, "pool": 0.0}, {"flats": regs})
        await cycle.run_cycle(api, "batch", memory, now_s=t_s, meter_factory=meter)

    stored = api.objects[f"{SITES}/flats"]["status"]["ledger"]
    assert "registerStartKWh" not in stored["current"]["itEnergy"]
    assert "itEnergyKWh" not in stored["meter"]
    assert stored["current"]["heatDelivered"]["registerStartKWh"] == 1.0


@pytest.mark.asyncio
async def test_a_site_two_policies_plan_is_written_once_per_interval_and_at_once_on_change() -> (
    None
):
    released = {workloads.SITE: "flats", workloads.RELEASED_AT: kf.NOW_TEXT}
    api = _cluster(kf.job("busy", suspend=False, cpu="16", annotations=released))
    kf.store(api, kf.heatpolicy("second", replan="5m"))
    memory = _memory(api)
    flats = f"{SITES}/flats/status"
    both_up = Meter({"flats": 50.0, "pool": 10.0})

    async def at(policy: str, t_s: float, meter: Meter) -> int:
        before = len(api.patches(flats))
        await cycle.run_cycle(api, policy, memory, now_s=t_s, meter_factory=meter)
        return len(api.patches(flats)) - before

    assert await at("batch", NOW, both_up) == 1
    # The other policy plans the same site a little later: only the ledger moved; no write.
    assert await at("second", NOW + 30, both_up) == 0
    # A planning interval after the last write, it is written, with everything counted.
    assert await at("second", NOW + 300, both_up) == 1
    period = api.objects[f"{SITES}/flats"]["status"]["ledger"]["current"]
    assert period["itEnergy"]["kwh"] == pytest.approx(0.36 * 300 / 3600, abs=1e-6)
    # What the status says changed (the meter went down): written at once.
    assert await at("batch", NOW + 330, Meter({"pool": 10.0})) == 1
    conditions = {c["type"]: c for c in api.objects[f"{SITES}/flats"]["status"]["conditions"]}
    assert conditions["MeteringFresh"]["status"] == "False"
