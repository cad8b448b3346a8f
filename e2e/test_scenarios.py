"""The five scenarios of issue 4, against a real API server (see harness.py for which one).

Each test names the promise it checks. They share one cluster and run in file order; every
scenario submits its own Jobs (unique names) so none depends on another's leftovers.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
import subprocess
import sys
import time
from typing import Any

import harness
import pytest
import yaml

Obj = dict[str, Any]
NS = "heat-batch"
_counter = itertools.count()


# --- builders (Kueue's wrappers.go, as functions) ------------------------------------------------


def job(
    prefix: str,
    *,
    annotations: dict[str, str] | None = None,
    runtime: str = "10m",
    suspend: bool | None = None,
) -> Obj:
    """A Job the e2e HeatPolicy selects: one pod, one CPU, 3 kW, ``runtime`` long on kwok."""
    name = f"{prefix}-{next(_counter)}"
    spec: Obj = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 0,
        "template": {
            "metadata": {
                # kwok completes the pod this long after it starts running.
                "annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": runtime},
                "labels": {"workload-type": "batch"},
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "work",
                        "image": "registry.invalid/heatshift-e2e/work:1",
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                    }
                ],
                "tolerations": [harness.VIRTUAL_NODE_TOLERATION],
            },
        },
    }
    if suspend is not None:
        spec["suspend"] = suspend
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"workload-type": "batch"},
            "annotations": {
                "heatshift.dev/power-watts": "3000",
                "heatshift.dev/expected-duration": runtime,
                **(annotations or {}),
            },
        },
        "spec": spec,
    }


def create(hs: harness.Heatshift, obj: Obj, *, dry_run: bool = False) -> Obj:
    """Create ``obj``; returns it as admitted (after the webhook). ``dry_run``: a server-side
    dry run, admitted through the webhooks as a create would be, stored nowhere."""
    argv = ["create", "-o", "json", "-f", "-", *(["--dry-run=server"] if dry_run else [])]
    created: Obj = json.loads(hs.kube.run(*argv, stdin=json.dumps(obj)))
    return created


def annotation(obj: Obj, key: str) -> str | None:
    value = (obj["metadata"].get("annotations") or {}).get(key)
    return None if value is None else str(value)


def released(obj: Obj) -> bool:
    return obj["spec"].get("suspend") is False and annotation(obj, "heatshift.dev/site") is not None


def wait_released(hs: harness.Heatshift, names: list[str], timeout_s: float) -> dict[str, Obj]:
    def probe() -> dict[str, Obj] | None:
        jobs = {j["metadata"]["name"]: j for j in hs.kube.items("jobs", NS)}
        if all(n in jobs and released(jobs[n]) for n in names):
            return {n: jobs[n] for n in names}
        return None

    return harness.wait_for(f"{len(names)} Jobs released", probe, timeout_s, interval_s=2)


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def waited_for_release(job: harness.Obj) -> datetime.timedelta:
    """From the Job's creation to the release the operator stamped on it."""
    released_at = parse_time(str(annotation(job, "heatshift.dev/released-at")))
    return released_at - parse_time(job["metadata"]["creationTimestamp"])


def site_condition(hs: harness.Heatshift, site: str, kind: str) -> str | None:
    found = harness.condition(hs.kube.get("leafsite", site), kind)
    return None if found is None else str(found.get("status"))


# --- 1. install from the chart, apply the examples -----------------------------------------------


