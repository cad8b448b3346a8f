"""The real operator (Kopf, every heatshift handler, the webhook server) against an emulated
Kubernetes API (``kmock``) and the reference metering server, all in one event loop.

Proves, end to end over HTTP: a held Job is released onto the site whose building wants heat;
a Job whose start deadline expires is released although every metering source is down; and a
Job sent to the admission webhook comes back suspended. No cluster needed; each test takes a
few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import pytest_asyncio
from kmock._internal import parsing as kmock_parsing

import kube_fixtures as kf
import metering_fixtures
from heatshift import cli, handlers
from heatshift import metrics as metrics_mod
from heatshift.metering import server as metering_server

WAIT_S = 20.0
"""Longest a test waits for the operator to act; a pass takes a few seconds."""

RESOURCES = {
    "heatshift.dev/v1alpha1/leafsites": ("LeafSite", False),
    "heatshift.dev/v1alpha1/heatpolicies": ("HeatPolicy", False),
    "batch/v1/jobs": ("Job", True),
    "v1/pods": ("Pod", True),
    "v1/nodes": ("Node", False),
    "v1/namespaces": ("Namespace", False),
    "v1/events": ("Event", True),
    "v1/secrets": ("Secret", True),
}


VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


class Cluster:
    """The emulated API server, with helpers to create and read objects over HTTP."""

    def __init__(self, emulator: kmock.KubernetesEmulator, url: str) -> None:
        self.emulator = emulator
        self.url = url

    async def create(self, obj: dict[str, Any]) -> None:
        group_version = obj["apiVersion"]
        plural = next(k for k, v in RESOURCES.items() if v[0] == obj["kind"]).rsplit("/", 1)[1]
        root = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        ns = obj["metadata"].get("namespace")
        path = f"{root}/namespaces/{ns}/{plural}" if ns else f"{root}/{plural}"
        async with aiohttp.ClientSession() as http, http.post(self.url + path, json=obj) as r:
            assert r.status < 300, await r.text()

    async def get(self, path: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def wait_for(
        self, path: str, check: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            obj = await self.get(path)
            if check(obj):
                return obj
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"timed out waiting for {what}; last seen: {json.dumps(obj)[:2000]}")
            await asyncio.sleep(0.2)

    async def events(self, namespace: str) -> list[dict[str, Any]]:
        body = await self.get(f"/api/v1/namespaces/{namespace}/events")
        items: list[dict[str, Any]] = body["items"]
        return items


def _parse_path_with_namespaces(original: Callable[[str], Any]) -> Callable[[str], Any]:
    """kmock 0.8 reads ``/api/v1/namespaces[/NAME]`` as a namespace prefix without a resource;
    serve Namespace objects like any other cluster-scoped resource."""

    def parse(path: str) -> Any:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            name = parts[3] if len(parts) == 4 else None
            return kmock_parsing.ParsedPath("", "v1", "namespaces", None, name, None)
        return original(path)

    return parse


@pytest_asyncio.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    monkeypatch.setattr(
        kmock_parsing, "parse_path", _parse_path_with_namespaces(kmock_parsing.parse_path)
    )
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        for key, (kind, namespaced) in RESOURCES.items():
            emulator.resources[key] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs=VERBS, subresources={"status"}
            )
        url = str(server.url).rstrip("/")
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": url}}],
                    "users": [{"name": "tester", "user": {"token": "test-token"}}],
                    "contexts": [
                        {"name": "test", "context": {"cluster": "emulator", "user": "tester"}}
                    ],
                    "current-context": "test",
                }
            )
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        c = Cluster(emulator, url)
        await c.create(kf.namespace("batch", {"team": "ml"}))
        await c.create(kf.namespace("web"))
        await c.create(kf.node("pool-1", "pool"))
        await c.create(kf.node("flats-1", "flats"))
        yield c


@pytest_asyncio.fixture
async def metering() -> AsyncIterator[metering_server.MeteringServer]:
    """pool: no demand, its tank only fills; flats: wants 20 kW all the time."""
    sim = metering_server.MeterSimulation(
        metering_fixtures.tiny_scenario({"pool": [0.0] * 4, "flats": [20.0] * 4})
    )
    async with metering_server.MeteringServer(sim, host="127.0.0.1", port=0, tick_s=None) as srv:
        yield srv


class Operator:
    def __init__(self, webhook_port: int, metrics: metrics_mod.Metrics) -> None:
        self.webhook_port = webhook_port
        self.metrics = metrics


@pytest_asyncio.fixture
async def operator(cluster: Cluster) -> AsyncIterator[Operator]:
    """The operator in its own thread and event loop, as in production: Kopf owns its loop
    (on stopping it cancels every task it did not start)."""
    port = kf.free_port()
    options = handlers.RunOptions(
        standalone=True,
        metrics_port=None,
        health_port=None,
        webhook_addr="127.0.0.1",
        webhook_port=port,
        quick_replan_s=0.2,
        metering_timeout_s=5.0,
    )
    metrics = metrics_mod.Metrics()
    stop, ready = threading.Event(), threading.Event()

    def main() -> None:
        asyncio.run(handlers.operate(options, metrics=metrics, stop_flag=stop, ready_flag=ready))

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, WAIT_S), "the operator did not start"
    yield Operator(port, metrics)
    stop.set()
    await asyncio.to_thread(thread.join, WAIT_S)
    assert not thread.is_alive(), "the operator did not stop"


def _released(obj: dict[str, Any]) -> bool:
    return obj["spec"].get("suspend") is False


JOB_PATH = "/apis/batch/v1/namespaces/batch/jobs/{}"


@pytest.mark.asyncio
async def test_held_job_is_released_onto_the_site_that_wants_heat(
    cluster: Cluster, metering: metering_server.MeteringServer, operator: Operator
) -> None:
    await cluster.create(kf.leafsite("pool", url=metering.url))
    await cluster.create(kf.leafsite("flats", url=metering.url))
    # Re-planning hourly: whatever the plan starts within the hour is released now.
    await cluster.create(kf.heatpolicy("batch", namespace_labels={"team": "ml"}, replan="1h"))
    await cluster.create(
        kf.job("render", annotations={"heatshift.dev/power-watts": "3000"}, created=_now_text())
    )

    job = await cluster.wait_for(JOB_PATH.format("render"), _released, "the Job's release")

    annotations = job["metadata"]["annotations"]
    assert annotations["heatshift.dev/site"] == "flats"
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {kf.SITE_LABEL: "flats"}
    assert "flats" in annotations["heatshift.dev/decision"]
    assert annotations["heatshift.dev/released-at"].endswith("Z")
    events = [e for e in await cluster.events("batch") if e["reason"] == "Released"]
    assert events and "LeafSite flats" in events[0]["message"]
    site = await cluster.wait_for(
        "/apis/heatshift.dev/v1alpha1/leafsites/flats",
        lambda o: (o.get("status") or {}).get("demandKW") == 20.0,
        "the LeafSite's status",
    )
    assert site["status"]["heatAware"] is True
    policy = await cluster.wait_for(
        "/apis/heatshift.dev/v1alpha1/heatpolicies/batch",
        lambda o: (o.get("status") or {}).get("released") == 1,
        "the HeatPolicy's status",
    )
    assert policy["status"]["solverStatus"] in ("optimal", "feasible")
    released = operator.metrics.jobs_released.labels(site="flats", reason="heat")
    assert released._value.get() == 1


@pytest.mark.asyncio
async def test_expiring_job_is_released_with_every_metering_source_down(
    cluster: Cluster, operator: Operator
) -> None:
    dead = f"http://127.0.0.1:{kf.free_port()}"  # nothing listens there
    await cluster.create(kf.leafsite("pool", url=dead))
    await cluster.create(kf.leafsite("flats", url=dead))
    await cluster.create(kf.heatpolicy("batch", replan="30s"))
    await cluster.create(
        kf.job(
            "nightly",
            created=_now_text(),
            annotations={"heatshift.dev/max-delay": "0s", "heatshift.dev/expected-duration": "1h"},
        )
    )

    job = await cluster.wait_for(JOB_PATH.format("nightly"), _released, "the deadline release")

    decision = job["metadata"]["annotations"]["heatshift.dev/decision"]
    assert "deadline" in decision
    assert "not counted" in decision or "heat-unaware" in decision
    site = await cluster.wait_for(
        "/apis/heatshift.dev/v1alpha1/leafsites/pool",
        lambda o: any(
            c["type"] == "MeteringFresh" and c["status"] == "False"
            for c in (o.get("status") or {}).get("conditions", [])
        ),
        "the MeteringFresh=False condition",
    )
    assert site["status"]["heatAware"] is False


@pytest.mark.asyncio
async def test_webhook_holds_a_selected_job_and_lets_others_through(
    cluster: Cluster, operator: Operator
) -> None:
    await cluster.create(kf.heatpolicy("batch", namespace_labels={"team": "ml"}))
    # The webhook decides from the operator's in-memory index; wait until it has the policy.
    await cluster.wait_for(
        "/apis/heatshift.dev/v1alpha1/heatpolicies/batch",
        lambda o: bool((o.get("status") or {}).get("conditions")),
        "the policy to be seen",
    )

    held = await _review(operator.webhook_port, kf.job("fresh", suspend=None))
    ignored = await _review(operator.webhook_port, kf.job("web", "web", suspend=None))

    assert held["allowed"] is True
    patch = json.loads(base64.b64decode(held["patch"]))
    assert {"op": "add", "path": "/spec/suspend", "value": True} in patch
    assert ignored["allowed"] is True
    assert "patch" not in ignored or json.loads(base64.b64decode(ignored["patch"])) == []


@pytest.mark.asyncio
async def test_webhook_gates_a_bare_pod_when_the_policy_holds_pods(
    cluster: Cluster, operator: Operator
) -> None:
    await cluster.create(kf.heatpolicy("pods", hold_bare_pods=True))
    await cluster.wait_for(
        "/apis/heatshift.dev/v1alpha1/heatpolicies/pods",
        lambda o: bool((o.get("status") or {}).get("conditions")),
        "the policy to be seen",
    )

    gated = await _review(operator.webhook_port, kf.pod(gated=False), "hold-pods")
    owned = await _review(operator.webhook_port, kf.pod(gated=False, owned=True), "hold-pods")

    patch = json.loads(base64.b64decode(gated["patch"]))
    assert patch == [
        {
            "op": "add",
            "path": "/spec/schedulingGates",
            "value": [{"name": "heatshift.dev/placement"}],
        }
    ]
    assert "patch" not in owned or json.loads(base64.b64decode(owned["patch"])) == []


async def _review(port: int, obj: dict[str, Any], path: str = "hold-jobs") -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    plural = "jobs" if obj["kind"] == "Job" else "pods"
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "review-1",
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": plural},
            "operation": "CREATE",
            "namespace": obj["metadata"]["namespace"],
            "userInfo": {"username": "tester"},
            "object": obj,
            "dryRun": False,
        },
    }
    url = f"https://127.0.0.1:{port}/{path}"
    async with aiohttp.ClientSession() as http:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            try:
                async with http.post(url, json=review, ssl=False) as r:
                    assert r.status == 200, await r.text()
                    body = await r.json()
                    response: dict[str, Any] = body["response"]
                    assert response["uid"] == "review-1"
                    return response
            except aiohttp.ClientConnectorError:
                # The webhook server starts with the operator; give it a moment.
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)


def _now_text() -> str:
    import time

    from heatshift.kube import workloads

    return workloads.format_time(time.time())


@pytest.mark.asyncio
async def test_plan_dry_run_prints_the_plan_and_changes_nothing(
    cluster: Cluster, metering: metering_server.MeteringServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await cluster.create(kf.leafsite("pool", url=metering.url))
    await cluster.create(kf.leafsite("flats", url=metering.url))
    await cluster.create(kf.heatpolicy("batch", replan="1h"))
    await cluster.create(kf.job("render", created=_now_text()))

    # The command runs its own event loop, as from a shell.
    status = await asyncio.to_thread(cli.main, ["plan", "--dry-run", "--policy", "batch"])

    out = capsys.readouterr().out
    assert status == cli.EXIT_OK
    assert "HeatPolicy batch: 1 held" in out
    assert "site flats: cpu 16, gpu 0, demand 20.0 kW" in out
    assert "would release Job batch/render to flats" in out
    job = await cluster.get(JOB_PATH.format("render"))
    assert job["spec"]["suspend"] is True
    assert "heatshift.dev/released-at" not in job["metadata"]["annotations"]


@pytest.mark.asyncio
async def test_an_unusable_leafsite_gets_a_condition_saying_why(
    cluster: Cluster, operator: Operator
) -> None:
    broken = kf.leafsite("broken")
    broken["spec"]["metering"] = {}  # the API server's CEL rule would refuse this; kmock has none

    await cluster.create(broken)

    site = await cluster.wait_for(
        "/apis/heatshift.dev/v1alpha1/leafsites/broken",
        lambda o: bool((o.get("status") or {}).get("conditions")),
        "the Ready=False condition",
    )
    (ready,) = site["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "exactly one metering source" in ready["message"]
