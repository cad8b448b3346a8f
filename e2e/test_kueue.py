"""heatshift as a Kueue admission check, against a real Kueue (and JobSet) built from their Go
modules and run beside the local control plane (kueue_stack.py).

One ClusterQueue (``heat``) names heatshift's AdmissionCheck in its admissionChecksStrategy;
another (``plain``) has no checks, to show Kueue working on while heatshift is away. The e2e
HeatPolicy selects the Jobs here as it does plain ones (namespace label, ``workload-type``).
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
from collections.abc import Iterator
from typing import Any

import harness
import kueue_stack
import pytest

Obj = dict[str, Any]
NS = "kueue-batch"
CHECK = "heatshift"
QUEUE = "heat-queue"
PLAIN_QUEUE = "plain-queue"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PLAIN_NS = "heat-batch"
"""The plain scenarios' namespace (test_scenarios.NS)."""
_counter = itertools.count()


def queues() -> str:
    flavor = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": "default-flavor"},
    }

    def cluster_queue(name: str, checks: list[str]) -> Obj:
        spec: Obj = {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [
                        {
                            "name": "default-flavor",
                            "resources": [
                                {"name": "cpu", "nominalQuota": 64},
                                {"name": "memory", "nominalQuota": "256Gi"},
                            ],
                        }
                    ],
                }
            ],
        }
        if checks:
            spec["admissionChecksStrategy"] = {"admissionChecks": [{"name": c} for c in checks]}
        return {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": name},
            "spec": spec,
        }

    def local_queue(name: str, target: str) -> Obj:
        return {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"clusterQueue": target},
        }

    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "labels": {"heatshift.dev/managed": "true"}},
    }
    return harness.manifests(
        namespace,
        flavor,
        cluster_queue("heat", [CHECK]),
        cluster_queue("plain", []),
        local_queue(QUEUE, "heat"),
        local_queue(PLAIN_QUEUE, "plain"),
    )


@pytest.fixture(scope="module")
def kueue(heatshift: harness.Heatshift) -> Iterator[harness.Heatshift]:
    """Kueue and JobSet running, the chart upgraded with ``kueue.enabled`` (RBAC, the
    AdmissionCheck) and the operator restarted with ``--kueue``; all undone afterwards."""
    cluster = heatshift.cluster
    if cluster.in_cluster_operator or not isinstance(cluster, harness.LocalControlPlane):
        pytest.skip(
            "the Kueue scenarios restart the local operator with --kueue; with the chart's pods, "
            "test_pods.py installs Kueue from its chart instead"
        )
    stack = kueue_stack.KueueStack(cluster)
    # The plain scenarios' Jobs run ten minutes on the sites; the check counts them (as it
    # should), so clear them for the placements these scenarios expect.
    # Foreground: until their pods are gone too, which waits for the Job controller to drop
    # the pods' tracking finalizers; after the API server restart of test_view.py it backs
    # off, and once took more than a minute (CI on a fresh clone).
    heatshift.kube.run(
        "delete", "jobs", "--all", "-n", PLAIN_NS, "--cascade=foreground", "--wait=true",
        "--timeout=4m", timeout_s=300,
    )  # fmt: skip
    try:
        stack.start()
        enable_in_chart(heatshift)
        heatshift.kube.apply(queues())
        restart_operator(heatshift, ["--kueue"])
        yield heatshift
    finally:
        # Leave the cluster as the other scenarios expect it: no Kueue work on the sites, no
        # webhook of a stopped Kueue or JobSet in the way.
        heatshift.kube.run("delete", "namespace", NS, "--wait=false", check=False)
        stack.stop()
        restart_operator(heatshift, [])


def enable_in_chart(hs: harness.Heatshift) -> None:
    """``helm upgrade`` of heatshift's chart as the README's "With Kueue" says: the Kueue RBAC,
    ``--kueue`` for in-cluster replicas, and the AdmissionCheck :data:`CHECK`."""
    hs.cluster.helm(
        "upgrade", harness.RELEASE, str(harness.CHART), "--namespace", harness.NAMESPACE,
        "--reuse-values", "--set", "kueue.enabled=true",
        "--set", "kueue.admissionCheck.create=true",
        "--set", f"kueue.admissionCheck.name={CHECK}", "--wait", "--timeout", "3m",
    )  # fmt: skip


