"""The operator image (operator/Dockerfile, built here by e2e/image.py) run as the chart runs
it: its non-root user, a read-only root filesystem, no capabilities, the chart's memory limit.
It takes over from the local operator process, holds new work through the webhook and
releases it, then hands back. Needs a Docker engine (CI starts one); without one it skips."""

from __future__ import annotations

import json
import subprocess
import sys

import harness
import image
import pytest
from test_scenarios import NS, create, job, wait_released


def _inspect(name: str) -> harness.Obj:
    out = subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=True)
    found: list[harness.Obj] = json.loads(out.stdout)
    return found[0]


def test_the_operator_image_runs_as_the_chart_runs_it(heatshift: harness.Heatshift) -> None:
    if heatshift.cluster.in_cluster_operator:
        pytest.skip("in a cluster every scenario runs the image already")
    why_not = image.can_build()
    if why_not is not None:
        pytest.skip(f"{why_not} (.ci/run installs and starts what it needs)")
    built = image.build()
    found = _inspect(built)
    assert found["Config"]["User"] == "10001:10001"
    assert found["Config"]["Entrypoint"] == ["heatshift"]
    print(f"\noperator image {built}: {found['Size'] / 2**20:.0f} MiB", file=sys.stderr)

    try:
        container = heatshift.replace_primary(image=built)
        # The webhook the API server calls is the container's now.
        created = create(heatshift, job("image", annotations={"heatshift.dev/max-delay": "0s"}))
        assert created["spec"]["suspend"] is True, "the image's webhook did not hold the Job"
        name = created["metadata"]["name"]
        (released,) = wait_released(heatshift, [name], harness.PLANNING_TIMEOUT_S).values()
        site = released["metadata"]["annotations"]["heatshift.dev/site"]
        logs = container.log.read_text(errors="replace")
        assert "heatshift started:" in logs
        assert "cycle policy=e2e-batch" in logs, logs[-2000:]
        events = " ".join(e.get("message", "") for e in heatshift.kube.events(NS, name))
        assert f"LeafSite {site}" in events
        container.check_alive()  # nothing in it needed a writable root or a capability
    finally:
        # The local process as primary again for the other scenarios, whatever failed above.
        if not heatshift.operators:
            heatshift.start_operator()
        elif isinstance(heatshift.operators[0], harness.ContainerProcess):
            heatshift.replace_primary()
