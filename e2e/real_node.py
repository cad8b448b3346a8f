"""A real node beside the simulated ones, so the chart's Deployment runs as real pods.

kind cannot be built here (no container registry is reachable): its base image's Dockerfile
downloads containerd, runc, crictl and the CNI plugins from GitHub releases, and
``kind build node-image`` pulls the pause, etcd, CoreDNS, kindnetd and local-path images from
registry.k8s.io and docker.io. So the in-cluster suite runs on the local control plane
(:class:`harness.LocalControlPlane`) with one real node added:

- containerd, runc and the CNI plugins from Debian's packages; kubelet and kube-proxy built
  from ``k8s.io/kubernetes`` at the control plane's version (``e2e/cluster/build.sh node``);
- the sandbox ("pause") image made from Debian's static ``catatonit`` (``-P``: pause mode) and
  the operator image (``e2e/image.py``), both loaded into containerd from Docker;
- one Linux bridge the run makes (:data:`BRIDGE`, :data:`BRIDGE_ADDRESS`) for the pods'
  network (the CNI bridge plugin). The API server and the metering reference server listen on
  the bridge's address; pods reach the API server through the ``kubernetes`` Service and the
  API server reaches the webhook through its Service, both by kube-proxy's iptables rules.

The simulated site nodes are tainted the way kwok's own docs do it
(:data:`harness.VIRTUAL_NODE_TAINT`): the chart's pods, which tolerate nothing, land on the
real node only; the e2e Jobs tolerate it and run on the sites.

Needs root (a bridge, iptables rules, mounts). Everything the node ran is removed at
:meth:`PodControlPlane.stop`: its pods, containers, mounts, the bridge and kube-proxy's rules.
One such cluster per machine at a time (the bridge's name is fixed; ``make e2e`` serialises
runs with a lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import harness
import image
import yaml

BRIDGE = "hs-e2e0"
BRIDGE_ADDRESS = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
SERVICE_IP = "10.96.0.1"
"""The ``kubernetes`` Service's address (the first of ``--service-cluster-ip-range``)."""
NODE_NAME = "heatshift-e2e-node"
CNI_BIN = Path("/usr/lib/cni")
"""Where Debian's containernetworking-plugins put the plugins."""
CATATONIT = Path("/usr/bin/catatonit")
PAUSE_IMAGE = "heatshift-e2e/pause:catatonit"
DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "catatonit", "iptables")


def virtual(nodes: list[harness.Obj]) -> list[harness.Obj]:
    """``nodes`` (kwok's) tainted as virtual nodes: no pod lands there unless it tolerates it."""
    for node in nodes:
        node["spec"]["taints"] = [harness.VIRTUAL_NODE_TAINT]
    return nodes


def missing() -> str | None:
    """Why a real node cannot run here, or None."""
    if os.geteuid() != 0:
        return "a real node needs root (a bridge, iptables rules, mounts)"
    for what, path in (
        ("containerd", shutil.which("containerd")),
        ("ctr", shutil.which("ctr")),
        ("runc", shutil.which("runc")),
        ("iptables", shutil.which("iptables")),
        (
            "the CNI bridge plugin",
            str(CNI_BIN / "bridge") if (CNI_BIN / "bridge").exists() else None,
        ),
        ("catatonit", str(CATATONIT) if CATATONIT.exists() else None),
    ):
        if path is None:
            return f"{what} is not installed (apt-get install {' '.join(DEBIAN_PACKAGES)})"
    for name in ("kubelet", "kube-proxy"):
        if not (harness.TOOLS / name).exists():
            return f"{name} is not built (e2e/cluster/build.sh node)"
    return image.can_build()


def _run(*argv: str, check: bool = True, stdin: bytes | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=300)
    if check and result.returncode != 0:
        raise harness.HarnessError(
            f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.decode(errors='replace')}"
        )
    return result.stdout.decode(errors="replace")


