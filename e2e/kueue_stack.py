"""A real Kueue (and JobSet) beside the local control plane, for ``e2e/test_kueue.py``.

Both controller managers are built from their Go modules by ``e2e/cluster/build.sh kueue``
(pinned in ``e2e/cluster/kueue/go.mod`` and ``e2e/cluster/jobset/go.mod``) and run as
processes of the test run against the local API server, like the control plane itself:

- their CRDs come from the module cache (the same pinned version, ``config/components/crd``);
- each gets a configuration file: leader election off, loopback health and metrics ports, its
  internal certificate management off and a webhook serving certificate signed by the
  cluster's CA, since the API server reaches them at 127.0.0.1;
- their own webhook configurations (``config/components/webhook/manifests.yaml``) are
  installed with ``clientConfig.url`` pointing at that port instead of an in-cluster Service,
  so Jobs and JobSets are defaulted and validated exactly as in a cluster.

:meth:`KueueStack.stop` removes the webhook configurations before stopping the processes, so
that the rest of the suite runs on a cluster whose Pods no stopped webhook refuses.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import harness
import real_node
import yaml

HERE = Path(__file__).resolve().parent
KUEUE_NAMESPACE = "kueue-system"
KUEUE_IMAGE = "heatshift-e2e/kueue"
KUEUE_METRICS_CERTS = Path("/etc/kueue/metrics/certs")
"""Where Kueue reads its metrics serving certificate when its internal certificate management
is off: a fixed path in its main.go, so the harness must put one there."""


def module_dir(tool: str, module: str) -> Path:
    """Where the Go module cache holds ``module`` at the version ``e2e/cluster/<tool>`` pins."""
    return Path(_module(tool, module)["Dir"])


def _module(tool: str, module: str) -> dict[str, str]:
    out = subprocess.run(
        ["go", "mod", "download", "-json", module],
        cwd=HERE / "cluster" / tool,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    found: dict[str, str] = json.loads(out.stdout)
    return found


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def url_webhooks(
    docs: list[dict[str, Any]],
    prefix: str,
    base_url: str,
    ca_bundle: bytes,
    groups: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Webhook configurations that call ``base_url`` + each webhook's path, not a Service;
    with ``groups``, only the webhooks for those API groups (the integrations enabled)."""
    out = []
    for doc in docs:
        doc = json.loads(json.dumps(doc))
        doc["metadata"] = {"name": f"{prefix}-{doc['metadata']['name']}"}
        doc["webhooks"] = [
            hook
            for hook in doc.get("webhooks") or []
            if groups is None
            or all(g in groups for rule in hook["rules"] for g in rule["apiGroups"])
        ]
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"].get("path", "/")
            hook["clientConfig"] = {
                "url": base_url + path,
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
        out.append(doc)
    return out


@dataclasses.dataclass
class Manager:
    """One controller manager process and its webhook configurations."""

    name: str
    process: harness.Process
    health_url: str
    webhooks: list[dict[str, Any]]


class KueueStack:
    """Kueue's and JobSet's controller managers on a :class:`harness.LocalControlPlane`."""

    def __init__(self, cluster: harness.LocalControlPlane) -> None:
        self.cluster = cluster
        self.kube = cluster.admin
        self.work = cluster.work / "kueue"
        self.managers: list[Manager] = []

    def start(self) -> KueueStack:
        self.work.mkdir(parents=True, exist_ok=True)
        kueue_dir = module_dir("kueue", "sigs.k8s.io/kueue")
        jobset_dir = module_dir("jobset", "sigs.k8s.io/jobset")
        # The Workload CRD is larger than client-side apply's annotation allows.
        for crds in (kueue_dir, jobset_dir):
            self.kube.run("apply", "--server-side", "-f", str(crds / "config/components/crd/bases"))
        self.kube.run("create", "namespace", KUEUE_NAMESPACE, check=False)
        harness.wait_for("Kueue's CRDs established", self._crds_ready, harness.STARTUP_TIMEOUT_S)
        self._start("jobset", "config.jobset.x-k8s.io/v1alpha1", {}, jobset_dir, None)
        self._start(
            "kueue",
            "config.kueue.x-k8s.io/v1beta2",
            {
                "namespace": KUEUE_NAMESPACE,
                "manageJobsWithoutQueueName": False,
                "integrations": {"frameworks": ["batch/job", "jobset.x-k8s.io/jobset"]},
            },
            kueue_dir,
            # The integrations enabled above, and Kueue's own kinds.
            frozenset({"batch", "jobset.x-k8s.io", "kueue.x-k8s.io"}),
        )
        return self

    def _crds_ready(self) -> bool:
        for name in ("workloads.kueue.x-k8s.io", "jobsets.jobset.x-k8s.io"):
            crd = self.kube.get("crd", name)
            if (harness.condition(crd, "Established") or {}).get("status") != "True":
                return False
        return True

    def _start(
        self,
        name: str,
        api_version: str,
        extra: dict[str, Any],
        source: Path,
        groups: frozenset[str] | None,
    ) -> None:
        pki = self.cluster.pki
        certs = self.work / f"{name}-certs"
        certs.mkdir(exist_ok=True)
        harness.make_serving_cert(pki, f"{name}-webhook", f"{name}-webhook")
        (certs / "tls.crt").write_bytes((pki / f"{name}-webhook.crt").read_bytes())
        (certs / "tls.key").write_bytes((pki / f"{name}-webhook.key").read_bytes())
        if name == "kueue":
            try:
                KUEUE_METRICS_CERTS.mkdir(parents=True, exist_ok=True)
                for part in ("tls.crt", "tls.key"):
                    (KUEUE_METRICS_CERTS / part).write_bytes((certs / part).read_bytes())
            except OSError as err:
                raise harness.HarnessError(
                    f"Kueue needs its metrics certificate in {KUEUE_METRICS_CERTS}: {err}"
                ) from err
        webhook_port, health_port, metrics_port = (harness.free_port() for _ in range(3))
        config = {
            "apiVersion": api_version,
            "kind": "Configuration",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
            "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
            "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            **extra,
        }
        config_file = self.work / f"{name}-config.yaml"
        config_file.write_text(yaml.safe_dump(config))
        argv = [harness.tool(name), f"--config={config_file}"]
        if name == "kueue":
            # Its visibility API server (pending-workload listings) is not used here, and wants
            # a certificate in a fixed directory.
            argv.append("--feature-gates=VisibilityOnDemand=false")
        else:
            argv += [
                f"--health-probe-bind-address=127.0.0.1:{health_port}",
                f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            ]
        process = harness.Process(
            name,
            argv,
            self.cluster.logs / f"{name}.log",
            env={"KUBECONFIG": str(self.kube.kubeconfig)},
        ).start()
        webhooks = url_webhooks(
            _docs(source / "config/components/webhook/manifests.yaml"),
            name,
            f"https://127.0.0.1:{webhook_port}",
            (pki / "ca.crt").read_bytes(),
            groups,
        )
        manager = Manager(name, process, f"http://127.0.0.1:{health_port}/readyz", webhooks)
        self.managers.append(manager)
        harness.wait_for(
            f"{name} /readyz",
            lambda: process.serving(manager.health_url),
            harness.STARTUP_TIMEOUT_S,
        )
        self.kube.apply(harness.manifests(*webhooks))

    def stop(self) -> None:
        for manager in reversed(self.managers):
            for hook in manager.webhooks:
                self.kube.run(
                    "delete", hook["kind"], hook["metadata"]["name"], "--ignore-not-found"
                )
            manager.process.stop()

    def logs(self) -> str:
        return "\n".join(m.process.tail(60) for m in self.managers)


class KueueChart:
    """Kueue installed the way its users install it: ``helm install`` of its own chart (from
    the pinned module, ``charts/kueue``), its controller manager a pod on the real node
    (real_node.py). The image holds the binary ``build.sh kueue`` made, shaped as Kueue's
    Dockerfile makes it: the static manager alone at ``/manager``, run as 65532.

    Nothing is pointed at loopback: the API server calls Kueue's webhooks at their Service,
    with the CA bundle Kueue's internal certificate management injects, and proxies its
    visibility API (an APIService) through the aggregation layer."""

    release = "kueue"

    def __init__(self, cluster: real_node.PodControlPlane, frameworks: list[str]) -> None:
        self.cluster = cluster
        self.kube = cluster.admin
        self.frameworks = frameworks

    def install(self) -> KueueChart:
        pinned = _module("kueue", "sigs.k8s.io/kueue")
        chart = Path(pinned["Dir"]) / "charts" / "kueue"
        version = pinned["Version"]
        image = real_node.one_binary_image(
            f"{KUEUE_IMAGE}:{version}", Path(harness.tool("kueue")), ["/manager"], "65532:65532"
        )
        self.cluster.load_image(image)
        defaults = yaml.safe_load((chart / "values.yaml").read_text())
        config = yaml.safe_load(defaults["managerConfig"]["controllerManagerConfigYaml"])
        # Only the job kinds whose CRDs this cluster has.
        config["integrations"]["frameworks"] = self.frameworks
        values = {
            "controllerManager": {
                "manager": {
                    "image": {
                        "repository": KUEUE_IMAGE,
                        "tag": version,
                        # Loaded into the node above; nothing is ever pulled.
                        "pullPolicy": "Never",
                    }
                }
            },
            "managerConfig": {"controllerManagerConfigYaml": yaml.safe_dump(config)},
        }
        values_file = self.cluster.work / "kueue-values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        self.cluster.helm(
            "install", self.release, str(chart), "--namespace", KUEUE_NAMESPACE,
            "--create-namespace", "--values", str(values_file), "--wait", "--timeout", "4m",
        )  # fmt: skip
        try:
            harness.wait_for(
                "Kueue's webhooks and visibility API served",
                self._serving,
                harness.STARTUP_TIMEOUT_S,
            )
        except harness.HarnessError as err:
            log = self.kube.run(
                "logs", "-n", KUEUE_NAMESPACE, f"deployment/{self.release}-controller-manager",
                "--tail=60", check=False,
            )  # fmt: skip
            raise harness.HarnessError(f"{err}; Kueue's log ends:\n{log}") from err
        return self

    def _serving(self) -> bool:
        """Kueue has put its CA into its webhook configurations, and the aggregation layer
        reaches its visibility API."""
        for kind, name in (
            ("mutatingwebhookconfiguration", "mutating-webhook-configuration"),
            ("validatingwebhookconfiguration", "validating-webhook-configuration"),
        ):
            config = self.kube.get(kind, f"{self.release}-{name}")
            if not all(h["clientConfig"].get("caBundle") for h in config["webhooks"]):
                return False
        service = self.kube.get("apiservice", "v1beta2.visibility.kueue.x-k8s.io")
        return harness.condition_true(service, "Available")

    def manager_pods(self) -> list[harness.Obj]:
        return self.kube.items("pods", KUEUE_NAMESPACE, selector="control-plane=controller-manager")