def test_chart_installs_crds_rbac_and_webhook(cluster: harness.Heatshift) -> None:
    kube = cluster.kube
    for crd in [
        "leafsites.heatshift.dev",
        "heatpolicies.heatshift.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ]:
        established = harness.condition(kube.get("crd", crd), "Established")
        assert established and established["status"] == "True", crd
    assert kube.get("clusterkopfpeering", "heatshift")["metadata"]["name"] == "heatshift"
    webhook = kube.get("mutatingwebhookconfiguration", harness.RELEASE)
    assert [h["failurePolicy"] for h in webhook["webhooks"]] == ["Ignore", "Ignore"]
    # RBAC as the operator sees it: what the chart grants, and no more.
    sa = f"system:serviceaccount:{harness.NAMESPACE}:{harness.RELEASE}"

    def can(*args: str) -> bool:
        return kube.run("auth", "can-i", *args, "--as", sa, check=False).strip() == "yes"

    assert can("patch", "jobs.batch", "-n", NS)
    assert can("patch", "leafsites.heatshift.dev", "--subresource=status")
    assert can("get", "secrets", "-n", harness.NAMESPACE)
    assert not can("get", "secrets", "-n", "default")
    assert not can("delete", "jobs.batch", "-n", NS)
    assert not can("create", "pods", "-n", NS)
    assert "What to apply next" in cluster.install_notes
    assert "kubectl label node <node> heatshift.dev/site=<site-name>" in cluster.install_notes


def test_policy_examples_are_accepted_and_ready_then_removed(
    heatshift: harness.Heatshift,
) -> None:
    """Every example of policies/ is valid for the API server and the operator alike. They are
    deleted afterwards: cpu-batch selects the scenarios' Jobs too (and sorts before e2e-batch),
    so left in place it, not the fixture's policy, would manage every later scenario."""
    examples = harness.ROOT / "policies"
    out = heatshift.kube.apply(examples)
    assert "created" in out or "configured" in out or "unchanged" in out
    try:
        listed = heatshift.kube.run("get", "heatshift")
        for name in ["riverside-pool", "sunny-acres-greenhouse", "cpu-batch"]:
            assert name in listed
        _wait_all_ready(heatshift, at_least=8)
    finally:
        heatshift.kube.run("delete", "-f", str(examples), "--wait=true", check=False)
    assert "cpu-batch" not in heatshift.kube.run("get", "heatpolicies")


def _wait_all_ready(hs: harness.Heatshift, *, at_least: int) -> None:
    def all_ready() -> bool:
        objs = hs.kube.items("leafsites") + hs.kube.items("heatpolicies")
        assert len(objs) >= at_least
        return all(harness.condition_true(o, "Ready") for o in objs)

    harness.wait_for("every LeafSite and HeatPolicy Ready", all_ready, harness.PLANNING_TIMEOUT_S)


def test_every_object_reports_ready(heatshift: harness.Heatshift) -> None:
    _wait_all_ready(heatshift, at_least=4)  # the fixture's three sites and its policy


# --- 2. held by the webhook, released to the site that wants heat --------------------------------


def test_webhook_holds_jobs_and_bare_pods(heatshift: harness.Heatshift) -> None:
    admitted = create(heatshift, job("held"))
    assert admitted["spec"]["suspend"] is True, "the webhook did not suspend the Job"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"bare-{next(_counter)}",
            "namespace": NS,
            "labels": {"workload-type": "batch"},
        },
        "spec": {
            "containers": [
                {
                    "name": "work",
                    "image": "registry.invalid/heatshift-e2e/work:1",
                    "resources": {"requests": {"cpu": "1"}},
                }
            ]
        },
    }
    admitted_pod = create(heatshift, pod)
    gates = [g["name"] for g in admitted_pod["spec"].get("schedulingGates", [])]
    assert gates == ["heatshift.dev/placement"]
    # An unselected Job (no workload-type label) is left alone.
    free = job("free")
    free["metadata"]["labels"] = {}
    free["spec"]["template"]["metadata"]["labels"] = {}
    assert create(heatshift, free)["spec"].get("suspend") in (None, False)


def test_released_onto_the_site_that_wants_heat(heatshift: harness.Heatshift) -> None:
    names = []
    # Three waves, a planning cycle or more apart: placement is decided over several cycles.
    for _wave in range(3):
        for _ in range(4):
            names.append(create(heatshift, job("heat"))["metadata"]["name"])
        time.sleep(12)
    jobs = wait_released(heatshift, names, harness.PLANNING_TIMEOUT_S)
    per_site = collections.Counter(annotation(j, "heatshift.dev/site") for j in jobs.values())
    assert per_site["pool"] > per_site["greenhouse"], per_site
    assert per_site["pool"] > per_site["office"], per_site
    for name, j in jobs.items():
        site = annotation(j, "heatshift.dev/site")
        selector = j["spec"]["template"]["spec"].get("nodeSelector") or {}
        assert selector.get(harness.SITE_LABEL) == site, name
        assert annotation(j, "heatshift.dev/decision"), name
        messages = " ".join(e.get("message", "") for e in heatshift.kube.events(NS, name))
        assert site and site in messages, f"no Event on {name} says it went to {site}"

    # The pods really run on the chosen site's nodes.
    node_site = {
        n["metadata"]["name"]: n["metadata"]["labels"].get(harness.SITE_LABEL)
        for n in heatshift.kube.items("nodes")
    }

    def placed() -> bool:
        pods = heatshift.kube.items("pods", NS)
        by_job = {p["metadata"]["labels"].get("job-name"): p for p in pods}
        for name, j in jobs.items():
            pod = by_job.get(name)
            if pod is None or not pod["spec"].get("nodeName"):
                return False
            assert node_site[pod["spec"]["nodeName"]] == annotation(j, "heatshift.dev/site"), name
        return True

    harness.wait_for("released Jobs' pods on their sites", placed, harness.ADMISSION_TIMEOUT_S)
    columns = heatshift.kube.run("get", "heatpolicy", "e2e-batch")
    assert "RELEASED" in columns and "EXPECTED-USEFUL-KWH" in columns


