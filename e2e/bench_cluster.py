"""The cluster benchmark (``make bench-cluster``): the operator at fleet scale on a real API server.

Starts the e2e suite's local control plane (etcd, kube-apiserver with an audit log of the
operator's requests, kwok running one simulated node per site; no controller-manager, so no Job
runs a pod and nothing but the operator changes a Job), installs the chart, and creates (at
``--scale 1``) 200 LeafSites, three HeatPolicies, 10,000 held Jobs across them and 40,000
finished Jobs (created concurrently, marked finished through the status subresource). Then it
runs the operator as a process and measures, from the operator's cycle log lines, the API
server's audit log and ``/proc``:

- each cycle phase's time (read, meter, snapshot, plan, decide, release, report), idle and busy;
- releases per second (released Jobs over the release phases' time), over two rounds: the
  first cycles, then again after the released Jobs were marked finished (freeing the sites);
- the operator's API requests per idle cycle (by verb) and per release;
- the operator's peak RSS (VmHWM);
- how long a new Job takes from its creation to being held (the webhook's hold, inside the
  create request), and to being released by the operator when it is due at once.

The sites' metering endpoint does not answer, so every plan is heat-unaware and releases
whatever fits now: the point is the operator's own cost, not the planner's quality (``heatshift
bench planner`` measures that). Prints the figures beside the issue's targets and writes them to
``.cache/bench-cluster.json``; asserts nothing. At ``--scale`` below 1 every count but the sites
is scaled, and the output says which scale was measured.

With ``--image`` the operator runs from its image in a container as the chart runs it; with
``--pods`` as the chart's own pod on a real node (``e2e/real_node.py``: containerd, kubelet,
kube-proxy), started by ``helm upgrade --set replicaCount=1`` once the Jobs exist, so its RSS
is measured in the pod, under the chart's resource limits, and its start-up is the time to Ready.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import image
import real_node

from heatshift.kube import apply, login
from heatshift.kube import client as kube_client

OUT = harness.ROOT / ".cache" / "bench-cluster.json"
POLICIES = ("bench-a", "bench-b", "bench-c")
POLICY_LABEL = "bench.heatshift.dev/policy"
CPU_PER_SITE = 4
"""Each site's one node takes four one-CPU Jobs: the first cycles release 4 per site, the rest
stay held, so later cycles are idle with every Job still in the view."""
REPLAN = "20s"
CREATE_IN_FLIGHT = 48
CYCLE_LINE = re.compile(r"cycle policy=(\S+) held=(\d+) running=(\d+) .* releases=(\d+) ")
TIMING = re.compile(r" (\w+)_s=([0-9.]+)")
PHASES = ("read", "meter", "snapshot", "plan", "decide", "release", "report")
TARGETS = {
    "idle_cycle_list_requests": "0",
    "idle_cycle_read_seconds": "< 0.050",
    "releases_per_second": ">= 100",
    "peak_rss_bytes": "< 500 MiB",
}


@dataclasses.dataclass(frozen=True)
class Cycle:
    policy: str
    held: int
    running: int
    releases: int
    timings: dict[str, float]
    seen_s: float
    """When the benchmark read the cycle's log line (wall clock)."""


