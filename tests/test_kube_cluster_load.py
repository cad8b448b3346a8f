"""The cluster-backed load source of ``heatshift metering-sim --kubeconfig``.

The power computation and the cache run against the in-memory API of ``kube_fixtures``; one
test serves a scenario over real HTTP with its load read from that API. The LeafSites of
``kube_fixtures`` idle at 200 W and draw 10 W per requested CPU.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from heatshift import thermal
from heatshift.kube import client, cluster_load
from heatshift.metering import server as metering_server
from kube_fixtures import FakeApi, job, leafsite, node, pod, store
from metering_fixtures import FakeClock, tiny_scenario

IDLE_W = 200.0
PER_CPU_W = 10.0
PODS = client.path_for("", "v1", "pods")


def running_pod(
    name: str,
    on: str,
    *,
    cpu: str = "2",
    phase: str = "Running",
    job_name: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod bound to node ``on``; owned by Job ``job_name`` when given."""
    body = pod(name, gated=False, cpu=cpu, phase=phase, annotations=annotations)
    body["spec"]["nodeName"] = on
    if job_name is not None:
        body["metadata"]["ownerReferences"] = [{"kind": "Job", "name": job_name, "uid": "j"}]
    return body


def cluster(*objs: dict[str, Any]) -> FakeApi:
    """Two sites, ``pool`` (nodes p1, p2) and ``flats`` (node f1), plus ``objs``."""
    api = FakeApi()
    store(
        api,
        leafsite("pool"),
        leafsite("flats"),
        node("p1", "pool"),
        node("p2", "pool"),
        node("f1", "flats"),
        *objs,
    )
    return api


@pytest.mark.asyncio
async def test_idle_sites_draw_their_idle_power() -> None:
    watts = (await cluster_load.read_site_watts(cluster())).watts
    assert watts == {"pool": IDLE_W, "flats": IDLE_W}


@pytest.mark.asyncio
async def test_running_pods_add_the_power_model_of_their_requests_at_their_nodes_site() -> None:
    api = cluster(
        running_pod("a", "p1", cpu="4"),
        running_pod("b", "p2", cpu="500m"),
        running_pod("c", "f1", cpu="1"),
    )
    watts = (await cluster_load.read_site_watts(api)).watts
    assert watts == {
        "pool": IDLE_W + (4 + 0.5) * PER_CPU_W,
        "flats": IDLE_W + 1 * PER_CPU_W,
    }


@pytest.mark.asyncio
async def test_a_valid_power_hint_wins_and_a_malformed_one_falls_back_to_the_model() -> None:
    api = cluster(
        running_pod("hinted", "p1", annotations={"heatshift.dev/power-watts": "750"}),
        running_pod("typo", "f1", cpu="3", annotations={"heatshift.dev/power-watts": "lots"}),
    )
    watts = (await cluster_load.read_site_watts(api)).watts
    assert watts == {"pool": IDLE_W + 750.0, "flats": IDLE_W + 3 * PER_CPU_W}


@pytest.mark.asyncio
async def test_a_jobs_power_hint_is_shared_among_the_pods_it_runs_at_once() -> None:
    hint = {"heatshift.dev/power-watts": "3000"}
    api = cluster(
        job("solo", suspend=False, annotations=hint),
        job("wide", suspend=False, annotations=hint, parallelism=3),
        running_pod("solo-x", "f1", job_name="solo"),
        *(running_pod(f"wide-{i}", "p1", job_name="wide") for i in range(2)),
    )
    watts = (await cluster_load.read_site_watts(api)).watts
    # Two of the wide Job's three pods run: two thirds of its 3 kW.
    assert watts == {"pool": IDLE_W + 2000.0, "flats": IDLE_W + 3000.0}


