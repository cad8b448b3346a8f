"""The Helm chart in helm/heatshift, rendered by a real ``helm`` and checked object by object.

helm is the pinned build from e2e/cluster/helm (``e2e/cluster/build.sh helm``, which ``make
test`` runs first); ``HEATSHIFT_HELM`` may name another binary. Without one these tests fail
rather than skip: a chart nobody rendered is not a tested chart.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import pathlib
import re
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import yaml

from heatshift import ledger, metrics, resources
from heatshift.kube import probes
from heatshift.metering import readings
from heatshift.metering import server as metering_server
from heatshift.sim import scenario as scenario_mod

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "heatshift"
CRDS = ROOT / "crds"
NAMESPACE = "heatshift-system"
RELEASE = "heatshift"

Obj = dict[str, Any]


def helm_binary() -> str:
    explicit = os.environ.get("HEATSHIFT_HELM")
    if explicit:
        return explicit
    built = ROOT / ".cache" / "bin" / "helm"
    if not built.exists():
        pytest.fail(f"no helm at {built.relative_to(ROOT)}: run `e2e/cluster/build.sh helm`")
    return str(built)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # No kubeconfig, no plugins, no repositories: the render depends on the chart alone.
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/nonexistent"),
            "KUBECONFIG": "/dev/null",
            "HELM_NO_PLUGINS": "1",
        },
    )


def set_args(values: Obj) -> list[str]:
    """``--set-json`` arguments for each top-level key of ``values``."""
    return [arg for key, v in values.items() for arg in ("--set-json", f"{key}={json.dumps(v)}")]


def render_result(values: Obj | None = None) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *set_args(values or {}))


def render(values: Obj | None = None) -> list[Obj]:
    result = render_result(values)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@functools.cache
def default_render() -> tuple[Obj, ...]:
    return tuple(render())


def only(objs: Sequence[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name!r}"
    return found[0]


def kinds(objs: Sequence[Obj]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def rules(role: Obj) -> set[tuple[str, str, str]]:
    """A Role's rules flattened to (apiGroup, resource, verb)."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def grant(
    group: str, resources: Sequence[str], verbs: Sequence[str]
) -> Iterator[tuple[str, str, str]]:
    return ((group, r, v) for r in resources for v in verbs)