def restart_operator(hs: harness.Heatshift, args: list[str]) -> None:
    """Stop every replica cleanly (each leaves the peering at once, so none outranks the new
    one) and start one primary with ``args``."""
    while hs.operators:
        hs.operators.pop().stop()
    hs.operator_args = args
    hs.operators.append(hs.start_operator())


# --- builders ------------------------------------------------------------------------------------


def pod_template(cpu: str, runtime: str) -> Obj:
    return {
        "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": runtime}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "work",
                    "image": "registry.invalid/heatshift-e2e/work:1",
                    "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}},
                }
            ],
            "tolerations": [harness.VIRTUAL_NODE_TOLERATION],
        },
    }


def kueue_job(
    prefix: str,
    *,
    queue: str = QUEUE,
    annotations: dict[str, str] | None = None,
    runtime: str = "3m",
    cpu: str = "1",
    pods: int = 1,
) -> Obj:
    """A Job for Kueue (suspended, queue-name label) that the e2e HeatPolicy selects."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{prefix}-{next(_counter)}",
            "namespace": NS,
            "labels": {"workload-type": "batch", QUEUE_LABEL: queue},
            "annotations": {
                "heatshift.dev/power-watts": "3000",
                "heatshift.dev/expected-duration": runtime,
                **(annotations or {}),
            },
        },
        "spec": {
            "suspend": True,
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,
            "template": pod_template(cpu, runtime),
        },
    }


def jobset(prefix: str) -> Obj:
    """A JobSet of a driver and two workers, queued as one Workload."""

    def replicated(name: str, pods: int) -> Obj:
        return {
            "name": name,
            "replicas": 1,
            "template": {
                "spec": {
                    "parallelism": pods,
                    "completions": pods,
                    "backoffLimit": 0,
                    "template": pod_template("1", "3m"),
                }
            },
        }

    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {
            "name": f"{prefix}-{next(_counter)}",
            "namespace": NS,
            "labels": {"workload-type": "batch", QUEUE_LABEL: QUEUE},
            "annotations": {
                "heatshift.dev/power-watts": "6000",
                "heatshift.dev/expected-duration": "3m",
            },
        },
        "spec": {
            "suspend": True,
            "replicatedJobs": [replicated("driver", 1), replicated("workers", 2)],
        },
    }


def create(hs: harness.Heatshift, obj: Obj) -> Obj:
    created: Obj = json.loads(hs.kube.run("create", "-o", "json", "-f", "-", stdin=json.dumps(obj)))
    return created


# --- reading what Kueue did ----------------------------------------------------------------------


def workload_of(hs: harness.Heatshift, owner: str) -> Obj | None:
    for w in hs.kube.items("workloads.kueue.x-k8s.io", NS):
        if any(r.get("name") == owner for r in w["metadata"].get("ownerReferences") or []):
            return w
    return None


def check_of(w: Obj) -> Obj | None:
    for c in w.get("status", {}).get("admissionChecks") or []:
        if c.get("name") == CHECK:
            found: Obj = c
            return found
    return None


def is_admitted(w: Obj | None) -> bool:
    return w is not None and harness.condition_true(w, "Admitted")


def wait_admitted(hs: harness.Heatshift, owners: list[str], timeout_s: float) -> dict[str, Obj]:
    def probe() -> dict[str, Obj] | None:
        found = {o: workload_of(hs, o) for o in owners}
        if all(is_admitted(w) for w in found.values()):
            return {o: w for o, w in found.items() if w is not None}
        return None

    return harness.wait_for(f"{len(owners)} Workloads admitted", probe, timeout_s, interval_s=2)


def admitted_site(w: Obj) -> str | None:
    """The site heatshift's Ready put on every pod set (None: admitted without one)."""
    check = check_of(w)
    assert check is not None and check["state"] == "Ready", check
    updates = check.get("podSetUpdates") or []
    sites = {(u.get("nodeSelector") or {}).get(harness.SITE_LABEL) for u in updates}
    pod_sets = {p["name"] for p in w["spec"]["podSets"]}
    if not updates:
        return None
    assert {u["name"] for u in updates} == pod_sets, "not every pod set was placed"
    assert len(sites) == 1, f"pod sets split over sites: {sites}"
    site = sites.pop()
    return None if site is None else str(site)