@pytest.mark.asyncio
async def test_only_pods_that_draw_power_count() -> None:
    api = cluster(
        job("live", suspend=False),
        job("held", suspend=True),
        job("done", suspend=False, finished="Complete"),
        # Bound, start not reported yet, of a running Job: counts.
        running_pod("starting", "p1", cpu="1", phase="Pending", job_name="live"),
        # Bound but its Job is suspended or finished, or it is a bare Pending pod: none count.
        running_pod("held-x", "p1", cpu="8", phase="Pending", job_name="held"),
        running_pod("done-x", "p1", cpu="8", phase="Pending", job_name="done"),
        running_pod("bare", "p1", cpu="8", phase="Pending"),
        running_pod("finished", "p2", cpu="8", phase="Succeeded"),
        running_pod("failed", "p2", cpu="8", phase="Failed", job_name="live"),
        # Running, but on a node no LeafSite selects.
        running_pod("elsewhere", "other-node", cpu="8"),
    )
    unbound = pod("unbound", gated=False, cpu="8", phase="Running")
    store(api, unbound)
    watts = (await cluster_load.read_site_watts(api)).watts
    assert watts == {"pool": IDLE_W + 1 * PER_CPU_W, "flats": IDLE_W}


@pytest.mark.asyncio
async def test_an_invalid_leafsite_is_left_out_logged_once_and_the_others_still_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = leafsite("broken")
    broken["spec"]["tank"]["capacityKWh"] = -5
    api = cluster(broken, running_pod("a", "p1", cpu="1"))
    found = await cluster_load.read_site_watts(api)
    assert found.watts == {"pool": IDLE_W + PER_CPU_W, "flats": IDLE_W}
    assert len(found.problems) == 1 and found.problems[0].startswith("LeafSite/broken ignored")
    load = cluster_load.ClusterLoad(api, scenario_sites(), refresh_s=0.0)
    with caplog.at_level(logging.WARNING, logger="heatshift.kube.cluster_load"):
        for _ in range(3):
            assert await load.it_power_watts("pool") == IDLE_W + PER_CPU_W
    assert [r.getMessage() for r in caplog.records] == [f"cluster load: {found.problems[0]}"]


@pytest.mark.asyncio
async def test_what_the_load_is_read_from_is_logged_when_it_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = cluster(running_pod("a", "p1", cpu="1"), running_pod("elsewhere", "other-node"))
    assert (await cluster_load.read_site_watts(api)).pods == 2  # on a LeafSite's node or not
    load = cluster_load.ClusterLoad(api, scenario_sites(), refresh_s=0.0)
    with caplog.at_level(logging.INFO, logger="heatshift.kube.cluster_load"):
        for _ in range(3):
            await load.it_power_watts("pool")
        store(api, running_pod("b", "p2", cpu="2"))
        await load.it_power_watts("pool")
    assert [r.getMessage() for r in caplog.records] == [
        f"cluster load: 2 pods drawing power, 2 LeafSites read, {2 * IDLE_W + PER_CPU_W:.0f} W "
        "in all",
        f"cluster load: 3 pods drawing power, 2 LeafSites read, "
        f"{2 * IDLE_W + 3 * PER_CPU_W:.0f} W in all",
    ]


def scenario_sites() -> Any:
    return tiny_scenario().sites  # pool and flats, idle 300 W in the scenario


@pytest.mark.asyncio
async def test_readings_are_cached_for_the_refresh_interval() -> None:
    api = cluster(running_pod("a", "p1", cpu="1"))
    clock = FakeClock()
    load = cluster_load.ClusterLoad(api, scenario_sites(), refresh_s=5.0, clock=clock)
    assert await load.it_power_watts("pool") == IDLE_W + PER_CPU_W
    store(api, running_pod("b", "p2", cpu="2"))
    clock.advance(4.0)
    assert await load.it_power_watts("pool") == IDLE_W + PER_CPU_W
    assert await load.it_power_watts("flats") == IDLE_W
    assert [c.path for c in api.calls].count(PODS) == 1
    clock.advance(1.0)
    assert await load.it_power_watts("pool") == IDLE_W + 3 * PER_CPU_W
    assert [c.path for c in api.calls].count(PODS) == 2