# What the operator calls (operator/heatshift/kube, handlers.py and Kopf), and nothing more.
CLUSTER_RULES = {
    # The watched view (Kopf indexes) lists and watches what a cycle reads; a GET confirms a
    # quiet part of it (kube/view.py).
    *grant("heatshift.dev", ["leafsites", "heatpolicies"], ["get", "list", "watch", "patch"]),
    *grant("heatshift.dev", ["leafsites/status", "heatpolicies/status"], ["patch"]),
    *grant("batch", ["jobs"], ["get", "list", "watch", "patch"]),
    *grant("", ["pods"], ["get", "list", "watch", "patch"]),
    *grant("", ["nodes"], ["get", "list", "watch"]),
    # Namespace labels, for HeatPolicy namespaceSelectors (a Kopf index).
    *grant("", ["namespaces"], ["get", "list", "watch"]),
    *grant("", ["events"], ["create"]),
    # Kopf's scanning of CRDs (read-only).
    *grant("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
    *grant("kopf.dev", ["clusterkopfpeerings"], ["get", "list", "watch", "patch"]),
}


# --- the CRDs ------------------------------------------------------------------------------------


def test_chart_crds_are_the_repository_crds() -> None:
    ours = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert ours, "crds/ is empty"
    for name in ours:
        assert (CHART / "crds" / name).read_bytes() == (CRDS / name).read_bytes(), (
            f"helm/heatshift/crds/{name} differs from crds/{name}: run `make chart-crds`"
        )
    extra = {p.name for p in (CHART / "crds").glob("*")} - set(ours)
    assert extra == {"kopf-peering.yaml"}


def test_chart_carries_kopf_peering_crds() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    assert {d["metadata"]["name"] for d in docs} == {
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


# --- the default render --------------------------------------------------------------------------


def test_lint_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_has_every_part() -> None:
    assert kinds(default_render()) == sorted(
        [
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "MutatingWebhookConfiguration",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "Service",
            "ServiceAccount",
        ]
    )


def test_deployment_runs_two_peered_replicas() -> None:
    deployment = only(default_render(), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "run",
        "--peering=heatshift",
        "--metrics-port=8080",
        "--health-port=8081",
        "--webhook-port=9443",
        "--webhook-cert-dir=/etc/heatshift/webhook",
    ]
    assert container["image"] == "heatshift/heatshift:0.1.0"
    peering = only(default_render(), "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "heatshift"


def test_pods_are_locked_down() -> None:
    spec = only(default_render(), "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    # Two questions, two endpoints of the operator (kube.probes): alive, and listed.
    assert container["livenessProbe"]["httpGet"]["path"] == probes.LIVENESS_PATH
    assert container["readinessProbe"]["httpGet"]["path"] == probes.READINESS_PATH
    assert spec["serviceAccountName"] == "heatshift"


def test_a_stopping_replica_keeps_serving_until_the_service_forgets_it() -> None:
    """A preStop pause: while it lasts the pod is Terminating, its endpoint leaves the webhook's
    Service, and the webhook still answers; only then does the operator get SIGTERM. Without
    it a Job created in that moment is admitted unheld (failurePolicy Ignore)."""
    spec = only(default_render(), "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    # The pause and Kopf's own shutdown fit in the grace period (the default 30 s).
    assert spec.get("terminationGracePeriodSeconds", 30) >= 5 + 10
    off = only(render({"preStopSleepSeconds": 0}), "Deployment")["spec"]["template"]["spec"]
    assert "lifecycle" not in off["containers"][0]


def test_cluster_role_grants_exactly_what_the_operator_calls() -> None:
    role = only(default_render(), "ClusterRole")
    assert rules(role) == CLUSTER_RULES
    binding = only(default_render(), "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "heatshift", "namespace": NAMESPACE}
    ]


def test_secrets_are_readable_in_one_namespace_only() -> None:
    role = only(default_render(), "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules(role) == {("", "secrets", "get")}
    assert not any(r[1] == "secrets" for r in rules(only(default_render(), "ClusterRole")))
    elsewhere = render(
        {
            "metering": {
                "secretNamespace": "metering",
                "tokenSecret": {"create": False, "name": "heatshift-metering", "token": ""},
            }
        }
    )
    assert only(elsewhere, "Role")["metadata"]["namespace"] == "metering"
    assert only(elsewhere, "RoleBinding")["metadata"]["namespace"] == "metering"


def test_webhook_ignores_failures_and_trusts_its_generated_ca() -> None:
    objs = default_render()
    config = only(objs, "MutatingWebhookConfiguration")
    hooks = {h["name"]: h for h in config["webhooks"]}
    assert set(hooks) == {"jobs.hold.heatshift.dev", "pods.hold.heatshift.dev"}
    secret = only(objs, "Secret", "heatshift-webhook-tls")
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN RSA PRIVATE KEY")
    for name, path, resource in [
        ("jobs.hold.heatshift.dev", "/hold-jobs", "jobs"),
        ("pods.hold.heatshift.dev", "/hold-pods", "pods"),
    ]:
        hook = hooks[name]
        assert hook["failurePolicy"] == "Ignore"
        assert hook["sideEffects"] == "None"
        assert hook["clientConfig"]["service"] == {
            "name": "heatshift-webhook",
            "namespace": NAMESPACE,
            "path": path,
            "port": 443,
        }
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
        assert hook["rules"][0]["resources"] == [resource]
        assert hook["rules"][0]["operations"] == ["CREATE"]
        excluded = hook["namespaceSelector"]["matchExpressions"][0]
        assert excluded["operator"] == "NotIn"
        assert {"kube-system", NAMESPACE} <= set(excluded["values"])
    service = only(objs, "Service", "heatshift-webhook")
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"


def test_dashboard_is_valid_grafana_json() -> None:
    config_map = only(default_render(), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["heatshift.json"])
    assert dashboard["uid"] == "heatshift"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and all("heatshift_" in e for e in exprs)


def _exported_series() -> set[str]:
    """Every sample name the operator's registry and the reference meter export, with every
    series touched once (a labelled series has no sample until it is)."""
    m = metrics.Metrics()
    m.jobs_released.labels(site="pool", reason="heat").inc()
    m.deadline_releases.labels(policy="batch").inc()
    m.plan_seconds.labels(policy="batch").observe(0.3)
    m.planner_fallbacks.labels(policy="batch").inc()
    m.metering_errors.labels(site="pool", kind="stale").inc()
    m.held_jobs.labels(policy="batch").set(1)
    t0 = 1_767_225_600.0
    settings = ledger.Settings(
        period=resources.LedgerPeriodKind.MONTH,
        pue=1.0,
        backup_efficiency=0.9,
        emission_factor_kg_per_kwh=0.2,
        max_kw=dict.fromkeys(ledger.Energy, 100.0),
        min_supply_temp_c=60.0,
    )
    state: resources.LedgerStatus | None = None
    for i, delivered in enumerate((1.0, 2.0)):
        reading = readings.SiteReading(
            site="pool",
            observed_at_s=t0 + 300 * i,
            demand_kw=5.0,
            tank_energy_kwh=1.0,
            tank_capacity_kwh=10.0,
            tank_source="energy",
            supply_temp_c=50.0,
            return_temp_c=30.0,
            registers=readings.Registers(
                observed_at_s=t0 + 300 * i, heat_delivered_kwh=delivered, heat_dumped_kwh=delivered
            ),
        )
        estimate = {ledger.Energy.IT: 1.0}
        outcome = ledger.advance(
            state, ledger.Observation(reading, estimate), settings, now_s=t0 + 300 * i
        )
        state = outcome.ledger
        m.record_site(
            "pool",
            outcome,
            reading,
            it_power_watts=1000.0,
            backup_efficiency=0.9,
            emission_factor_kg_per_kwh=0.2,
        )
    names = {s.name for family in m.registry.collect() for s in family.samples}
    sim = metering_server.MeterSimulation(scenario_mod.load_builtin_scenario())
    names |= {s.name for family in sim.metrics() for s in family.samples}
    return names


def test_every_dashboard_panel_queries_series_that_are_exported() -> None:
    """Each panel's every query names at least one series, and only series the operator (or
    the reference meter) exports, by their exposed names (``_total``, ``_bucket``)."""
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    exported = _exported_series()
    for panel in dashboard["panels"]:
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            named = set(re.findall(r"heatshift_[a-z0-9_]+", target["expr"]))
            assert named, f"panel {panel['title']!r} queries no heatshift series"
            missing = named - exported
            assert not missing, f"panel {panel['title']!r} queries {missing}, not exported"


def test_the_dashboard_shows_the_ledger_per_site_and_for_the_fleet() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for series in (
        "heatshift_heat_delivered_joules_total",
        "heatshift_it_energy_joules_total",
        "heatshift_energy_reuse_effectiveness_ratio",
        "heatshift_co2_avoided_grams_total",
        "heatshift_fuel_avoided_joules_total",
        "heatshift_dumped_while_wanted_seconds_total",
        "heatshift_supply_temperature_celsius",
    ):
        assert series in exprs, series
    assert not re.search(r"heatshift_[a-z_]*_kwh", exprs), "operator series are in base units"


# --- other values --------------------------------------------------------------------------------


def test_namespaced_operator_peers_and_holds_in_its_namespaces() -> None:
    objs = render({"watchNamespaces": ["batch-a", "batch-b"]})
    (container,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--namespace=batch-a" in container["args"]
    assert "--namespace=batch-b" in container["args"]
    peerings = [o for o in objs if o["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["batch-a", "batch-b"]
    roles = [o for o in objs if o["kind"] == "Role" and o["metadata"]["name"].endswith("-peering")]
    assert [rules(r) for r in roles] == [
        set(grant("kopf.dev", ["kopfpeerings"], ["get", "list", "watch", "patch"]))
    ] * 2


def test_kueue_enabled_answers_the_check_with_exactly_the_rights_it_uses() -> None:
    objs = render({"kueue": {"enabled": True, "admissionCheck": {"create": True}}})
    (container,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--kueue" in container["args"]
    check = only(objs, "AdmissionCheck", "heatshift")
    assert check["spec"] == {"controllerName": "heatshift.dev/heat"}
    kueue_rules = {
        *grant("kueue.x-k8s.io", ["admissionchecks", "workloads"], ["list", "watch", "patch"]),
        *grant("kueue.x-k8s.io", ["admissionchecks/status", "workloads/status"], ["patch"]),
        # Owners are read for their hints, never written.
        *(
            (group, "*", "get")
            for group in [
                "batch",
                "jobset.x-k8s.io",
                "kubeflow.org",
                "trainer.kubeflow.org",
                "ray.io",
            ]
        ),
    }
    assert rules(only(objs, "ClusterRole")) == CLUSTER_RULES | kueue_rules
    # Off by default: no check, no flag, no Kueue rights.
    assert "AdmissionCheck" not in kinds(default_render())
    without = render({"kueue": {"enabled": False, "admissionCheck": {"create": True}}})
    assert "AdmissionCheck" not in kinds(without)


def test_standalone_single_replica_has_no_peering() -> None:
    objs = render({"replicaCount": 1, "peering": {"name": "heatshift", "standalone": True}})
    assert "ClusterKopfPeering" not in kinds(objs)
    assert "PodDisruptionBudget" not in kinds(objs)
    (container,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--standalone" in container["args"]
    assert not any(r[0] == "kopf.dev" for r in rules(only(objs, "ClusterRole")))


def test_cert_manager_issues_the_webhook_certificate() -> None:
    objs = render(
        {
            "webhook": {
                "enabled": True,
                "port": 9443,
                "timeoutSeconds": 5,
                "certManager": {"enabled": True},
            }
        }
    )
    certificate = only(objs, "Certificate")
    assert certificate["spec"]["secretName"] == "heatshift-webhook-tls"
    assert certificate["spec"]["issuerRef"] == {"name": "heatshift-selfsigned", "kind": "Issuer"}
    assert "heatshift.heatshift-webhook.svc" not in certificate["spec"]["dnsNames"]
    assert "heatshift-webhook.heatshift-system.svc" in certificate["spec"]["dnsNames"]
    config = only(objs, "MutatingWebhookConfiguration")
    assert config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/heatshift-webhook"
    }
    assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])
    assert not [o for o in objs if o["kind"] == "Secret"]


def test_external_webhook_url_for_an_operator_outside_the_cluster() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    objs = render(
        {
            "replicaCount": 0,
            "webhook": {
                "enabled": True,
                "port": 9443,
                "timeoutSeconds": 5,
                "externalURL": "https://127.0.0.1:9443/",
                "caBundle": pem,
            },
        }
    )
    config = only(objs, "MutatingWebhookConfiguration")
    assert [h["clientConfig"]["url"] for h in config["webhooks"]] == [
        "https://127.0.0.1:9443/hold-jobs",
        "https://127.0.0.1:9443/hold-pods",
    ]
    assert all(
        base64.b64decode(h["clientConfig"]["caBundle"]).decode() == pem for h in config["webhooks"]
    )
    (container,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not any(a.startswith("--webhook") for a in container["args"])


def test_metering_token_secret_and_service_monitor() -> None:
    objs = render(
        {
            "metering": {"tokenSecret": {"create": True, "name": "bms-token", "token": "s3cret"}},
            "metrics": {
                "port": 8080,
                "service": {"enabled": True, "port": 8080},
                "serviceMonitor": {
                    "enabled": True,
                    "interval": "15s",
                    "labels": {"release": "kube-prometheus"},
                },
            },
        }
    )
    secret = only(objs, "Secret", "bms-token")
    assert base64.b64decode(secret["data"]["token"]) == b"s3cret"
    monitor = only(objs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]


# --- values the chart refuses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"replicas": 3}, "additional properties 'replicas' not allowed", id="typo"),
        pytest.param({"replicaCount": -1}, "replicaCount", id="negative-replicas"),
        pytest.param({"replicaCount": "two"}, "replicaCount", id="replicas-not-a-number"),
        pytest.param(
            {"image": {"repository": "x", "tag": "", "pullPolicy": "Sometimes"}},
            "pullPolicy",
            id="pull-policy",
        ),
        pytest.param(
            {"peering": {"name": "heatshift", "standalone": True}},
            "/replicaCount': value must be 1",
            id="standalone-with-two-replicas",
        ),
        pytest.param(
            {"peering": {"name": "Heat_Shift", "standalone": False}},
            "/peering/name",
            id="peering-name",
        ),
        pytest.param(
            {"webhook": {"enabled": True, "port": 9443, "timeoutSeconds": 60}},
            "timeoutSeconds",
            id="webhook-timeout",
        ),
        pytest.param(
            {
                "webhook": {
                    "enabled": True,
                    "port": 9443,
                    "timeoutSeconds": 5,
                    "failurePolicy": "Fail",
                }
            },
            "additional properties 'failurePolicy' not allowed",
            id="failure-policy",
        ),
        pytest.param(
            {
                "webhook": {
                    "enabled": True,
                    "port": 9443,
                    "timeoutSeconds": 5,
                    "externalURL": "http://127.0.0.1:9443",
                    "caBundle": "x",
                }
            },
            "externalURL",
            id="plain-http-webhook",
        ),
        pytest.param(
            {
                "webhook": {
                    "enabled": True,
                    "port": 9443,
                    "timeoutSeconds": 5,
                    "externalURL": "https://127.0.0.1:9443",
                }
            },
            "caBundle",
            id="external-webhook-without-ca",
        ),
        pytest.param(
            {
                "metrics": {
                    "port": 70000,
                    "service": {"enabled": True, "port": 8080},
                    "serviceMonitor": {"enabled": False},
                }
            },
            "/metrics/port",
            id="metrics-port",
        ),
        pytest.param({"watchNamespaces": ["Not A Namespace"]}, "watchNamespaces", id="namespace"),
        pytest.param({"preStopSleepSeconds": 30}, "preStopSleepSeconds", id="pre-stop-too-long"),
        pytest.param(
            {"metering": {"tokenSecret": {"create": True, "name": "t", "token": ""}}},
            "metering.tokenSecret.token is required",
            id="token-secret-without-token",
        ),
    ],
)
def test_bad_values_fail_with_a_clear_message(values: Obj, message: str) -> None:
    result = render_result(values)
    assert result.returncode != 0, f"rendered with {values}"
    assert message in result.stderr, result.stderr