def test_prometheus_source_reads_the_meter_and_scrapes_the_operator(
    heatshift: harness.Heatshift,
) -> None:
    """The greenhouse reads its meter through Prometheus, which also scrapes the operator."""
    if heatshift.prometheus is None:
        pytest.skip(
            "no prometheus on the PATH (Debian package prometheus), or kind: the Prometheus "
            "metering source is tested only on the local control plane with it installed"
        )
    spec = heatshift.kube.get("leafsite", "greenhouse")["spec"]
    assert "prometheus" in spec["metering"]
    harness.wait_for(
        "greenhouse MeteringFresh=True",
        lambda: site_condition(heatshift, "greenhouse", "MeteringFresh") == "True",
        harness.PLANNING_TIMEOUT_S,
    )
    status = heatshift.kube.get("leafsite", "greenhouse")["status"]
    assert status["demandKW"] == pytest.approx(8.0, abs=0.01)
    # Its ledger counts the meter's registers, read through Prometheus as counters.
    harness.wait_for(
        "greenhouse's ledger metered through Prometheus",
        lambda: (
            heatshift.kube.get("leafsite", "greenhouse")["status"]["ledger"]["current"]["itEnergy"][
                "source"
            ]
            in ("metered", "mixed")
        ),
        harness.PLANNING_TIMEOUT_S,
    )
    released_series = harness.wait_for(
        "heatshift_jobs_released_total in Prometheus",
        lambda: heatshift.promql("sum(heatshift_jobs_released_total)"),
        harness.ADMISSION_TIMEOUT_S,
    )
    assert float(released_series[0]["value"][1]) > 0


# --- 3. metering killed mid-run ------------------------------------------------------------------


def test_metering_down_no_deadline_missed_and_conditions_say_stale(
    heatshift: harness.Heatshift,
) -> None:
    heatshift.stop_metering()
    try:
        harness.wait_for(
            "LeafSite pool MeteringFresh=False",
            lambda: site_condition(heatshift, "pool", "MeteringFresh") == "False",
            harness.PLANNING_TIMEOUT_S,
        )
        urgent = [
            create(heatshift, job("urgent", annotations={"heatshift.dev/max-delay": "45s"}))
            for _ in range(3)
        ]
        names = [j["metadata"]["name"] for j in urgent]
        jobs = wait_released(heatshift, names, 45 + harness.ADMISSION_TIMEOUT_S)
        for j in jobs.values():
            created = parse_time(j["metadata"]["creationTimestamp"])
            at = parse_time(str(annotation(j, "heatshift.dev/released-at")))
            # One replan interval (10s) of grace past the 45 s start deadline.
            assert at - created <= datetime.timedelta(seconds=45 + 10), j["metadata"]["name"]
        reason = harness.condition(heatshift.kube.get("leafsite", "pool"), "MeteringFresh")
        assert reason and reason.get("message"), "the stale condition does not say why"
    finally:
        heatshift.start_metering()
    harness.wait_for(
        "LeafSite pool MeteringFresh=True again",
        lambda: site_condition(heatshift, "pool", "MeteringFresh") == "True",
        harness.PLANNING_TIMEOUT_S,
    )
    later = [create(heatshift, job("resumed"))["metadata"]["name"] for _ in range(4)]
    jobs = wait_released(heatshift, later, harness.PLANNING_TIMEOUT_S)
    per_site = collections.Counter(annotation(j, "heatshift.dev/site") for j in jobs.values())
    assert per_site.most_common(1)[0][0] == "pool", per_site


# --- 5. bad input --------------------------------------------------------------------------------