@pytest.mark.asyncio
async def test_an_api_error_keeps_the_last_load_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = cluster(running_pod("a", "p1", cpu="4"))
    clock = FakeClock()
    load = cluster_load.ClusterLoad(api, scenario_sites(), refresh_s=5.0, clock=clock)
    assert await load.it_power_watts("pool") == IDLE_W + 4 * PER_CPU_W
    outage = client.KubeAPIError("GET /api/v1/pods: HTTP 503: etcd is sad", 503)
    api.fail("list", PODS, outage, outage)
    api.objects.clear()  # what the cluster holds is unknown while it fails
    with caplog.at_level(logging.INFO, logger="heatshift.kube.cluster_load"):
        for _ in range(2):
            clock.advance(5.0)
            assert await load.it_power_watts("pool") == IDLE_W + 4 * PER_CPU_W
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        # The same error twice is logged once.
        assert len(warnings) == 1 and "etcd is sad" in warnings[0].getMessage()
        clock.advance(5.0)
        store(api, leafsite("pool"), leafsite("flats"), node("p1", "pool"))
        assert await load.it_power_watts("pool") == IDLE_W
        assert "readable again" in caplog.text


@pytest.mark.asyncio
async def test_a_scenario_site_without_a_leafsite_draws_idle_power_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi()
    store(api, leafsite("pool"), node("p1", "pool"), running_pod("a", "p1", cpu="1"))
    load = cluster_load.ClusterLoad(api, scenario_sites(), refresh_s=0.0)
    with caplog.at_level(logging.WARNING, logger="heatshift.kube.cluster_load"):
        for _ in range(3):
            assert await load.it_power_watts("flats") == 300.0  # the scenario's idle power
            assert await load.it_power_watts("pool") == IDLE_W + PER_CPU_W
    assert [r.getMessage() for r in caplog.records] == [
        "cluster load: scenario site 'flats' has no LeafSite; it draws idle power"
    ]


@pytest.mark.asyncio
async def test_the_server_heats_the_tank_of_the_site_running_pods_faster() -> None:
    api = cluster(
        job("train", suspend=False, annotations={"heatshift.dev/power-watts": "12000"}),
        running_pod("train-x", "p1", job_name="train"),
    )
    scenario = tiny_scenario({"pool": [0.0] * 4, "flats": [0.0] * 4})  # no demand anywhere
    clock = FakeClock()
    load = cluster_load.ClusterLoad(api, scenario.sites)
    sim = metering_server.MeterSimulation(scenario, clock=clock, load=load)
    async with (
        metering_server.MeteringServer(sim, port=0, tick_s=None) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10.0) as http,
    ):

        async def tank_kwh(site: str) -> float:
            response = await http.get(f"/v1/sites/{site}/reading")
            assert response.status_code == 200
            return float(response.json()["tank"]["energyKWh"])

        before = {s: await tank_kwh(s) for s in ("pool", "flats")}
        clock.advance(1800.0)
        after = {s: await tank_kwh(s) for s in ("pool", "flats")}
        metrics = (await http.get("/metrics")).text
    pool_site, flats_site = scenario.sites
    rise = {s: after[s] - before[s] for s in before}
    # Half an hour, no demand, no losses: every recovered kWh stays in the tank.
    assert rise["pool"] == pytest.approx(thermal.recovered_heat_kw(pool_site, 12_200.0) * 0.5)
    assert rise["flats"] == pytest.approx(thermal.recovered_heat_kw(flats_site, IDLE_W) * 0.5)
    assert rise["pool"] > 10 * rise["flats"] > 0
    assert 'heatshift_meter_it_power_watts{site="pool"} 12200.0' in metrics


def test_metering_sim_refuses_a_kubeconfig_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    metering_server.add_arguments(parser)
    assert parser.parse_args([]).kubeconfig is None
    # The CA file the kubeconfig names does not exist.
    config = tmp_path / "config"
    config.write_text(
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1', "
        "certificate-authority: missing-ca.crt}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    args = parser.parse_args(["--kubeconfig", str(config), "--port", "0"])
    assert metering_server.run_from_args(args) == 2
    err = capsys.readouterr().err
    assert err == (
        "heatshift metering-sim: cannot log in: kubeconfig user 'u' (context 'c'): "
        f"{tmp_path / 'missing-ca.crt'} does not exist\n"
    )
