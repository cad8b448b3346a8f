"""The watched view against a real API server: an idle cycle lists nothing, a new Job is seen.

Counts the operator's own requests in the API server's audit log (the local control plane
audits the chart namespace's ServiceAccounts: see ``harness.AUDIT_POLICY``), so requests of the
controllers, kwok, the metering server and the tests themselves are not counted.
"""

from __future__ import annotations

import collections
import re
import time

import harness
import pytest
from test_scenarios import NS, annotation, create, job, released, wait_released

CYCLE = re.compile(r"cycle policy=e2e-batch held=(\d+) ")


def _cycles(hs: harness.Heatshift) -> int:
    return len(CYCLE.findall(hs.operator_logs()))


def _wait_cycles(hs: harness.Heatshift, more: int) -> None:
    start = _cycles(hs)
    harness.wait_for(
        f"{more} more planning cycles",
        lambda: _cycles(hs) >= start + more,
        harness.PLANNING_TIMEOUT_S,
        interval_s=1,
    )


def _requests_since(hs: harness.Heatshift, since_s: float) -> list[harness.Request]:
    cluster = hs.cluster
    assert isinstance(cluster, harness.LocalControlPlane)
    return [r for r in harness.audited(cluster.audit_log) if r.at_s >= since_s]


def test_an_idle_cycle_lists_nothing_and_a_new_job_is_seen_and_held(
    heatshift: harness.Heatshift,
) -> None:
    if not isinstance(heatshift.cluster, harness.LocalControlPlane):
        pytest.skip("counts requests in the local control plane's audit log")
    # Past start-up (Kopf lists each resource once), then three idle cycles.
    _wait_cycles(heatshift, 1)
    idle_from = time.time()
    _wait_cycles(heatshift, 3)
    idle = _requests_since(heatshift, idle_from)
    by_verb = collections.Counter(r.verb for r in idle)
    print(f"\noperator requests in 3 idle cycles, by verb: {dict(by_verb)}")
    assert [r.uri for r in idle if r.verb == "list"] == []

    # A Job created while the operator runs: held by the webhook, then seen through the watch
    # and released by the next cycle (its max-delay of 0s makes it due at once).
    new_from = time.time()
    created = create(heatshift, job("seen", annotations={"heatshift.dev/max-delay": "0s"}))
    name = created["metadata"]["name"]
    assert created["spec"]["suspend"] is True, "the webhook did not hold the new Job"

    def seen() -> harness.Obj | None:
        obj = heatshift.kube.get("job", name, NS)
        return obj if released(obj) else None

    done = harness.wait_for(f"Job {name} released", seen, harness.PLANNING_TIMEOUT_S)
    assert annotation(done, "heatshift.dev/released-at") is not None
    assert "start deadline" in str(annotation(done, "heatshift.dev/decision"))
    later = _requests_since(heatshift, new_from)
    verbs = dict(collections.Counter(r.verb for r in later))
    print(f"operator requests from creation to release: {verbs}")
    assert [r.uri for r in later if r.verb == "list"] == []
    # It was released once: one applied patch that unsuspended it (before it, at most refusals
    # of a patch made from a view that was behind the Job: 409, nothing changed).
    path = f"/apis/batch/v1/namespaces/{NS}/jobs/{name}"
    patches = [r for r in later if r.verb == "patch" and r.uri.split("?")[0] == path]
    assert [r.code for r in patches if r.code != 409] == [200], patches


def test_a_watch_broken_mid_run_loses_no_release_and_duplicates_none(
    heatshift: harness.Heatshift,
) -> None:
    """The API server is killed and restarted while held Jobs wait: every watch breaks. The
    operator's watches resume or list again; each Job, those created before the break and
    after it, is released once."""
    cluster = heatshift.cluster
    if not isinstance(cluster, harness.LocalControlPlane):
        pytest.skip("restarts the local control plane's API server process")
    soon = {"heatshift.dev/max-delay": "30s"}
    since = time.time()

    def held(prefix: str) -> str:
        created = create(heatshift, job(prefix, annotations=soon))
        assert created["spec"]["suspend"] is True, "the webhook did not hold it"
        return str(created["metadata"]["name"])

    before = [held("break") for _ in range(4)]
    cluster.restart_api_server()
    after = [held("mend") for _ in range(4)]

    wait_released(heatshift, before + after, 30 + 2 * harness.PLANNING_TIMEOUT_S)
    job_patches = harness.job_patches(cluster.audit_log, NS, since)
    patched = harness.applied_per_job(job_patches)
    # A release patches from the view; where the break left the view behind the Job, the
    # server refused it (409: the precondition on resourceVersion) and the Job was read and
    # patched again. Nothing else may have been refused, and nothing applied twice.
    assert {r.code for r in job_patches} <= {200, 409, 0}, job_patches
    # One applied patch each; a request cut off by the kill may lack its audit line.
    assert all(patched[name] <= 1 for name in before + after), patched
    assert sum(patched[name] for name in before + after) >= len(before + after) - 1, patched
