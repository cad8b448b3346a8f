"""The chart as users run it: ``helm install`` with default values (apart from the image), the
operator image running as the Deployment's two pods on a real node (containerd, kubelet,
kube-proxy: see real_node.py), beside the simulated sites.

What only pods show: both replicas Ready and one acting through Kopf peering; the admission
webhook reached through its Service with the certificate Helm generated; the pods reaching
the API server through the ``kubernetes`` Service with their ServiceAccount token; the
structured cycle lines in ``kubectl logs``; the active pod killed and the other taking over
with no Job lost or released twice; the memory the operator uses under its limit.

Runs first (see conftest.py), on a control plane of its own, torn down before the others
start; skips with the reason when this machine cannot run a real node.
"""

from __future__ import annotations

import collections
import datetime
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import harness
import kueue_stack
import pytest
import real_node
import yaml
from test_scenarios import (
    NS,
    annotation,
    create,
    job,
    parse_time,
    released,
    wait_released,
    waited_for_release,
)

import test_kueue

PEERING_LIFETIME_S = 60
"""Kopf's default peering lifetime: a peer that stops renewing its record is gone after it."""
READS = ("get", "list", "watch")
"""Verbs that write nothing, in the API server's audit log."""


@pytest.fixture(scope="module")
def pods() -> Iterator[harness.Heatshift]:
    why_not = real_node.missing()
    if why_not is not None:
        pytest.skip(f"{why_not} (.ci/run installs and builds what it needs)")
    with harness.work_directory() as work:
        print(f"\ne2e work directory of the pods' cluster: {work}", file=sys.stderr)
        cluster = real_node.PodControlPlane(work)
        deployment = harness.Heatshift(cluster)
        try:
            cluster.start()
            started = time.monotonic()
            deployment.install_chart()
            deployment.wait_rolled_out()
            print(
                f"helm install and both replicas Ready took {time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
            deployment.start_metering()
            deployment.kube.apply(
                harness.load_fixture("sites.yaml", METERING_URL=deployment.metering_url)
            )
            yield deployment
        finally:
            deployment.stop()
            cluster.stop()


def operator_pods(hs: harness.Heatshift) -> list[harness.Obj]:
    return [
        p
        for p in hs.kube.items("pods", harness.NAMESPACE, selector=harness.OPERATOR_SELECTOR)
        if not p["metadata"].get("deletionTimestamp")
    ]


def pod_log(hs: harness.Heatshift, name: str) -> str:
    return hs.kube.run("logs", "-n", harness.NAMESPACE, name, "--tail=-1", check=False)


def log_tails(hs: harness.Heatshift, chars: int) -> dict[str, str]:
    """The last ``chars`` of each running replica's log, by pod name: what a failure shows."""
    return {
        p["metadata"]["name"]: pod_log(hs, p["metadata"]["name"])[-chars:]
        for p in operator_pods(hs)
    }


def active_pod(hs: harness.Heatshift) -> str | None:
    """The replica acting, by Kopf's rule: of the live peers in the peering object, the one with
    the highest priority (the others pause). None unless every running replica is a live peer.

    Not from the logs: a replica that starts while a higher peer is alive starts paused and
    never says so."""
    running = {p["metadata"]["name"] for p in operator_pods(hs)}
    peering = hs.kube.get("clusterkopfpeering", "heatshift")
    now = datetime.datetime.now(datetime.UTC)
    alive: dict[str, int] = {}
    for peer, record in (peering.get("status") or {}).items():
        # A peer's id is <user>@<host>/<started>/<random>; in a pod the host is the pod's name.
        pod = str(peer).partition("@")[2].partition("/")[0]
        seen = parse_time(str(record["lastseen"]))
        if seen + datetime.timedelta(seconds=float(record["lifetime"])) > now:
            alive[pod] = int(record["priority"])
    if len(running) != 2 or set(alive) != running or len(set(alive.values())) != 2:
        return None
    return max(alive, key=lambda pod: alive[pod])


def wait_one_acting(hs: harness.Heatshift, timeout_s: float) -> str:
    """The acting replica's name, once there is exactly one; else fail with each one's log."""
    try:
        return harness.wait_for("one replica acting", lambda: active_pod(hs), timeout_s)
    except harness.HarnessError as err:
        raise AssertionError(f"{err}; the replicas' logs end:\n{log_tails(hs, 1500)}") from err


def ready_after_s(pod: harness.Obj) -> float:
    ready = harness.condition(pod, "Ready") or {}
    return (
        parse_time(str(ready["lastTransitionTime"]))
        - parse_time(pod["metadata"]["creationTimestamp"])
    ).total_seconds()


def test_both_replicas_run_as_the_chart_says_and_one_acts(pods: harness.Heatshift) -> None:
    replicas = operator_pods(pods)
    assert len(replicas) == 2
    for pod in replicas:
        assert harness.condition_true(pod, "Ready")
        assert pod["spec"]["nodeName"] == real_node.NODE_NAME
        (status,) = pod["status"]["containerStatuses"]
        name = pod["metadata"]["name"]
        if status["restartCount"]:
            previous = pods.kube.run(
                "logs", "-n", harness.NAMESPACE, name, "--previous", "--tail=40", check=False
            )
            raise AssertionError(f"{name} restarted; its previous run ended:\n{previous}")
        # The chart's securityContext, as the kernel applied it to the operator's process.
        cluster = pods.cluster
        assert isinstance(cluster, real_node.PodControlPlane)
        proc = cluster.process_status(cluster.container_pids(pod, "operator")[0])
        assert proc["Uid"][:2] == ["10001", "10001"]
        assert proc["CapEff"] == ["0000000000000000"]
        assert proc["NoNewPrivs"] == ["1"]
        assert proc["Seccomp"] == ["2"]  # RuntimeDefault: a filter
        print(
            f"\n{pod['metadata']['name']}: Ready {ready_after_s(pod):.0f} s after it was created",
            file=sys.stderr,
        )
    # Peering: both are live peers of distinct priorities; the higher one plans.
    acting = wait_one_acting(pods, harness.STARTUP_TIMEOUT_S)
    harness.wait_for(
        "the acting replica's first cycle",
        lambda: "cycle policy=e2e-batch held=" in pod_log(pods, acting),
        harness.PLANNING_TIMEOUT_S,
    )
    # The root filesystem is read-only for it (the chart's readOnlyRootFilesystem).
    name = replicas[0]["metadata"]["name"]
    denied = pods.kube.run(
        "exec", "-n", harness.NAMESPACE, name, "--", "python3", "-c",
        "open('/opt/heatshift/x', 'w')", check=False,
    )  # fmt: skip
    assert "Read-only file system" in denied, denied


def test_the_webhook_holds_jobs_through_its_service(pods: harness.Heatshift) -> None:
    """The API server calls the webhook at its Service (kube-proxy routes it to a pod), with
    the CA bundle Helm generated; the acting replica then releases the Job onto a site."""
    config = pods.kube.get("mutatingwebhookconfiguration", "heatshift")
    for hook in config["webhooks"]:
        assert "service" in hook["clientConfig"], hook["clientConfig"]
    created = create(pods, job("pods-held", annotations={"heatshift.dev/max-delay": "0s"}))
    assert created["spec"]["suspend"] is True, "the webhook did not hold the Job"
    name = created["metadata"]["name"]
    (done,) = wait_released(pods, [name], harness.PLANNING_TIMEOUT_S).values()
    site = annotation(done, "heatshift.dev/site")
    assert done["spec"]["template"]["spec"]["nodeSelector"][harness.SITE_LABEL] == site

    def running_on_site() -> bool:
        found = pods.kube.items("pods", NS, selector=f"job-name={name}")
        return bool(found) and str(found[0]["spec"].get("nodeName", "")).startswith(f"{site}-")

    harness.wait_for("its pod on the site", running_on_site, harness.ADMISSION_TIMEOUT_S)


def test_the_sites_read_their_meter_from_its_pod_through_its_service(
    pods: harness.Heatshift,
) -> None:
    """The metering reference server runs as a pod too, from the same image; the acting
    replica reads every LeafSite's meter at its Service's address (kube-proxy routes pod to
    pod), so every site is metered fresh."""
    (meter,) = pods.kube.items(
        "pods", harness.NAMESPACE, selector=f"app.kubernetes.io/name={harness.METERING_POD}"
    )
    assert meter["spec"]["nodeName"] == real_node.NODE_NAME
    service = pods.kube.get("service", harness.METERING_POD, harness.NAMESPACE)
    assert pods.metering_url == f"http://{service['spec']['clusterIP']}:8099"
    sites = ("pool", "greenhouse", "office")

    def unmetered() -> list[str]:
        return [
            name
            for name in sites
            if not harness.condition_true(pods.kube.get("leafsite", name), "MeteringFresh")
        ]

    try:
        harness.wait_for("every site MeteringFresh", lambda: not unmetered(), 120)
    except harness.HarnessError:
        acting = wait_one_acting(pods, 10)
        # From the acting pod: the meter's pod directly, and through its Service.
        reached = {
            url: pods.kube.run(
                "exec", "-n", harness.NAMESPACE, acting, "--", "python3", "-c",
                f"import urllib.request; print(urllib.request.urlopen('{url}/healthz', "
                "timeout=3).status)",
                check=False,
            ).strip()[-200:]
            for url in (f"http://{meter['status']['podIP']}:8099", pods.metering_url)
        }  # fmt: skip
        raise AssertionError(
            f"sites {unmetered()} not metered fresh; from the acting pod {reached}; its log "
            "ends:\n" + "\n".join(pod_log(pods, acting).splitlines()[-10:])
        ) from None


def test_kubectl_logs_show_the_cycle_lines_not_the_probes(pods: harness.Heatshift) -> None:
    acting = wait_one_acting(pods, 60)
    harness.wait_for(
        "a cycle line in kubectl logs",
        lambda: "cycle policy=e2e-batch held=" in pod_log(pods, acting),
        harness.PLANNING_TIMEOUT_S,
    )
    log = pod_log(pods, acting)
    assert "heatshift started:" in log
    # The kubelet probes /healthz every 10 s; none of that may fill the log.
    assert "GET /healthz" not in log
    assert "Activity 'planner' succeeded" not in log


def create_crash_job(hs: harness.Heatshift, prefix: str, max_delay: str) -> tuple[str, bool, float]:
    """A Job on a site: its name, whether the webhook held it at creation, how long that took."""
    asked = time.monotonic()
    created = create(hs, job(prefix, annotations={"heatshift.dev/max-delay": max_delay}))
    held = created["spec"].get("suspend") is True
    return str(created["metadata"]["name"]), held, time.monotonic() - asked


def released_or_explain(
    hs: harness.Heatshift, names: list[str], timeout_s: float
) -> dict[str, harness.Obj]:
    """:func:`wait_released`; on a timeout, fail with each unreleased Job's state and the
    replicas' logs (a CI run shows nothing else)."""
    try:
        return wait_released(hs, names, timeout_s)
    except harness.HarnessError as err:
        jobs = {j["metadata"]["name"]: j for j in hs.kube.items("jobs", NS)}
        waiting = {
            n: (jobs[n]["spec"].get("suspend"), jobs[n]["metadata"].get("annotations"))
            if n in jobs
            else "gone"
            for n in names
            if n not in jobs or not released(jobs[n])
        }
        raise AssertionError(
            f"{err}; not released: {waiting}; the replicas' logs end:\n{log_tails(hs, 3000)}"
        ) from err


def test_killing_the_active_pod_hands_over_and_loses_no_job(pods: harness.Heatshift) -> None:
    """The acting pod is force-deleted mid-work (no grace period: whether Kopf still says
    goodbye to its peers or its peering record has to expire depends on how fast the kubelet
    kills it; here the others took over 4 s or 60 s after the kill). The other replica, or
    the Deployment's replacement, takes over; every held Job is released by its start
    deadline, once, and no Job is lost.

    For a moment after the kill the webhook's Service may still route to the dying pod, whose
    webhook server has stopped (until kube-proxy drops its endpoint): a Job created then is
    admitted unchanged (failurePolicy Ignore) and runs at once, unmanaged, which is the
    chart's promise that compute never waits for heatshift (measured: 3 of 4 such Jobs in
    one run of five)."""
    cluster = pods.cluster
    assert isinstance(cluster, real_node.PodControlPlane)
    since = time.time()
    acting = wait_one_acting(pods, 60)
    before = [create_crash_job(pods, "pods-crash", "2m") for _ in range(8)]
    assert all(held for _, held, _ in before), before
    names = [name for name, _, _ in before]
    pods.kube.run(
        "delete", "pod", "-n", harness.NAMESPACE, acting, "--grace-period=0", "--force"
    )  # fmt: skip
    killed = time.monotonic()
    after = [create_crash_job(pods, "pods-after", "30s") for _ in range(4)]
    later = [name for name, held, _ in after if held]
    unheld = [name for name, held, _ in after if not held]
    print(
        "\nJobs created right after the kill (name, held, seconds to create): "
        + ", ".join(f"{n} {h} {s:.1f}" for n, h, s in after),
        file=sys.stderr,
    )
    jobs = released_or_explain(pods, names + later, 120 + PEERING_LIFETIME_S + 60)
    took_over = harness.wait_for(
        "a replica acting again", lambda: active_pod(pods), harness.STARTUP_TIMEOUT_S
    )
    print(
        f"active pod {acting} killed; {took_over} acts; all {len(jobs)} held Jobs released "
        f"{time.monotonic() - killed:.0f} s after the kill; {len(unheld)} admitted unheld",
        file=sys.stderr,
    )
    assert took_over != acting
    for name, obj in jobs.items():
        assert obj["spec"]["suspend"] is False and released(obj)
        waited = waited_for_release(obj)
        # The kill costs at most the peering's lifetime beyond the hint: that is the promise.
        allowed = 120 if name in names else 30
        assert waited <= datetime.timedelta(seconds=allowed + PEERING_LIFETIME_S + 15), (
            name,
            waited,
        )
    for name in unheld:
        # Admitted unchanged, never touched since: it ran at once, as without heatshift.
        obj = pods.kube.get("job", name, NS)
        assert obj["spec"].get("suspend") is not True, obj
        assert annotation(obj, "heatshift.dev/site") is None, obj
    # Once each: one applied patch per held Job in the API server's audit of the operator's
    # requests (a 409 is a patch refused because the view was behind: nothing changed), none
    # for a Job admitted unheld.
    patches = harness.job_patches(cluster.audit_log, NS, since)
    applied = harness.applied_per_job(patches)
    assert {r.code for r in patches} <= {200, 409, 0}, patches
    assert all(applied[name] == 1 for name in names + later), applied
    assert all(applied[name] == 0 for name in unheld), applied
    everyone = names + later + unheld

    def one_pod_each() -> bool:
        found = [
            p
            for p in pods.kube.items("pods", NS)
            if p["metadata"]["labels"].get("job-name") in everyone
        ]
        per_job = collections.Counter(p["metadata"]["labels"]["job-name"] for p in found)
        assert all(count == 1 for count in per_job.values()), per_job
        return len(per_job) == len(everyone)

    harness.wait_for("one pod per Job", one_pod_each, harness.ADMISSION_TIMEOUT_S)
    # The Deployment is whole again: two Ready replicas.
    pods.wait_rolled_out()


def admitted_held(hs: harness.Heatshift) -> bool:
    """Whether the webhook holds a Job created now: a server-side dry run, which admits it
    through the webhooks as a create would and stores nothing."""
    probe = job("pods-probe", annotations={"heatshift.dev/max-delay": "1m"})
    return create(hs, probe, dry_run=True)["spec"].get("suspend") is True


def test_a_rolling_restart_holds_every_job_created_during_it(pods: harness.Heatshift) -> None:
    """``kubectl rollout restart``, as every upgrade does: each replica in turn is sent
    SIGTERM. A Job created at any moment of it is held (the Service stops routing the webhook
    to a replica before that replica stops serving: the chart's preStop pause), then released
    once by its deadline. Three threads probe the webhook with dry-run creates as fast as
    kubectl goes, the main one creates a real Job a second."""
    cluster = pods.cluster
    assert isinstance(cluster, real_node.PodControlPlane)
    wait_one_acting(pods, 60)
    since = time.time()
    pods.kube.run(
        "rollout", "restart", f"deployment/{harness.RELEASE}", "-n", harness.NAMESPACE
    )  # fmt: skip
    started = time.monotonic()
    created: list[tuple[str, bool]] = []
    probes: list[bool] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            probes.append(admitted_held(pods))

    threads = [threading.Thread(target=probe, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    done_at: float | None = None
    try:
        # From the restart until 10 s after the rollout is complete.
        while done_at is None or time.monotonic() - done_at < 10:
            assert time.monotonic() - started < 300, "the rollout did not complete in 5 min"
            annotations = {"heatshift.dev/max-delay": "1m"}
            made = create(pods, job("pods-rollout", runtime="1m", annotations=annotations))
            created.append((str(made["metadata"]["name"]), made["spec"].get("suspend") is True))
            if done_at is None and pods.rolled_out():
                done_at = time.monotonic()
            time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    unheld = [name for name, held in created if not held]
    print(
        f"\nrolling restart took {done_at - started:.0f} s; {len(created)} Jobs created and "
        f"{len(probes)} dry-run admissions during it: {len(unheld)} and "
        f"{probes.count(False)} admitted unheld",
        file=sys.stderr,
    )
    assert not unheld, f"admitted unheld during the rollout: {unheld}"
    assert all(probes), f"{probes.count(False)} of {len(probes)} dry-run admissions unheld"
    names = [name for name, _ in created]
    jobs = released_or_explain(pods, names, 60 + PEERING_LIFETIME_S + 60)
    for name, obj in jobs.items():
        waited = waited_for_release(obj)
        # A graceful handover: Kopf says goodbye, so nothing waits for a record to expire.
        assert waited <= datetime.timedelta(seconds=60 + 15), (name, waited)
    applied = harness.applied_per_job(harness.job_patches(cluster.audit_log, NS, since))
    assert all(applied[name] == 1 for name in names), applied


def test_the_operator_stays_well_under_its_memory_limit(pods: harness.Heatshift) -> None:
    """Peak RSS of each replica's process, against the chart's default memory limit."""
    cluster = pods.cluster
    assert isinstance(cluster, real_node.PodControlPlane)
    values = yaml.safe_load((harness.CHART / "values.yaml").read_text())
    limit = str(values["resources"]["limits"]["memory"])
    assert limit.endswith("Gi")
    limit_bytes = int(limit[:-2]) * 2**30
    for pod in operator_pods(pods):
        status = cluster.process_status(cluster.container_pids(pod, "operator")[0])
        peak = int(status["VmHWM"][0]) * 1024
        print(f"\n{pod['metadata']['name']}: peak RSS {peak / 2**20:.0f} MiB", file=sys.stderr)
        assert peak < limit_bytes / 2, (pod["metadata"]["name"], peak)


# --- with Kueue, installed from its own chart ----------------------------------------------------


@pytest.fixture(scope="module")
def kueue(pods: harness.Heatshift) -> kueue_stack.KueueChart:
    """Kueue from its chart, then heatshift's chart upgraded as the README's "With Kueue" says
    (``kueue.enabled``, the AdmissionCheck), and test_kueue's queues. Last in this module: the
    cluster goes with it."""
    cluster = pods.cluster
    assert isinstance(cluster, real_node.PodControlPlane)
    started = time.monotonic()
    chart = kueue_stack.KueueChart(cluster, ["batch/job"]).install()
    print(f"\nKueue's chart installed and serving in {time.monotonic() - started:.0f} s",
          file=sys.stderr)  # fmt: skip
    test_kueue.enable_in_chart(pods)
    pods.wait_rolled_out()
    pods.kube.apply(test_kueue.queues())
    return chart


def queued_job(prefix: str, **kwargs: Any) -> harness.Obj:
    """A Job for the heat queue as a user submits it: not suspended (Kueue's webhook does
    that), able to run on the simulated sites."""
    obj = test_kueue.kueue_job(prefix, **kwargs)
    del obj["spec"]["suspend"]
    return obj


def test_kueue_from_its_chart_queues_and_the_heatshift_pods_place(
    pods: harness.Heatshift, kueue: kueue_stack.KueueChart
) -> None:
    cluster = pods.cluster
    assert isinstance(cluster, real_node.PodControlPlane)
    (manager,) = kueue.manager_pods()
    assert manager["spec"]["nodeName"] == real_node.NODE_NAME
    assert harness.condition_true(manager, "Ready")
    proc = cluster.process_status(cluster.container_pids(manager, "manager")[0])
    assert proc["Uid"][:2] == ["65532", "65532"]
    # heatshift's acting pod keeps the check its chart created Active.
    harness.wait_for(
        "AdmissionCheck Active",
        lambda: harness.condition_true(
            pods.kube.get("admissioncheck.kueue.x-k8s.io", test_kueue.CHECK), "Active"
        ),
        harness.ADMISSION_TIMEOUT_S,
    )
    since = time.time()
    names = []
    for _ in range(4):
        created = create(pods, queued_job("chart"))
        # Kueue's webhook, through its Service, with the CA its certificate management made.
        assert created["spec"]["suspend"] is True, "Kueue's webhook did not suspend the Job"
        names.append(created["metadata"]["name"])
    found = test_kueue.wait_admitted(pods, names, harness.PLANNING_TIMEOUT_S)
    for name, w in found.items():
        site = test_kueue.admitted_site(w)
        assert site in harness.SITES, (name, test_kueue.check_of(w))
        test_kueue.wait_pods_on(pods, f"job-name={name}", 1, site)
    requests = [r for r in harness.audited(cluster.audit_log) if r.at_s >= since]
    # The acting pod wrote each Workload's check (server-side apply on status) ...
    workloads = {w["metadata"]["name"] for w in found.values()}
    checked = {
        r.uri.split("?")[0].split("/")[-2]
        for r in requests
        if r.verb == "patch" and r.code == 200 and "/workloads/" in r.uri
    }
    assert workloads <= checked, (workloads, checked)
    # ... and never wrote a Job Kueue manages.
    jobs_path = f"/apis/batch/v1/namespaces/{test_kueue.NS}/jobs"
    writes = [r for r in requests if r.uri.startswith(jobs_path) and r.verb not in READS]
    assert not writes, writes
    # Kueue's visibility API (an APIService of its chart) answers through the aggregation layer.
    pending = pods.kube.run(
        "get", "--raw", f"/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/{test_kueue.NS}"
        f"/localqueues/{test_kueue.QUEUE}/pendingworkloads",
    )  # fmt: skip
    assert json.loads(pending)["kind"] == "PendingWorkloadsSummary"


def test_held_work_is_retried_in_rounds_until_its_site_has_room(
    pods: harness.Heatshift, kueue: kueue_stack.KueueChart
) -> None:
    """A Job that may only run at the full office is held: its check is ``Retry`` with
    ``requeueAfterSeconds``, round after round, until the blocker is done; then it is admitted
    to the office. What Kueue v0.17 does meanwhile is recorded and asserted, since the README
    tells users: the quota stays reserved through each Retry (Kueue waits out
    requeueAfterSeconds before it evicts), so held work counts against the queue's quota."""
    office = {"heatshift.dev/sites": "office", "heatshift.dev/max-delay": "10m"}
    blocker = create(
        pods, queued_job("blocker", annotations=office, runtime="90s", cpu="12", pods=2)
    )["metadata"]["name"]
    test_kueue.wait_admitted(pods, [blocker], harness.PLANNING_TIMEOUT_S)
    waiter = create(pods, queued_job("waiter", annotations=office, cpu="10"))["metadata"]["name"]
    seen: list[tuple[float, str, bool]] = []  # (s, check state, quota reserved), changes only
    started = time.monotonic()

    def admitted() -> harness.Obj | None:
        w = test_kueue.workload_of(pods, waiter)
        if w is None:
            return None
        state = (
            str((test_kueue.check_of(w) or {}).get("state")),
            harness.condition_true(w, "QuotaReserved"),
        )
        if not seen or seen[-1][1:] != state:
            seen.append((round(time.monotonic() - started, 1), *state))
        return w if test_kueue.is_admitted(w) else None

    w = harness.wait_for("the waiter admitted", admitted, 2 * harness.PLANNING_TIMEOUT_S,
                         interval_s=0.5)  # fmt: skip
    print(f"\nthe waiter's check, quota reserved: {seen}", file=sys.stderr)
    retries = [reserved for _, state, reserved in seen if state == "Retry"]
    assert len(retries) >= 2, str(seen)  # held for more than one round
    assert all(retries), str(seen)
    assert test_kueue.admitted_site(w) == "office"
    blocker_job = pods.kube.get("job", blocker, test_kueue.NS)
    assert harness.condition(blocker_job, "Complete") or harness.condition(
        blocker_job, "SuccessCriteriaMet"
    ), "admitted while the office was still full"