def leafsite(name: str, **spec: Any) -> Obj:
    """A valid LeafSite, with ``spec`` fields replaced."""
    return {
        "apiVersion": "heatshift.dev/v1alpha1",
        "kind": "LeafSite",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"heatshift.dev/site": "x"},
            "power": {"idleWatts": 100, "wattsPerCPU": 5},
            "tank": {"capacityKWh": 10, "lossPerHour": 0.01},
            "offtaker": {"kind": "pool", "maxThermalKW": 10},
            "metering": {"http": {"url": "http://m.example/v1", "siteId": "x"}},
            **spec,
        },
    }


def heatpolicy(name: str, **spec: Any) -> Obj:
    """A valid HeatPolicy, with ``spec`` fields replaced."""
    return {
        "apiVersion": "heatshift.dev/v1alpha1",
        "kind": "HeatPolicy",
        "metadata": {"name": name},
        "spec": {"namespaceSelector": {}, "selector": {}, **spec},
    }


BAD_RESOURCES = [
    pytest.param(
        {
            "apiVersion": "heatshift.dev/v1alpha1",
            "kind": "HeatPolicy",
            "metadata": {"name": "bad-default-class"},
            "spec": {
                "namespaceSelector": {},
                "selector": {},
                "slaClasses": [{"name": "batch", "maxDelay": "1h"}],
                "defaultSLAClass": "missing",
            },
        },
        "defaultSLAClass must name one of slaClasses",
        id="heatpolicy-unknown-default-class",
    ),
    pytest.param(
        leafsite(
            "bad-two-sources",
            metering={
                "http": {"url": "http://m.example/v1", "siteId": "x"},
                "prometheus": {
                    "url": "http://p.example",
                    "queries": {"demandKW": "d", "tankEnergyKWh": "e"},
                },
            },
        ),
        "exactly one metering source (http or prometheus) must be set",
        id="leafsite-two-metering-sources",
    ),
    pytest.param(
        leafsite("bad-efficiency", heatRecoveryEfficiency=1.7),
        "heatRecoveryEfficiency",
        id="leafsite-efficiency-above-one",
    ),
    # Bounds (issue 13): the API server's own answers for the limits the unit tests imitate.
    pytest.param(
        heatpolicy("bad-horizon", planning={"horizon": "2000000h"}),
        "horizon must be between 5m and 168h",
        id="heatpolicy-horizon-2000000h",
    ),
    pytest.param(
        heatpolicy("bad-horizon-ns", planning={"horizon": "168h0m0.000000001s"}),
        "horizon must be between 5m and 168h",
        id="heatpolicy-horizon-one-nanosecond-too-long",
    ),
    pytest.param(
        heatpolicy("bad-solver-time", planning={"solverTimeLimit": "0.5ns"}),
        "solverTimeLimit must be longer than 0s and at most 5m",
        id="heatpolicy-solver-time-half-nanosecond",
    ),
    pytest.param(
        # Past Go's int64 nanoseconds: duration() fails, and the server names the rule.
        heatpolicy("bad-max-delay", slaClasses=[{"name": "standard", "maxDelay": "99999999h"}]),
        "maxDelay must be between 0s and 720h",
        id="heatpolicy-max-delay-99999999h",
    ),
    pytest.param(
        heatpolicy("bad-weight", objective={"usefulHeatWeight": 1e308}),
        "usefulHeatWeight",
        id="heatpolicy-weight-1e308",
    ),
    pytest.param(
        heatpolicy("bad-selector-key", selector={"matchLabels": {"bad key!": "x"}}),
        "matchLabels keys must be label keys",
        id="heatpolicy-selector-bad-key",
    ),
    pytest.param(
        leafsite("bad-node-selector-key", nodeSelector={"bad key!": "x"}),
        "nodeSelector keys must be label keys",
        id="leafsite-node-selector-bad-key",
    ),
    pytest.param(
        leafsite("bad-node-selector-value", nodeSelector={"heatshift.dev/site": "a b"}),
        "spec.nodeSelector.heatshift.dev/site",
        id="leafsite-node-selector-bad-value",
    ),
    pytest.param(
        leafsite("bad-staleness", stalenessLimit="2000000h"),
        "stalenessLimit must be between 1s and 24h",
        id="leafsite-staleness-2000000h",
    ),
    pytest.param(
        leafsite(
            "bad-timeout",
            metering={"http": {"url": "http://m.example/v1", "siteId": "x", "timeoutSeconds": 60}},
        ),
        "spec.metering.http.timeoutSeconds",
        id="leafsite-metering-timeout-60s",
    ),
    pytest.param(
        leafsite("bad-url", metering={"http": {"url": "http://?", "siteId": "x"}}),
        "spec.metering.http.url",
        id="leafsite-url-without-host",
    ),
]


