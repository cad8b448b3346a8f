"""The kubelet's probes over real HTTP: alive while the loop runs, ready only once every
informer has listed (before that the webhook would wave through Jobs a policy holds)."""

from __future__ import annotations

import httpx
import pytest

import kube_fixtures as kf
from heatshift.kube import informer, probes, view


@pytest.mark.asyncio
async def test_ready_only_once_every_informer_has_listed_and_alive_throughout() -> None:
    informers = informer.Informers(kf.FakeApi(), [], view.Heard())  # type: ignore[arg-type]
    server = probes.ProbeServer(informers.not_listed)
    port = kf.free_port()
    await server.start("127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            alive = await http.get(probes.LIVENESS_PATH)
            ready = await http.get(probes.READINESS_PATH)
            assert alive.status_code == 200
            assert ready.status_code == 503
            assert ready.text == "not ready: still listing heatpolicies, jobs, namespaces, pods\n"
            for inf in informers.informers:
                if inf.kind != "jobs":
                    inf.synced.set()
            ready = await http.get(probes.READINESS_PATH)
            assert (ready.status_code, ready.text) == (503, "not ready: still listing jobs\n")
            for inf in informers.jobs:
                inf.synced.set()
            ready = await http.get(probes.READINESS_PATH)
            assert (ready.status_code, ready.text) == (200, "ready\n")
            assert (await http.get(probes.LIVENESS_PATH)).status_code == 200
    finally:
        await server.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}{probes.READINESS_PATH}")