class OperatorLog:
    """The operator's cycle lines, read as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.cycles: list[Cycle] = []
        self.lines: list[tuple[float, str]] = []

    def poll(self) -> list[Cycle]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        now = time.time()
        new: list[Cycle] = []
        for line in chunk[:end].decode(errors="replace").splitlines():
            self.lines.append((now, line))
            m = CYCLE_LINE.search(line)
            if m is None:
                continue
            timings = {k: float(v) for k, v in TIMING.findall(line) if k in PHASES}
            new.append(Cycle(m[1], int(m[2]), int(m[3]), int(m[4]), timings, now))
        self.cycles += new
        return new

    def wait(self, what: str, done: Callable[[list[Cycle]], bool], timeout_s: float) -> None:
        harness.wait_for(what, lambda: (self.poll(), done(self.cycles))[1], timeout_s, 0.2)


def _ns(policy: str) -> str:
    return f"{policy}-jobs"


def _site(i: int) -> str:
    return f"site-{i:03d}"


def leafsite(i: int, metering_url: str) -> harness.Obj:
    return {
        "apiVersion": "heatshift.dev/v1alpha1",
        "kind": "LeafSite",
        "metadata": {"name": _site(i)},
        "spec": {
            "nodeSelector": {harness.SITE_LABEL: _site(i)},
            "power": {"idleWatts": 300, "wattsPerCPU": 10},
            "heatRecoveryEfficiency": 0.85,
            "tank": {"capacityKWh": 40, "lossPerHour": 0.01},
            "offtaker": {"kind": "pool", "maxThermalKW": 40},
            "metering": {"http": {"url": metering_url, "siteId": _site(i), "timeoutSeconds": 1}},
        },
    }


def heatpolicy(name: str) -> harness.Obj:
    return {
        "apiVersion": "heatshift.dev/v1alpha1",
        "kind": "HeatPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {POLICY_LABEL: name}},
            "selector": {"matchLabels": {}},
            "slaClasses": [{"name": "batch", "maxDelay": "12h", "priority": 1}],
            "defaultSLAClass": "batch",
            "planning": {
                "horizon": "6h",
                "step": "15m",
                "replanInterval": REPLAN,
                "solverTimeLimit": "5s",
            },
        },
    }


def job(name: str, namespace: str, *, max_delay: str | None = None) -> harness.Obj:
    annotations = {"heatshift.dev/expected-duration": "1h"}
    if max_delay is not None:
        annotations["heatshift.dev/max-delay"] = max_delay
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "suspend": True,
            "completions": 1,
            "parallelism": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "work",
                            "image": "registry.invalid/bench/work:1",
                            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                        }
                    ],
                }
            },
        },
    }


def finished_status(now_s: float) -> harness.Obj:
    """A Job status the API server accepts as Complete (1.34 checks the conditions agree)."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s))
    return {
        "status": {
            "startTime": at,
            "completionTime": at,
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": at},
                {"type": "Complete", "status": "True", "lastTransitionTime": at},
            ],
        }
    }


def jobs_path(namespace: str, name: str | None = None) -> str:
    return kube_client.path_for("batch", "v1", "jobs", namespace=namespace, name=name)


async def _bounded(items: Sequence[Any], fn: Callable[[Any], Awaitable[None]]) -> None:
    await apply.run_bounded(items, fn, limit=CREATE_IN_FLIGHT)


async def create_jobs(
    api: kube_client.Client, names: Sequence[tuple[str, str]], *, finished: bool
) -> float:
    """Create the Jobs (and mark them finished); returns the seconds it took."""
    started = time.monotonic()

    async def one(item: tuple[str, str]) -> None:
        namespace, name = item
        body = job(name, namespace)
        if finished:
            # Not suspended (a suspended Job cannot be Complete); with no Job controller in the
            # benchmark's control plane it never gets a pod.
            body["spec"]["suspend"] = False
        await api.create(jobs_path(namespace), body)
        if finished:
            await api.patch(f"{jobs_path(namespace, name)}/status", finished_status(time.time()))

    await _bounded(names, one)
    return time.monotonic() - started


async def finish(api: kube_client.Client, names: Iterable[tuple[str, str]]) -> None:
    async def one(item: tuple[str, str]) -> None:
        namespace, name = item
        await api.patch(f"{jobs_path(namespace, name)}/status", finished_status(time.time()))

    await _bounded(list(names), one)


def _released(obj: harness.Obj) -> bool:
    return (obj.get("spec") or {}).get("suspend") is False


async def released_jobs(api: kube_client.Client) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for policy in POLICIES:
        for obj in await api.list_objects(jobs_path(_ns(policy))):
            meta = obj.get("metadata") or {}
            annotations = meta.get("annotations") or {}
            if _released(obj) and "heatshift.dev/released-at" in annotations:
                conditions = (obj.get("status") or {}).get("conditions") or []
                if not any(c.get("type") == "Complete" for c in conditions):
                    out.append((_ns(policy), str(meta.get("name"))))
    return out


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _requests(cluster: harness.LocalControlPlane, start_s: float, end_s: float) -> Counter[str]:
    return Counter(r.verb for r in harness.audited(cluster.audit_log) if start_s <= r.at_s <= end_s)


def _release_requests(cluster: harness.LocalControlPlane, since_s: float) -> float:
    """The operator's requests per Job released: those on one Job (read, patch) or posting an
    Event, over its patches of a Job that succeeded (each one a release)."""
    requests = released = 0
    for r in harness.audited(cluster.audit_log):
        if r.at_s < since_s:
            continue
        on_job = "/jobs/" in r.uri
        if on_job or r.uri.split("?")[0].endswith("/events"):
            requests += 1
        released += on_job and r.verb == "patch" and r.code == 200
    return requests / max(released, 1)