def node_sites(hs: harness.Heatshift) -> dict[str, str]:
    return {
        n["metadata"]["name"]: n["metadata"]["labels"].get(harness.SITE_LABEL)
        for n in hs.kube.items("nodes")
    }


def wait_pods_on(hs: harness.Heatshift, selector: str, count: int, site: str) -> None:
    nodes = node_sites(hs)

    def placed() -> bool:
        pods = [p for p in hs.kube.items("pods", NS, selector) if p["spec"].get("nodeName")]
        if len(pods) < count:
            return False
        for p in pods:
            assert nodes[p["spec"]["nodeName"]] == site, p["metadata"]["name"]
        return True

    harness.wait_for(f"{count} pods ({selector}) on {site}", placed, harness.ADMISSION_TIMEOUT_S)


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def admitted_at(w: Obj) -> datetime.datetime:
    return parse_time((harness.condition(w, "Admitted") or {})["lastTransitionTime"])


def with_fields(hs: harness.Heatshift, kind: str, name: str | None, namespace: str) -> Obj:
    """The object (or list) with its managedFields, which kubectl leaves out by default."""
    args = ["get", kind, *([name] if name else []), "-n", namespace]
    found: Obj = json.loads(hs.kube.run(*args, "--show-managed-fields", "-o", "json"))
    return found


# --- the scenarios -------------------------------------------------------------------------------


def test_the_check_is_active_and_its_cluster_queue_ready(kueue: harness.Heatshift) -> None:
    def active() -> bool:
        check = kueue.kube.get("admissioncheck.kueue.x-k8s.io", CHECK)
        return harness.condition_true(check, "Active")

    harness.wait_for("AdmissionCheck Active", active, harness.ADMISSION_TIMEOUT_S)
    cq = kueue.kube.get("clusterqueue.kueue.x-k8s.io", "heat")
    harness.wait_for(
        "ClusterQueue heat Active",
        lambda: (
            (
                harness.condition(kueue.kube.get("clusterqueue.kueue.x-k8s.io", "heat"), "Active")
                or {}
            ).get("status")
            == "True"
        ),
        harness.ADMISSION_TIMEOUT_S,
    )
    assert cq["spec"]["admissionChecksStrategy"]["admissionChecks"][0]["name"] == CHECK


def test_the_example_queues_are_accepted_by_kueue(kueue: harness.Heatshift) -> None:
    kueue.kube.run("create", "namespace", "ml-research", check=False)
    kueue.kube.apply(harness.ROOT / "policies" / "kueue.yaml")
    kueue.kube.apply(harness.ROOT / "policies" / "kueue")

    def active() -> bool:
        cq = kueue.kube.get("clusterqueue.kueue.x-k8s.io", "training")
        return harness.condition_true(cq, "Active")

    harness.wait_for("the example ClusterQueue Active", active, harness.ADMISSION_TIMEOUT_S)