def make_client_cert(directory: Path, name: str, cn: str, group: str) -> None:
    """``name``.crt / ``name``.key: a client certificate for user ``cn`` in ``group``."""
    harness.openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/O={group}/CN={cn}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text("extendedKeyUsage=clientAuth\n")
    harness.openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip


def cert_kubeconfig(server: str, pki: Path, name: str) -> str:
    """A kubeconfig logging in with the client certificate ``name`` of ``pki``."""
    config = yaml.safe_load(harness.kubeconfig(server, pki / "ca.crt", ""))
    config["users"] = [
        {
            "name": "e2e",
            "user": {
                "client-certificate": str(pki / f"{name}.crt"),
                "client-key": str(pki / f"{name}.key"),
            },
        }
    ]
    return str(yaml.safe_dump(config))


def _ensure_bridge() -> None:
    """The pods' bridge with the node's address on it, made before anything listens there."""
    if _run("ip", "link", "show", BRIDGE, check=False) == "":
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    addresses = _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE)
    if f"{BRIDGE_ADDRESS}/" not in addresses:
        _run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # Service addresses are routed onto the bridge, never to the machine's default route: a
    # connection to a ClusterIP kube-proxy has no rules for yet must fail here (and be tried
    # again), not leave the machine. Where something out there answers (on some machines
    # something does), the API server's webhook and aggregation clients keep that connection
    # as the Service's, and every call through it fails.
    if harness.SERVICE_SUBNET not in _run("ip", "-4", "route", "show", "dev", BRIDGE):
        _run("ip", "route", "add", harness.SERVICE_SUBNET, "dev", BRIDGE)
    # Pod to pod (and pod to a Service's pod) crosses the bridge, and bridged traffic goes
    # through iptables' FORWARD chain, whose policy Docker sets to DROP: accept it, as Docker
    # does for its own bridge. Without this every pod-to-pod connection timed out.
    check = ["iptables", "-C", *_FORWARD_WITHIN_BRIDGE]
    if subprocess.run(check, capture_output=True, check=False, timeout=60).returncode != 0:
        _run("iptables", "-I", *_FORWARD_WITHIN_BRIDGE)


_FORWARD_WITHIN_BRIDGE = ("FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")