@pytest.mark.parametrize(("obj", "message"), BAD_RESOURCES)
def test_invalid_resources_are_rejected_with_a_clear_message(
    cluster: harness.Heatshift, obj: Obj, message: str
) -> None:
    result = cluster.kube.try_apply(yaml.safe_dump(obj))
    assert result.returncode != 0, f"{obj['metadata']['name']} was accepted"
    assert "Invalid value" in result.stderr or "invalid" in result.stderr
    assert message in result.stderr, result.stderr


def test_malformed_hints_still_run_with_an_event_naming_them(heatshift: harness.Heatshift) -> None:
    bad = create(
        heatshift,
        job(
            "badhint",
            annotations={
                "heatshift.dev/deadline": "next tuesday",
                "heatshift.dev/max-delay": "1m",
            },
        ),
    )
    name = bad["metadata"]["name"]
    wait_released(heatshift, [name], harness.PLANNING_TIMEOUT_S)

    def named() -> bool:
        return any(
            "heatshift.dev/deadline" in e.get("message", "")
            for e in heatshift.kube.events(NS, name)
        )

    harness.wait_for("an Event naming heatshift.dev/deadline", named, harness.ADMISSION_TIMEOUT_S)


def test_a_max_delay_of_99999999h_stops_no_due_release(heatshift: harness.Heatshift) -> None:
    """Issue 13: one Job's max-delay past every bound once stopped every release of its policy,
    overdue ones included. Now the bad hint is ignored with a Warning and the rest go on time."""
    bad = create(heatshift, job("hugedelay", annotations={"heatshift.dev/max-delay": "99999999h"}))
    due = [
        create(heatshift, job("duebeside", annotations={"heatshift.dev/max-delay": "45s"}))
        for _ in range(3)
    ]
    jobs = wait_released(
        heatshift, [j["metadata"]["name"] for j in due], 45 + harness.ADMISSION_TIMEOUT_S
    )
    for j in jobs.values():
        created = parse_time(j["metadata"]["creationTimestamp"])
        at = parse_time(str(annotation(j, "heatshift.dev/released-at")))
        # One replan interval (10s) of grace past the 45 s start deadline.
        assert at - created <= datetime.timedelta(seconds=45 + 10), j["metadata"]["name"]

    name = bad["metadata"]["name"]

    def warned() -> Obj | None:
        return next(
            (
                e
                for e in heatshift.kube.events(NS, name)
                if e.get("reason") == "InvalidHint" and "heatshift.dev/max-delay" in e["message"]
            ),
            None,
        )

    event = harness.wait_for(
        "an InvalidHint Event naming heatshift.dev/max-delay", warned, harness.ADMISSION_TIMEOUT_S
    )
    assert event["type"] == "Warning"
    assert "a maximum delay must be between 0s and 720h" in event["message"], event["message"]


# --- RBAC, as the operator lived it ---------------------------------------------------------------


def test_the_charts_rbac_never_refused_the_operator(heatshift: harness.Heatshift) -> None:
    """After every scenario so far, not one call of the operator (or Kopf's) got a 403."""
    refused = [
        line
        for line in heatshift.operator_logs().splitlines()
        if "APIForbiddenError" in line or "HTTP 403" in line or "forbidden" in line.lower()
    ]
    assert not refused, "\n".join(refused[:10])


# --- logging in like kubectl -------------------------------------------------------------------


