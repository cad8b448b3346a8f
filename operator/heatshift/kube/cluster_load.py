"""The IT power actually running at each LeafSite, read from the cluster for the metering server.

:class:`ClusterLoad` is the cluster-backed :class:`heatshift.metering.server.LoadSource` of
``heatshift metering-sim --kubeconfig``: a site's power is its LeafSite's idle watts plus the
power of every pod drawing power on a node its nodeSelector matches, so the simulated tanks
heat up where the operator really placed work. A pod draws power when it is Running, or when
it is bound to a node and belongs to a Job that is running (the kubelet may not have reported
it started yet; simulated nodes may never do so). Its power is its own
``heatshift.dev/power-watts`` hint, else its Job's hint shared among the pods the Job runs at
once (the hint is the whole Job's power, as the planner counts it), else the site's power model
applied to its requests. Scenario sites are matched to LeafSites by name; a scenario site
without one draws its scenario idle power.

:func:`site_watts` is the pure part (API dicts in, watts out); :class:`ClusterLoad` adds the
I/O, a short cache and the "keep the last figure" rule on API errors.
It logs in like every other command (:mod:`heatshift.kube.login`).

Called by :mod:`heatshift.metering.server` (``run_from_args``) and tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from heatshift import model, resources
from heatshift.kube import client, cycle, snapshot, workloads
from heatshift.kube import hints as hints_mod

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 5.0
"""How long a reading of the cluster serves before the next list: the server asks for every
site on every tick and request, far more often than placements change."""

NODES = client.path_for("", "v1", "nodes")
PODS = client.path_for("", "v1", "pods")
JOBS = client.path_for("batch", "v1", "jobs")


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclasses.dataclass(frozen=True, slots=True)
class _Job:
    """What a pod's power needs from the Job that owns it."""

    runs: bool
    """Not suspended and not finished: its bound pods are starting or running."""
    watts_per_pod: float | None
    """Its power hint shared among the pods it runs at once; None without a valid hint."""


def _job(job: Mapping[str, Any]) -> _Job:
    spec = _dict(job.get("spec"))
    parsed = workloads.from_job(job)
    job_hints, _ = hints_mod.parse_hints(parsed.annotations)
    # The pods the Job runs together: its parallelism, at most its completions.
    parallel = spec.get("parallelism")
    completions = spec.get("completions")
    pods = parallel if isinstance(parallel, int) and parallel > 0 else 1
    if isinstance(completions, int) and completions > 0:
        pods = min(pods, completions)
    return _Job(
        runs=spec.get("suspend") is not True and not parsed.finished,
        watts_per_pod=None if job_hints.power_watts is None else job_hints.power_watts / pods,
    )


def _owner(pod: Mapping[str, Any], jobs: Mapping[tuple[str, str], _Job]) -> _Job | None:
    meta = _dict(pod.get("metadata"))
    namespace = str(meta.get("namespace") or "default")
    for ref in meta.get("ownerReferences") or []:
        ref = _dict(ref)
        if ref.get("kind") == "Job":
            return jobs.get((namespace, str(ref.get("name"))))
    return None


def _draws_power(pod: Mapping[str, Any], owner: _Job | None) -> bool:
    """Running, or not finished and owned by a running Job (a bound pod whose start the kubelet
    has not reported yet: simulated nodes may never report it)."""
    phase = _dict(pod.get("status")).get("phase")
    if phase == "Running":
        return True
    return phase not in ("Succeeded", "Failed") and owner is not None and owner.runs


def _pod_watts(pod: Mapping[str, Any], owner: _Job | None, site: model.Site) -> float:
    """The pod's own hint, else its Job's share, else the site's power model on its requests."""
    own, _ = hints_mod.parse_hints(workloads.from_pod(pod).annotations)
    if own.power_watts is not None:
        return own.power_watts
    if owner is not None and owner.watts_per_pod is not None:
        return owner.watts_per_pod
    return site.job_watts(workloads.pod_resources(_dict(pod.get("spec"))), None)


@dataclasses.dataclass(frozen=True)
class SiteWatts:
    """One reading of the cluster's load."""

    watts: Mapping[str, float]
    """IT power by LeafSite name, W."""
    problems: tuple[str, ...] = ()
    """LeafSites left out, and why, in words."""
    pods: int = 0
    """Pods found drawing power on some node, whether or not a LeafSite selects it."""