def test_jobs_are_admitted_to_the_site_that_wants_heat(kueue: harness.Heatshift) -> None:
    names = [create(kueue, kueue_job("heat"))["metadata"]["name"] for _ in range(6)]
    found = wait_admitted(kueue, names, harness.PLANNING_TIMEOUT_S)
    per_site = collections.Counter(admitted_site(w) for w in found.values())
    assert per_site["pool"] > per_site["greenhouse"] and per_site["pool"] > per_site["office"]
    for name, w in found.items():
        site = admitted_site(w)
        assert site is not None
        # Kueue, not heatshift, unsuspends the Job and puts the site's nodeSelector on it.
        job = kueue.kube.get("job", name, NS)
        assert job["spec"]["suspend"] is False
        assert job["spec"]["template"]["spec"]["nodeSelector"][harness.SITE_LABEL] == site
        wait_pods_on(kueue, f"job-name={name}", 1, site)
        messages = " ".join(e.get("message", "") for e in kueue.kube.events(NS, name))
        assert f"LeafSite {site}" in messages, f"no Event on {name} says it went to {site}"


def test_work_that_cannot_start_yet_is_retried_then_admitted_with_its_site(
    kueue: harness.Heatshift,
) -> None:
    """The office is full with a blocker: a Job that may only run there waits in Retry (off
    the ClusterQueue's quota) and is admitted to the office once the blocker is done."""
    office = {"heatshift.dev/sites": "office", "heatshift.dev/max-delay": "10m"}
    blocker = create(
        kueue, kueue_job("blocker", annotations=office, runtime="90s", cpu="12", pods=2)
    )["metadata"]["name"]
    wait_admitted(kueue, [blocker], harness.PLANNING_TIMEOUT_S)
    waiter = create(kueue, kueue_job("waiter", annotations=office, cpu="10"))["metadata"]["name"]

    def retried() -> Obj | None:
        w = workload_of(kueue, waiter)
        check = check_of(w) if w else None
        # Admitted with no Retry: say so now, with the check's words, rather than time out.
        assert not is_admitted(w) or (check or {}).get("retryCount"), check
        retried_once = check and (check.get("state") == "Retry" or check.get("retryCount"))
        return w if retried_once else None

    harness.wait_for("the waiter's check in Retry", retried, harness.PLANNING_TIMEOUT_S)
    (w,) = wait_admitted(kueue, [waiter], 2 * harness.PLANNING_TIMEOUT_S).values()
    assert admitted_site(w) == "office"
    blocker_done = harness.condition(
        kueue.kube.get("job", blocker, NS), "Complete"
    ) or harness.condition(kueue.kube.get("job", blocker, NS), "SuccessCriteriaMet")
    assert blocker_done, "admitted while the office was still full"
    wait_pods_on(kueue, f"job-name={waiter}", 1, "office")


def test_an_impossible_hint_is_admitted_by_its_deadline_and_named(
    kueue: harness.Heatshift,
) -> None:
    job = kueue_job(
        "impossible",
        annotations={
            "heatshift.dev/max-delay": "40s",
            "heatshift.dev/sites": "atlantis",
            "heatshift.dev/expected-duration": "forever",
        },
    )
    name = create(kueue, job)["metadata"]["name"]
    (w,) = wait_admitted(kueue, [name], 40 + harness.PLANNING_TIMEOUT_S).values()
    created = parse_time(w["metadata"]["creationTimestamp"])
    # The deadline plus one planning interval and Kueue's requeue slack.
    assert admitted_at(w) - created <= datetime.timedelta(seconds=40 + 10 + 30)
    assert admitted_site(w) is None  # no LeafSite is called atlantis: the cluster places it
    check = check_of(w)
    assert check and "heatshift.dev/expected-duration" in check["message"]
    warnings = [e for e in kueue.kube.events(NS, name) if e.get("reason") == "InvalidHint"]
    assert any("heatshift.dev/expected-duration" in e["message"] for e in warnings)