def remove_kube_chains() -> None:
    """Delete every ``KUBE-`` iptables chain (kubelet's and kube-proxy's) and the jumps to them,
    leaving every other rule of the machine (Docker's) alone."""
    for command in ("iptables", "ip6tables"):
        if shutil.which(command) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = _run(command, "-t", table, "-S", check=False).splitlines()
            for rule in rules:
                parts = shlex.split(rule)
                if (
                    parts[:1] == ["-A"]
                    and not parts[1].startswith("KUBE-")
                    and any(p.startswith("KUBE-") for p in parts)
                ):
                    _run(command, "-t", table, "-D", *parts[1:], check=False)
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for chain in chains:
                _run(command, "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(command, "-t", table, "-X", chain, check=False)


def _remove_bridge() -> None:
    _run("iptables", "-D", *_FORWARD_WITHIN_BRIDGE, check=False)
    _run("ip", "link", "delete", BRIDGE, check=False)


def one_binary_image(name: str, binary: Path, entrypoint: list[str], user: str) -> str:
    """Image ``name``: a root holding ``binary`` alone, at ``entrypoint[0]``, run as ``user``
    (the shape of a distroless static image, for a static executable); made by ``docker
    import``, so nothing is pulled. Made again when the binary changed."""
    inside = entrypoint[0].lstrip("/")
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    found = _run(
        "docker", "image", "inspect", "--format",
        "{{ index .Config.Labels \"dev.heatshift.e2e.binary\" }}", name, check=False,
    )  # fmt: skip
    if found.strip() == digest:
        return name
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(binary, Path(scratch) / inside)
        tar = subprocess.run(
            ["tar", "-C", scratch, "-c", inside], capture_output=True, check=True
        ).stdout
    _run(
        "docker", "import",
        "--change", f"ENTRYPOINT {json.dumps(entrypoint)}",
        "--change", f"USER {user}",
        "--change", f"LABEL dev.heatshift.e2e.binary={digest}",
        "-", name,
        stdin=tar,
    )  # fmt: skip
    return name


def pause_image() -> str:
    """The sandbox image: Debian's static catatonit, alone, in pause mode."""
    return one_binary_image(PAUSE_IMAGE, CATATONIT, ["/catatonit", "-P"], "65535:65535")


class PodControlPlane(harness.LocalControlPlane):
    """The local control plane on the bridge's address, plus one real node
    (containerd + kubelet + kube-proxy): the operator runs as the chart's pods."""

    in_cluster_operator = True
    address = BRIDGE_ADDRESS
    controllers = (
        *harness.LocalControlPlane.controllers,
        # kube-proxy routes a Service to what its EndpointSlices say.
        "endpointslice-controller",
    )

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.image = image.IMAGE
        """The operator image the chart runs (built and loaded by :meth:`start_node`)."""
        # Sockets have a 108-byte path limit: the node's runtime state lives in a short path.
        self.node_dir = Path(tempfile.mkdtemp(prefix="heatshift-e2e-node-"))
        self.containerd_socket = self.node_dir / "containerd.sock"
        self.kubelet: harness.Process | None = None

    def serving_cert_addresses(self) -> tuple[str, ...]:
        # In a pod the client library connects to the kubernetes Service's address.
        return (*super().serving_cert_addresses(), BRIDGE_ADDRESS, SERVICE_IP)

    def api_server_flags(self) -> list[str]:
        return [
            *super().api_server_flags(),
            # For kubectl logs and exec: the API server's own client certificate at the kubelet.
            f"--kubelet-client-certificate={self.pki / 'apiserver-kubelet.crt'}",
            f"--kubelet-client-key={self.pki / 'apiserver-kubelet.key'}",
            # The node's name resolves nowhere: reach its kubelet by its address, as kubeadm does.
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer, as kubeadm sets it up: the API server proxies an
            # APIService's requests (Kueue's visibility API) with this client certificate and
            # the caller's identity in these headers, which the extension server trusts.
            f"--requestheader-client-ca-file={self.pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self.pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={self.pki / 'front-proxy-client.key'}",
        ]

    def start(self) -> PodControlPlane:
        self.start_api_server()
        self.start_controllers()
        self.start_node()
        return self

    def start_api_server(self) -> PodControlPlane:
        _ensure_bridge()  # before the API server listens on its address
        self.pki.mkdir(parents=True)
        harness.make_ca(self.pki)
        make_client_cert(self.pki, "apiserver-kubelet", "kube-apiserver-kubelet", "system:masters")
        make_client_cert(self.pki, "kubelet", f"system:node:{NODE_NAME}", "system:nodes")
        make_client_cert(self.pki, "front-proxy-client", "front-proxy-client", "front-proxy")
        super().start_api_server()
        return self

    def site_nodes(self) -> list[harness.Obj]:
        return virtual(super().site_nodes())

    def start_for_the_chart_only(self) -> None:
        """After the API server (and kwok): only what the chart's pods need, for a benchmark
        whose Jobs must not be run by a Job controller: Deployments, ServiceAccount tokens,
        Services' endpoints, the scheduler and the node."""
        self.start_controller_manager(
            (
                "deployment-controller",
                "replicaset-controller",
                "serviceaccount-controller",
                "serviceaccount-token-controller",
                "root-ca-certificate-publisher-controller",
                "endpointslice-controller",
                "garbage-collector-controller",
                # It lifts the not-ready taint a node registers with, once the node is Ready.
                "node-lifecycle-controller",
            )
        )
        harness.wait_for(
            "the default ServiceAccount", self._default_service_account, harness.STARTUP_TIMEOUT_S
        )
        self.start_node()

    def pod_log(self, pod: harness.Obj, container: str) -> Path:
        """Where kubelet writes ``container``'s output (first run), on this machine."""
        meta = pod["metadata"]
        return (
            self.node_dir / "pod-logs" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
            / container / "0.log"
        )  # fmt: skip

    # --- the node ---------------------------------------------------------------------------

    def start_node(self) -> None:
        # Kubelets are bound to their ClusterRole by this binding on kubeadm clusters, too.
        self.admin.apply(
            harness.manifests(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": "heatshift-e2e-nodes"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "system:node",
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "Group",
                            "name": "system:nodes",
                        }
                    ],
                }
            )
        )
        self._start_containerd()
        self.load_image(pause_image())
        self.image = image.build()
        self.load_image(self.image)
        self._start_kubelet()
        self._start_kube_proxy()
        harness.wait_for(
            f"node {NODE_NAME} Ready",
            lambda: self._node_ready(NODE_NAME),
            harness.STARTUP_TIMEOUT_S,
        )

    def _node_ready(self, name: str) -> bool:
        self.check_alive()
        node = self.admin.get("node", name)
        return harness.condition_true(node, "Ready")

    def ctr(self, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
        return _run(
            "ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args,
            stdin=stdin, check=check,
        )  # fmt: skip

    def load_image(self, name: str) -> None:
        """``name`` from Docker into the node's containerd, where kubelet finds it."""
        saved = subprocess.run(["docker", "save", name], capture_output=True, check=True).stdout
        self.ctr("images", "import", "--no-unpack=false", "-", stdin=saved)

    def _start_containerd(self) -> None:
        cni_conf = self.node_dir / "cni"
        cni_conf.mkdir()
        (cni_conf / "10-heatshift-e2e.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "heatshift-e2e",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isDefaultGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_ADDRESS}]],
                                "dataDir": str(self.node_dir / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                }
            )
        )
        config = f"""\
version = 2
root = "{self.node_dir / "root"}"
state = "{self.node_dir / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  # kubelet asks for -998 for every sandbox; a machine that is itself a container may not
  # lower a score below its own (no CAP_SYS_RESOURCE), as kind's rootless nodes cannot.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_conf}"
"""
        (self.node_dir / "containerd.toml").write_text(config)
        containerd = self._spawn(
            "containerd", ["containerd", "--config", str(self.node_dir / "containerd.toml")]
        )

        def answers() -> bool:
            containerd.check_alive()
            return self.ctr("version", check=False) != ""

        harness.wait_for("containerd", answers, harness.STARTUP_TIMEOUT_S)

    def _start_kubelet(self) -> None:
        kubeconfig = self.work / "kubelet.kubeconfig"
        kubeconfig.write_text(cert_kubeconfig(self.server, self.pki, "kubelet"))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": BRIDGE_ADDRESS,
            "port": harness.free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": harness.free_port(),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "failSwapOn": False,
            # A shared test machine's disk and memory are not this node's to guard.
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            # Its canary and firewall chains would outlive the run; kube-proxy has its own.
            "makeIPTablesUtilChains": False,
            "maxPods": 20,
            "podLogsDir": str(self.node_dir / "pod-logs"),
        }
        (self.work / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self.kubelet = self._spawn(
            "kubelet",
            [
                harness.tool("kubelet"),
                f"--config={self.work / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.node_dir / 'kubelet'}",
                f"--cert-dir={self.node_dir / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={BRIDGE_ADDRESS}",
            ],
        )

    def _start_kube_proxy(self) -> None:
        healthz = f"127.0.0.1:{harness.free_port()}"
        proxy = self._spawn(
            "kube-proxy",
            [
                harness.tool("kube-proxy"),
                f"--kubeconfig={self.admin.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_SUBNET}",
                f"--healthz-bind-address={healthz}",
                f"--metrics-bind-address=127.0.0.1:{harness.free_port()}",
                # Leave the machine's conntrack table size alone (kind does the same).
                "--conntrack-max-per-core=0",
            ],
        )
        # Healthy once its rules are in: before that a pod cannot reach the API server through
        # the kubernetes Service, and the operator exits (and restarts) at its login.
        harness.wait_for(
            "kube-proxy's first sync",
            lambda: proxy.serving(f"http://{healthz}/healthz"),
            harness.STARTUP_TIMEOUT_S,
        )

    def container_pids(self, pod: harness.Obj, container: str) -> list[int]:
        """The host's process ids of ``container`` of ``pod`` (running on the real node), from
        the container's memory cgroup (kubelet's cgroupfs layout: kubepods/<qos>/pod<uid>/<id>)."""
        (status,) = [
            s for s in pod["status"].get("containerStatuses") or [] if s["name"] == container
        ]
        container_id = str(status.get("containerID", "")).rpartition("://")[2]
        found = list(
            Path("/sys/fs/cgroup/memory").glob(
                f"**/pod{pod['metadata']['uid']}/{container_id}/cgroup.procs"
            )
        )
        if not container_id or not found:
            raise harness.HarnessError(f"no cgroup for container {container} of the pod")
        return [int(line) for line in found[0].read_text().split()]

    def process_status(self, pid: int) -> dict[str, list[str]]:
        """``/proc/<pid>/status`` of a process on the node, field by field."""
        fields = (
            line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        return {key: value.split() for key, _, value in fields}

    # --- teardown ---------------------------------------------------------------------------

    def stop(self) -> None:
        # The pods' own output (operator replicas, the meter), kept with the run's other logs
        # before the drain (kubelet deletes a pod's logs with it): a failure seen after teardown
        # can still be read.
        pod_logs = self.node_dir / "pod-logs"
        if pod_logs.is_dir():
            shutil.copytree(pod_logs, self.logs / "pod-logs", dirs_exist_ok=True)
        try:
            self._drain_node()
        finally:
            super().stop()
            self._clean_up_node()

    def _drain_node(self) -> None:
        """Delete every pod on the real node and let kubelet tear each one down (containers,
        network namespaces, volume mounts), while it still runs."""
        if self.kubelet is None or not self.kubelet.running:
            return
        # Their controllers would recreate the pods (and the drain then never ends): first
        # the Deployments and ReplicaSets, the pods' owners, then the pods themselves.
        self.admin.run(
            "delete", "deployments,replicasets", "--all-namespaces", "--all", "--wait=false",
            check=False,
        )  # fmt: skip
        self.admin.run(
            "delete", "pods", "--all-namespaces", "--field-selector", f"spec.nodeName={NODE_NAME}",
            "--grace-period=0", "--force", "--wait=false", check=False,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.ctr("tasks", "list", "--quiet", check=False).strip() == "":
                return
            time.sleep(1)

    def _clean_up_node(self) -> None:
        # Whatever kubelet did not tear down: containers outlive containerd in their shims.
        subprocess.run(["pkill", "-9", "-f", f"containerd-shim.*{self.node_dir}"], check=False)
        # A container's processes outlive a killed shim (they are the init process's then):
        # end whatever is still in the pods' cgroups, which only this node's kubelet makes.
        for procs in Path("/sys/fs/cgroup/pids/kubepods").glob("**/cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        remove_kube_chains()
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.node_dir))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", mount, check=False)
        for netns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else []:
            _run("ip", "netns", "delete", netns.name, check=False)
        _remove_bridge()
        # kubelet links every container's log into /var/log/containers, whatever podLogsDir says.
        for link in Path("/var/log/containers").glob("*.log"):
            if link.is_symlink() and str(link.readlink()).startswith(str(self.node_dir)):
                link.unlink()
        shutil.rmtree(self.node_dir, ignore_errors=True)