def site_watts(
    leafsites: Sequence[resources.LeafSite],
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
) -> SiteWatts:
    """IT power per LeafSite: idle plus every pod drawing power on one of its nodes.

    A node that several LeafSites select counts at each, as their capacity does in a snapshot.
    A LeafSite whose spec makes no valid site is left out, with a problem saying why.
    """
    parsed_nodes = [workloads.from_node(n) for n in nodes]
    by_key: dict[tuple[str, str], _Job] = {}
    for job in jobs:
        meta = _dict(job.get("metadata"))
        by_key[(str(meta.get("namespace") or "default"), str(meta.get("name")))] = _job(job)
    # Per node: the power model's inputs of each pod drawing power there.
    on_node: dict[str, list[tuple[Mapping[str, Any], _Job | None]]] = {}
    for pod in pods:
        node = _dict(pod.get("spec")).get("nodeName")
        owner = _owner(pod, by_key)
        if isinstance(node, str) and node and _draws_power(pod, owner):
            on_node.setdefault(node, []).append((pod, owner))
    watts: dict[str, float] = {}
    problems: list[str] = []
    for leafsite in leafsites:
        try:
            site = leafsite.to_site(snapshot.site_capacity(leafsite.spec, parsed_nodes))
        except resources.ResourceError as err:
            problems.append(f"LeafSite/{leafsite.metadata.name} ignored: {err}")
            continue
        selector = leafsite.spec.node_selector
        total = site.power.idle_watts
        for node in parsed_nodes:
            if all(node.labels.get(k) == v for k, v in selector.items()):
                total += sum(_pod_watts(p, o, site) for p, o in on_node.get(node.name, ()))
        watts[site.name] = total
    pods_drawing = sum(len(on) for on in on_node.values())
    return SiteWatts(watts=watts, problems=tuple(problems), pods=pods_drawing)


async def read_site_watts(api: client.KubeApi) -> SiteWatts:
    """:func:`site_watts` for the cluster as it is now; a LeafSite that does not parse is left
    out with a problem, rather than stopping the others."""
    raw_sites, nodes, pods, jobs = await asyncio.gather(
        api.list_objects(cycle.LEAFSITES),
        api.list_objects(NODES),
        api.list_objects(PODS),
        api.list_objects(JOBS),
    )
    invalid: dict[str, str] = {}
    # The cycle's parser, so a LeafSite counts here exactly when the operator plans with it.
    parsed = cycle._parse(raw_sites, "LeafSite", invalid)
    leafsites = [r for r in parsed if isinstance(r, resources.LeafSite)]
    found = site_watts(leafsites, nodes, pods, jobs)
    unparsed = tuple(f"{name} ignored: {why}" for name, why in invalid.items())
    return dataclasses.replace(found, problems=unparsed + found.problems)


class ClusterLoad:
    """IT power per scenario site from the cluster, re-read at most every ``refresh_s``.

    Until the first good read, and for scenario sites without a LeafSite, a site draws its
    scenario idle power. When the API fails, the last figures stay: the tanks keep the load
    last seen rather than dropping to idle because the API server blinked.
    """

    def __init__(
        self,
        api: client.KubeApi,
        sites: Iterable[model.Site],
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not refresh_s >= 0:
            raise ValueError(f"refresh interval must be >= 0, got {refresh_s}")
        self._api = api
        self._idle = {s.name: s.power.idle_watts for s in sites}
        self._watts = dict(self._idle)
        self._refresh_s = refresh_s
        self._clock = clock
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self._unmatched: set[str] = set()
        self._reported: set[str] = set()  # problems already logged: each once, not per read
        self._failing: str | None = None
        self._last_seen: tuple[int, int, int] | None = None  # what the last read logged

    async def it_power_watts(self, site: str) -> float:
        await self.refresh()
        return self._watts.get(site, 0.0)

    async def refresh(self) -> None:
        """Read the cluster unless a read is younger than the interval. Never raises an API
        error: it is logged (once per distinct error) and the last figures are kept."""
        async with self._lock:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._refresh_s:
                return
            # Set before reading, so a failing API is retried per interval, not per request.
            self._read_at = now
            try:
                found = await read_site_watts(self._api)
            except client.KubeAPIError as err:
                if str(err) != self._failing:
                    log.warning("cluster load unreadable, keeping the last figures: %s", err)
                self._failing = str(err)
                return
            if self._failing is not None:
                log.info("cluster load readable again")
                self._failing = None
            seen = (found.pods, len(found.watts), len(self._idle))
            if seen != self._last_seen:
                # Said when it changes, not every read: what the tanks are heated from.
                self._last_seen = seen
                log.info(
                    "cluster load: %d pods drawing power, %d LeafSites read, %.0f W in all",
                    found.pods,
                    len(found.watts),
                    sum(found.watts.values()),
                )
            for problem in found.problems:
                if problem not in self._reported:
                    self._reported.add(problem)
                    log.warning("cluster load: %s", problem)
            for name, idle in self._idle.items():
                if name in found.watts:
                    self._watts[name] = found.watts[name]
                    self._unmatched.discard(name)
                    continue
                self._watts[name] = idle
                if name not in self._unmatched:
                    self._unmatched.add(name)
                    log.warning(
                        "cluster load: scenario site %r has no LeafSite; it draws idle power",
                        name,
                    )