def test_metering_down_every_workload_is_admitted_by_its_deadline(
    kueue: harness.Heatshift,
) -> None:
    kueue.stop_metering()
    try:
        harness.wait_for(
            "LeafSite pool MeteringFresh=False",
            lambda: (
                (harness.condition(kueue.kube.get("leafsite", "pool"), "MeteringFresh") or {}).get(
                    "status"
                )
                == "False"
            ),
            harness.PLANNING_TIMEOUT_S,
        )
        urgent = {"heatshift.dev/max-delay": "45s"}
        names = [
            create(kueue, kueue_job("dark", annotations=urgent))["metadata"]["name"]
            for _ in range(3)
        ]
        found = wait_admitted(kueue, names, 45 + harness.PLANNING_TIMEOUT_S)
        for w in found.values():
            created = parse_time(w["metadata"]["creationTimestamp"])
            assert admitted_at(w) - created <= datetime.timedelta(seconds=45 + 10 + 30)
            assert admitted_site(w) in harness.SITES
    finally:
        kueue.start_metering()


def test_a_jobset_is_placed_whole_on_one_site(kueue: harness.Heatshift) -> None:
    name = create(kueue, jobset("set"))["metadata"]["name"]
    (w,) = wait_admitted(kueue, [name], harness.PLANNING_TIMEOUT_S).values()
    assert [p["name"] for p in w["spec"]["podSets"]] == ["driver", "workers"]
    site = admitted_site(w)
    assert site is not None
    wait_pods_on(kueue, f"jobset.sigs.k8s.io/jobset-name={name}", 3, site)


def test_heatshift_stopped_only_its_check_waits(kueue: harness.Heatshift) -> None:
    primary = kueue.operators.pop(0)
    primary.stop()
    try:
        plain = create(kueue, kueue_job("plain", queue=PLAIN_QUEUE))["metadata"]["name"]
        held = create(kueue, kueue_job("waits"))["metadata"]["name"]
        wait_admitted(kueue, [plain], harness.ADMISSION_TIMEOUT_S)

        def reserved() -> Obj | None:
            w = workload_of(kueue, held)
            ok = w and harness.condition_true(w, "QuotaReserved")
            return w if ok else None

        w = harness.wait_for(
            "quota reserved for the waiting Job", reserved, harness.ADMISSION_TIMEOUT_S
        )
        check = check_of(w)
        assert check and check["state"] == "Pending"
        assert not is_admitted(w)
        assert kueue.kube.get("job", held, NS)["spec"]["suspend"] is True
    finally:
        kueue.operators.insert(0, kueue.start_operator())
    wait_admitted(kueue, [held], harness.PLANNING_TIMEOUT_S)


def test_no_kueue_managed_job_is_ever_written_by_heatshift(kueue: harness.Heatshift) -> None:
    # The control: a plain Job heatshift releases carries its field manager.
    plain = {
        **kueue_job("control"),
        "metadata": {
            "name": f"control-{next(_counter)}",
            "namespace": "heat-batch",
            "labels": {"workload-type": "batch"},
            "annotations": {"heatshift.dev/max-delay": "0s"},
        },
    }
    plain["spec"] = {**plain["spec"], "suspend": None}
    name = create(kueue, plain)["metadata"]["name"]

    def managers(job: Obj) -> set[str]:
        return {str(m.get("manager")) for m in job["metadata"].get("managedFields") or []}

    harness.wait_for(
        "the control Job released by heatshift",
        lambda: "heatshift" in managers(with_fields(kueue, "job", name, "heat-batch")),
        harness.PLANNING_TIMEOUT_S,
    )
    jobs = with_fields(kueue, "jobs", None, NS)["items"]
    assert len(jobs) >= 10
    for job in jobs:
        assert "heatshift" not in managers(job), job["metadata"]["name"]
        annotations = job["metadata"].get("annotations") or {}
        assert "heatshift.dev/released-at" not in annotations
    # On a Workload, heatshift writes only its admission check entry in status, by server-side
    # apply as its own field manager.
    applied = 0
    for w in with_fields(kueue, "workloads.kueue.x-k8s.io", None, NS)["items"]:
        fields = w["metadata"].get("managedFields") or []
        assert "heatshift" not in {m.get("manager") for m in fields}, w["metadata"]["name"]
        for m in fields:
            if m.get("manager") == "heatshift-admission-check":
                assert (m.get("operation"), m.get("subresource")) == ("Apply", "status")
                applied += 1
    assert applied >= 10