def _summary(cycles: Sequence[Cycle]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        values = [c.timings[phase] for c in cycles if phase in c.timings]
        if values:
            out[phase] = {
                "median": statistics.median(values),
                "max": max(values),
                "cycles": float(len(values)),
            }
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scale: float = args.scale
    n_sites: int = args.sites
    n_held = max(3, round(10_000 * scale))
    n_finished = round(40_000 * scale)
    results: dict[str, Any] = {
        "scale": scale,
        "sites": n_sites,
        "held_jobs": n_held,
        "finished_jobs": n_finished,
        "policies": len(POLICIES),
    }
    built_image = image.build() if args.image else None
    if args.pods:
        why_not = real_node.missing()
        if why_not is not None:
            raise SystemExit(f"bench-cluster --pods: {why_not}")
    with harness.work_directory() as work:
        print(f"bench-cluster: work directory (logs) {work}", file=sys.stderr)
        cluster = real_node.PodControlPlane(work) if args.pods else harness.LocalControlPlane(work)
        hs = harness.Heatshift(cluster)
        try:
            cluster.start_api_server()
            sites = tuple(_site(i) for i in range(n_sites))
            nodes = harness.site_nodes(sites, per_site=1, cpu=str(CPU_PER_SITE))
            cluster.start_kwok(real_node.virtual(nodes) if args.pods else nodes)
            if isinstance(cluster, real_node.PodControlPlane):
                cluster.start_for_the_chart_only()
                # No replica yet: it starts once the Jobs exist, as the local process does.
                hs.install_chart("replicaCount=0", wait=False)
            else:
                hs.install_chart(wait=False)
            namespaces = [
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": _ns(p), "labels": {POLICY_LABEL: p}},
                }
                for p in POLICIES
            ]
            # Nothing answers here: every site plans heat-unaware.
            metering = f"http://127.0.0.1:{harness.free_port()}/v1"
            hs.kube.apply(
                harness.manifests(
                    *namespaces,
                    *(leafsite(i, metering) for i in range(n_sites)),
                    *(heatpolicy(p) for p in POLICIES),
                )
            )
            async with await login.connect(cluster.admin.kubeconfig) as session:
                api = session.api
                finished = [
                    (_ns(POLICIES[i % len(POLICIES)]), f"done-{i:05d}") for i in range(n_finished)
                ]
                held = [(_ns(POLICIES[i % len(POLICIES)]), f"held-{i:05d}") for i in range(n_held)]
                took = await create_jobs(api, finished, finished=True)
                print(f"bench-cluster: {n_finished} finished Jobs in {took:.0f}s", file=sys.stderr)
                took = await create_jobs(api, held, finished=False)
                print(f"bench-cluster: {n_held} held Jobs in {took:.0f}s", file=sys.stderr)
                results.update(await _measure(hs, cluster, api, n_sites, built_image))
        finally:
            hs.stop()
            cluster.stop()
    return results


@dataclasses.dataclass
class PodOperator:
    """The chart's one operator pod on the real node: its log file and its process."""

    log: Path
    pid: int


def start_operator_pod(hs: harness.Heatshift, cluster: real_node.PodControlPlane) -> PodOperator:
    hs.cluster.helm(
        "upgrade", harness.RELEASE, str(harness.CHART), "--namespace", harness.NAMESPACE,
        "--reuse-values", "--set", "replicaCount=1",
    )  # fmt: skip

    def ready() -> harness.Obj | None:
        found = hs.kube.items("pods", harness.NAMESPACE, selector=harness.OPERATOR_SELECTOR)
        ok = [p for p in found if harness.condition_true(p, "Ready")]
        return ok[0] if ok else None

    # Not helm's --wait: with the chart's maxUnavailable of 1 it is content with no pod Ready.
    pod = harness.wait_for("the operator pod Ready", ready, 900.0, interval_s=0.2)
    pid = cluster.container_pids(pod, "operator")[0]
    return PodOperator(cluster.pod_log(pod, "operator"), pid)


def _operator_pid(operator: harness.Process) -> int:
    """The operator's own process: the child, or the container's first process."""
    if isinstance(operator, harness.ContainerProcess):
        out = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Pid}}", operator.container],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip())
    assert operator.popen is not None
    return operator.popen.pid