def test_plan_dry_run_logs_in_through_an_exec_credential_plugin(
    heatshift: harness.Heatshift,
) -> None:
    """``heatshift plan --dry-run`` with a kubeconfig whose user is an exec plugin (what EKS,
    GKE and AKS write): the plugin runs, the API server takes its token; a token it refuses
    is one line naming the kubeconfig user."""
    cluster = heatshift.cluster
    if not isinstance(cluster, harness.LocalControlPlane):
        pytest.skip("the plugin's static token needs the local control plane's authenticator")
    config, runs = cluster.exec_plugin_kubeconfig(heatshift.work / "plugin", cluster.plugin_token)
    plan = [sys.executable, "-m", "heatshift", "plan", "--dry-run", "--kubeconfig", str(config)]
    done = subprocess.run(plan, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "HeatPolicy " in done.stdout or "no HeatPolicies" in done.stdout
    assert runs.read_text() == "1"

    refused, _ = cluster.exec_plugin_kubeconfig(heatshift.work / "refused", "not-a-token")
    plan[-1] = str(refused)
    done = subprocess.run(plan, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "kubeconfig user 'e2e-plugin-user' (context 'e2e'): the API server refused" in line


# --- 4. operator killed during apply (last: it leaves two replicas running) ---------------------


def _paused(log: str) -> bool:
    """Kopf peering's last word in a replica's log: it paused in favour of a higher priority."""
    return log.rfind("Pausing operations in favour of") > log.rfind("Resuming operations")


def test_a_standby_replica_serving_the_webhook_still_holds_new_work(
    heatshift: harness.Heatshift,
) -> None:
    """The Service sends admissions to every replica; a standby's watches are paused by peering,
    so it must hold from the API server, not from its empty or frozen indexes."""
    if heatshift.cluster.in_cluster_operator:
        pytest.skip(
            "picks which local replica serves the webhook; the chart's pods' Service spreads "
            "every scenario's admissions over both replicas, the standby's too"
        )
    webhook_replica = heatshift.operators[0]
    # A replica that outranks every other one acts; the one serving the webhook pauses.
    acting = heatshift.start_operator(primary=False, extra_args=["--priority", str(2**40)])
    try:
        harness.wait_for(
            "the webhook's replica to pause in favour of the new one",
            lambda: _paused(webhook_replica.log.read_text(errors="replace")),
            harness.STARTUP_TIMEOUT_S,
            interval_s=0.5,
        )
        created = create(heatshift, job("standby", annotations={"heatshift.dev/max-delay": "0s"}))
        assert created["spec"]["suspend"] is True, "the paused replica let new work run unheld"
        # The acting replica releases it: due at once.
        wait_released(heatshift, [created["metadata"]["name"]], harness.PLANNING_TIMEOUT_S)
    finally:
        acting.stop()
        heatshift.operators.remove(acting)
    # Gone cleanly, it leaves the peering at once and a remaining replica acts again.
    harness.wait_for(
        "a remaining replica to resume",
        lambda: not all(_paused(p.log.read_text(errors="replace")) for p in heatshift.operators),
        harness.STARTUP_TIMEOUT_S,
        interval_s=0.5,
    )


def test_operator_killed_during_apply_loses_and_duplicates_nothing(
    heatshift: harness.Heatshift,
) -> None:
    """Two replicas in one peering, the acting one SIGKILLed mid-apply and replaced.

    Kopf pauses every operator whose peering priority equals another live one's, so this
    passes only when each replica gets a priority of its own (settings.peering.priority).
    """
    standby = None
    if not heatshift.cluster.in_cluster_operator:
        # Two replicas in one peering, as the chart runs them.
        standby = heatshift.start_operator(primary=False)
    names = [
        create(heatshift, job("crash", annotations={"heatshift.dev/max-delay": "3m"}))["metadata"][
            "name"
        ]
        for _ in range(12)
    ]

    def first_release() -> bool:
        return any(
            released(j) for j in heatshift.kube.items("jobs", NS) if j["metadata"]["name"] in names
        )

    harness.wait_for(
        "the first release of the batch", first_release, harness.PLANNING_TIMEOUT_S, interval_s=0.2
    )
    heatshift.kill_operator_and_replace()
    # Whatever the takeover costs, none waits past its 3 min start deadline (+ one cycle).
    jobs = wait_released(heatshift, names, 180 + harness.ADMISSION_TIMEOUT_S)
    for name, j in jobs.items():
        waited = waited_for_release(j)
        assert waited <= datetime.timedelta(seconds=180 + 10), (name, waited)
        site = annotation(j, "heatshift.dev/site")
        assert (j["spec"]["template"]["spec"].get("nodeSelector") or {}).get(
            harness.SITE_LABEL
        ) == site, name

    def one_pod_each() -> bool:
        pods = [
            p
            for p in heatshift.kube.items("pods", NS)
            if p["metadata"]["labels"].get("job-name") in names
        ]
        per_job = collections.Counter(p["metadata"]["labels"]["job-name"] for p in pods)
        assert all(count == 1 for count in per_job.values()), per_job
        return len(per_job) == len(names)

    harness.wait_for("one pod per Job", one_pod_each, harness.ADMISSION_TIMEOUT_S)
    if standby is not None:
        standby.check_alive()