async def _measure(
    hs: harness.Heatshift,
    cluster: harness.LocalControlPlane,
    api: kube_client.Client,
    n_sites: int,
    built_image: str | None,
) -> dict[str, Any]:
    started_s = time.time()
    where: str | None
    if isinstance(cluster, real_node.PodControlPlane):
        pod = start_operator_pod(hs, cluster)
        pid, log = pod.pid, OperatorLog(pod.log)
        where = f"the chart's pod ({cluster.image})"
    else:
        operator = hs.start_operator(image=built_image)
        pid, log = _operator_pid(operator), OperatorLog(operator.log)
        where = f"its image's container ({built_image})" if built_image else None
    results: dict[str, Any] = {
        "operator_start_to_healthy_seconds": time.time() - started_s,
        # (in a pod: to Ready, which the chart's probe says once Kopf serves its health check)
        "operator_runs_in": where,
    }
    timeout = 900.0

    def per_policy(pred: Callable[[Cycle], bool], count: int) -> Callable[[list[Cycle]], bool]:
        return lambda cs: all(
            sum(1 for c in cs if c.policy == p and pred(c)) >= count for p in POLICIES
        )

    # Round 1: the first cycles release what the sites take now.
    await asyncio.to_thread(
        log.wait, "a first cycle of every policy", per_policy(lambda c: True, 1), timeout
    )
    await asyncio.to_thread(
        log.wait, "an idle cycle of every policy", per_policy(lambda c: c.releases == 0, 1), timeout
    )
    busy = [c for c in log.cycles if c.releases > 0]

    # Idle cycles: nothing new, every Job still in the view.
    idle_from = time.time()
    mark = len(log.cycles)
    await asyncio.to_thread(
        log.wait,
        "three idle cycles of every policy",
        lambda cs: all(sum(1 for c in cs[mark:] if c.policy == p) >= 3 for p in POLICIES),
        timeout,
    )
    idle_to = time.time()
    idle = [c for c in log.cycles[mark:] if c.releases == 0]
    idle_requests = _requests(cluster, idle_from, idle_to)
    cycles_in_window = len(log.cycles[mark:])

    # Round 2: the released Jobs finish (they leave the view), the sites take more of the
    # policies that still hold some.
    still = {c.policy for c in log.cycles[mark:] if c.held > 0}
    running = await released_jobs(api)
    round2_from = time.time()
    await finish(api, running)
    mark2 = len(log.cycles)
    await asyncio.to_thread(
        log.wait,
        "every policy with held Jobs releasing again, then an idle cycle of every policy",
        lambda cs: all(
            (p not in still or any(c.policy == p and c.releases > 0 for c in cs[mark2:]))
            and any(c.policy == p and c.releases == 0 for c in cs[mark2:])
            for p in POLICIES
        ),
        timeout,
    )
    results["running_in_view_after_finish"] = min(
        (c.running for c in log.cycles[mark2:]), default=None
    )
    round2_to = time.time()
    busy2 = [c for c in log.cycles[mark2:] if c.releases > 0]
    busy_all = busy + busy2
    released = sum(c.releases for c in busy_all)
    release_s = sum(c.timings.get("release", 0.0) for c in busy_all)
    round2_requests = _requests(cluster, round2_from, round2_to)

    # A new Job while the operator runs: held by the webhook at creation, due at once. The
    # sites are full: the Jobs of round 2 finish first, so that the probe has room.
    await finish(api, await released_jobs(api))
    probe_ns = _ns(POLICIES[0])
    body = job("probe", probe_ns, max_delay="0s")
    body["spec"].pop("suspend")
    t0 = time.time()
    created = await api.create(jobs_path(probe_ns), body)
    hold_s = time.time() - t0
    held_by_webhook = (created.get("spec") or {}).get("suspend") is True

    while not _released(await api.get(jobs_path(probe_ns, "probe"))):
        if time.time() - t0 > timeout:
            raise harness.HarnessError("the probe Job was never released")
        await asyncio.sleep(0.1)
    release_latency_s = time.time() - t0

    idle_reads = [c.timings["read"] for c in idle if "read" in c.timings]
    results.update(
        {
            "idle_cycle_read_seconds": statistics.median(idle_reads) if idle_reads else None,
            "idle_cycle_read_seconds_max": max(idle_reads) if idle_reads else None,
            "idle_cycle_list_requests": idle_requests.get("list", 0) / max(cycles_in_window, 1),
            "idle_cycle_requests_by_verb": {
                verb: n / max(cycles_in_window, 1) for verb, n in sorted(idle_requests.items())
            },
            "idle_cycles_measured": cycles_in_window,
            "releases": released,
            "release_phase_seconds": release_s,
            "releases_per_second": released / release_s if release_s else None,
            "requests_per_release": _release_requests(cluster, started_s),
            "requests_by_verb_round2": dict(sorted(round2_requests.items())),
            "peak_rss_bytes": peak_rss_bytes(pid),
            "creation_to_hold_seconds": hold_s,
            "held_by_webhook": held_by_webhook,
            "creation_to_release_seconds_due_job": release_latency_s,
            "phases_idle": _summary(idle),
            "phases_busy": _summary(busy_all),
            "sites_in_plan": n_sites,
        }
    )
    return results


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def report(r: dict[str, Any]) -> str:
    mib = r["peak_rss_bytes"] / 2**20
    lines = [
        f"heatshift bench-cluster at scale {r['scale']:g}: {r['sites']} sites (kwok nodes), "
        f"{r['held_jobs']} held + {r['finished_jobs']} finished Jobs, {r['policies']} HeatPolicies",
        "",
        f"{'phase':<10} {'idle median s':>14} {'idle max s':>11} {'busy median s':>14} "
        f"{'busy max s':>11}",
    ]
    for phase in PHASES:
        idle = r["phases_idle"].get(phase, {})
        busy = r["phases_busy"].get(phase, {})
        lines.append(
            f"{phase:<10} {_fmt(idle.get('median')):>14} {_fmt(idle.get('max')):>11} "
            f"{_fmt(busy.get('median')):>14} {_fmt(busy.get('max')):>11}"
        )
    lines += [
        "",
        f"{'measure':<44} {'measured':>14}   target",
        f"{'idle cycle: list requests per cycle':<44} "
        f"{_fmt(r['idle_cycle_list_requests']):>14}   {TARGETS['idle_cycle_list_requests']}",
        f"{'idle cycle: read phase (median) s':<44} "
        f"{_fmt(r['idle_cycle_read_seconds']):>14}   {TARGETS['idle_cycle_read_seconds']}",
        f"{'releases per second':<44} {_fmt(r['releases_per_second']):>14}   "
        f"{TARGETS['releases_per_second']}",
        f"{'operator peak RSS MiB':<44} {mib:>14.1f}   {TARGETS['peak_rss_bytes']}"
        + (f" (in {r['operator_runs_in']})" if r["operator_runs_in"] else ""),
        f"{'operator start to healthy (Ready in a pod) s':<44} "
        f"{_fmt(r['operator_start_to_healthy_seconds']):>14}",
        f"{'idle cycle: all requests per cycle':<44} "
        f"{sum(r['idle_cycle_requests_by_verb'].values()):>14.1f}   "
        + ", ".join(f"{k} {v:.1f}" for k, v in r["idle_cycle_requests_by_verb"].items()),
        f"{'requests per release (Job get/patch, Event)':<44} "
        f"{_fmt(r['requests_per_release']):>14}",
        f"{'releases measured (in release phases s)':<44} {r['releases']:>14}   "
        f"{r['release_phase_seconds']:.2f}s",
        f"{'new Job: creation to hold (webhook) s':<44} "
        f"{_fmt(r['creation_to_hold_seconds']):>14}   held: {r['held_by_webhook']}",
        f"{'new due Job: creation to release s':<44} "
        f"{_fmt(r['creation_to_release_seconds_due_job']):>14}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-cluster", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="fraction of 10,000 held and 40,000 finished Jobs (default 1)",
    )
    parser.add_argument("--sites", type=int, default=200, help="LeafSites, one kwok node each")
    parser.add_argument(
        "--image",
        action="store_true",
        help="run the operator from its image (built by e2e/image.py; needs a Docker engine) "
        "as the chart runs it, 1 GiB limit included, instead of as a process",
    )
    parser.add_argument(
        "--pods",
        action="store_true",
        help="run the operator as the chart's pod on a real node (e2e/real_node.py; needs root, "
        "Debian's containerd and `e2e/cluster/build.sh node`), measured under the chart's limits",
    )
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1 or not 1 <= args.sites <= 1000:
        parser.error("--scale must be in (0, 1] and --sites in [1, 1000]")
    results = asyncio.run(run(args))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(report(results))
    print(f"\n(also in {OUT.relative_to(harness.ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
