"""The cluster as a planning cycle sees it: small records per object, assembled into a Cluster.

A cycle needs LeafSites, HeatPolicies, Nodes, namespace labels, unfinished Jobs and (when a
policy holds them) bare Pods. Two ways fill that in, and both build the same :class:`Cluster`
through the same functions:

- The operator keeps a **watched view**: Kopf indexes (wired in :mod:`heatshift.handlers`)
  whose index functions are the record functions below (:func:`site_record`,
  :func:`policy_record`, :func:`node_record`, :func:`job_record`, :func:`pod_record`). Each
  stores only what the cycle needs — never a whole body — and a finished Job or Pod leaves the
  view (its record is None), so 40,000 finished Jobs cost no memory and no cycle time. Every
  policy's cycle reads the one shared view through :class:`WatchedReader`: no request to the API
  server at all on an idle cycle. Kopf lists each resource before any handler runs and lists
  again when a watch cannot be resumed, which is the informers' resync.
- ``heatshift plan --dry-run`` (and tests) list once through :class:`ListingReader`.

:func:`assemble` is pure: the records in, a :class:`Cluster` out. :class:`Heard` remembers
when the API server last said anything about each resource; a view silent for longer than the
metering staleness limit is confirmed with one GET of an object it holds
(:meth:`WatchedReader.stale`), and whatever cannot be confirmed is reported by the cycle in the
HeatPolicy's status and log rather than used silently.

Record functions never raise: a malformed object becomes an ``invalid`` record (LeafSite,
HeatPolicy) or a record with defaults (:mod:`heatshift.kube.workloads` is total), so one bad
object never empties the view. Called by :mod:`heatshift.kube.cycle` and the Kopf wiring.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from heatshift import resources
from heatshift.kube import client, workloads

log = logging.getLogger(__name__)

LEAFSITES = client.path_for(resources.API_GROUP, resources.API_VERSION, "leafsites")
HEATPOLICIES = client.path_for(resources.API_GROUP, resources.API_VERSION, "heatpolicies")
NODES = client.path_for("", "v1", "nodes")
NAMESPACES = client.path_for("", "v1", "namespaces")

KINDS = ("leafsites", "heatpolicies", "nodes", "namespaces", "jobs", "pods")
"""The resources of the view, by plural; the keys of :attr:`Cluster.heard_at`."""
DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
"""Annotations a workload record leaves out: a whole copy of the object, often the largest
part of it, which the cycle never reads."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What one cycle reads: the cluster as the view (or one listing) has it."""

    leafsites: tuple[resources.LeafSite, ...]
    policies: tuple[resources.HeatPolicy, ...]
    invalid: Mapping[str, str]
    """``Kind/name`` -> why its spec cannot be used."""
    nodes: tuple[workloads.Node, ...]
    workloads: tuple[workloads.Workload, ...]
    """Unfinished Jobs, and unfinished bare Pods when a policy holds bare Pods."""
    ns_labels: Mapping[str, Mapping[str, str]]
    heard_at: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """By resource plural: when the API server last told the view about it (Unix seconds)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    """A LeafSite or HeatPolicy record: the parsed resource, or why it cannot be used."""

    kind: str
    name: str
    resource: resources.Resource | None
    problem: str | None = None


# --- records: one object in, what the cycle needs out -------------------------------------------


def _name(body: Mapping[str, Any]) -> str:
    return str(workloads.as_dict(body.get("metadata")).get("name") or "?")


def parsed_record(body: Mapping[str, Any], kind: str) -> Parsed:
    """A LeafSite or HeatPolicy body as a record; its status is kept (totals survive restarts
    through it), Kopf's and kubectl's bookkeeping is not."""
    doc = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if k in body}
    doc.setdefault("apiVersion", resources.GROUP_VERSION)
    doc.setdefault("kind", kind)
    try:
        return Parsed(kind, _name(body), resources.parse_resource(doc))
    except resources.ResourceError as err:
        return Parsed(kind, _name(body), None, str(err))
    except Exception as err:  # one odd body must not stop the view; say what it was
        return Parsed(kind, _name(body), None, f"{kind} {_name(body)} cannot be read: {err}")


def site_record(body: Mapping[str, Any]) -> Parsed:
    return parsed_record(body, "LeafSite")


def policy_record(body: Mapping[str, Any]) -> Parsed:
    return parsed_record(body, "HeatPolicy")


def node_record(body: Mapping[str, Any]) -> workloads.Node:
    return workloads.from_node(body)


def namespace_record(body: Mapping[str, Any]) -> dict[str, str]:
    """A namespace's labels (what policies' namespaceSelectors match)."""
    labels = workloads.as_dict(workloads.as_dict(body.get("metadata")).get("labels"))
    return {str(k): str(v) for k, v in labels.items()}


def _slim(w: workloads.Workload) -> workloads.Workload:
    if DROPPED_ANNOTATIONS.isdisjoint(w.annotations):
        return w
    kept = {k: v for k, v in w.annotations.items() if k not in DROPPED_ANNOTATIONS}
    return dataclasses.replace(w, annotations=kept)


def job_record(body: Mapping[str, Any]) -> workloads.Workload | None:
    """An unfinished Job's record; None for a finished one (Complete or Failed), which leaves
    the view: it holds no capacity and is never released."""
    w = workloads.from_job(body)
    return None if w.finished else _slim(w)


def pod_record(body: Mapping[str, Any]) -> workloads.Workload | None:
    """An unfinished bare Pod's record; None for Pods with an owner, and finished ones."""
    if not workloads.is_bare_pod(body):
        return None
    w = workloads.from_pod(body)
    return None if w.finished else _slim(w)


# --- assembling --------------------------------------------------------------------------------


def assemble(
    *,
    sites: Iterable[Parsed],
    policies: Iterable[Parsed],
    nodes: Iterable[workloads.Node],
    ns_labels: Mapping[str, Mapping[str, str]],
    jobs: Iterable[workloads.Workload],
    pods: Iterable[workloads.Workload] = (),
    heard_at: Mapping[str, float] | None = None,
) -> Cluster:
    """The Cluster a cycle plans from, from records. Pure; sorted by name, so the same records
    give the same Cluster in whatever order a watch delivered them. Pods count only when a
    valid policy holds bare Pods, as they are held only then."""
    invalid: dict[str, str] = {}
    leafsites: list[resources.LeafSite] = []
    heat_policies: list[resources.HeatPolicy] = []
    for record in (*sites, *policies):
        if record.problem is not None or record.resource is None:
            invalid[f"{record.kind}/{record.name}"] = record.problem or "unreadable"
        elif isinstance(record.resource, resources.LeafSite):
            leafsites.append(record.resource)
        else:
            heat_policies.append(record.resource)
    want_pods = any(p.spec.hold_bare_pods for p in heat_policies)
    found = list(jobs) + (list(pods) if want_pods else [])
    return Cluster(
        leafsites=tuple(sorted(leafsites, key=lambda s: s.metadata.name)),
        policies=tuple(sorted(heat_policies, key=lambda p: p.metadata.name)),
        invalid=invalid,
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
        workloads=tuple(sorted(found, key=lambda w: (w.kind.value, w.namespace, w.name))),
        ns_labels=dict(ns_labels),
        heard_at=dict(heard_at or {}),
    )


def stale_words(ages_s: Mapping[str, float], limit_s: float) -> str:
    """What a cycle says when it plans from a view older than the staleness limit."""
    parts = ", ".join(f"{kind} {age:.0f}s" for kind, age in sorted(ages_s.items()))
    return (
        f"planned from a cluster view older than the staleness limit ({limit_s:g}s): {parts} "
        "since the API server last confirmed it; releases still re-read each workload first"
    )


# --- readers -----------------------------------------------------------------------------------


class Reader(Protocol):
    """Where a cycle gets its Cluster from."""

    async def read(self, now_s: float) -> Cluster: ...

    async def stale(self, cluster: Cluster, limit_s: float, now_s: float) -> dict[str, float]:
        """Resource plural -> age (s), for the parts of ``cluster`` older than ``limit_s``
        that could not be confirmed as current."""
        ...


class ListingReader:
    """One list request per resource, now: for one-shot commands (``plan --dry-run``)."""

    def __init__(self, api: client.KubeApi, namespaces: Sequence[str] = ()) -> None:
        self.api = api
        self.namespaces = tuple(namespaces)

    async def read(self, now_s: float) -> Cluster:
        raw_sites, raw_policies, raw_nodes = await asyncio.gather(
            self.api.list_objects(LEAFSITES),
            self.api.list_objects(HEATPOLICIES),
            self.api.list_objects(NODES),
        )
        policies = [policy_record(p) for p in raw_policies]
        want_pods = any(
            isinstance(p.resource, resources.HeatPolicy) and p.resource.spec.hold_bare_pods
            for p in policies
        )
        jobs: list[workloads.Workload] = []
        pods: list[workloads.Workload] = []
        scopes: list[str | None] = list(self.namespaces) or [None]
        for ns in scopes:
            raw = await self.api.list_objects(client.path_for("batch", "v1", "jobs", namespace=ns))
            jobs += [w for w in map(job_record, raw) if w is not None]
            if want_pods:
                path = client.path_for("", "v1", "pods", namespace=ns)
                pods += [w for w in map(pod_record, await self.api.list_objects(path)) if w]
        ns_labels: dict[str, Mapping[str, str]] = {}
        try:
            for obj in await self.api.list_objects(NAMESPACES):
                ns_labels[_name(obj)] = namespace_record(obj)
        except client.KubeAPIError as err:
            # Without namespace labels, selectors can still match on the namespace's name label.
            log.warning("namespaces unreadable, selecting by name only: %s", err)
        return assemble(
            sites=map(site_record, raw_sites),
            policies=policies,
            nodes=map(node_record, raw_nodes),
            ns_labels=ns_labels,
            jobs=jobs,
            pods=pods,
            heard_at=dict.fromkeys(KINDS, now_s),
        )

    async def stale(self, cluster: Cluster, limit_s: float, now_s: float) -> dict[str, float]:
        return {}  # read just now


class Heard:
    """When the API server last said something about each resource of the view (an event or
    a listed object). Shared by the index functions (which write it) and the readers."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.started_s: float | None = None

    def saw(self, kind: str, now_s: float) -> None:
        self.at[kind] = now_s

    def ready(self, now_s: float) -> None:
        """The initial listings are done (Kopf starts no handler before): a resource with no
        objects at all was heard from then."""
        if self.started_s is None:
            self.started_s = now_s
        for kind in KINDS:
            self.at.setdefault(kind, now_s)

    def ages(self, now_s: float) -> dict[str, float]:
        return {kind: max(now_s - at, 0.0) for kind, at in self.at.items()}


Store = Mapping[Any, Iterable[Any]]
"""A Kopf index as the view reads it: key -> the values of the objects indexed under it."""


@dataclasses.dataclass(frozen=True)
class Indexes:
    """The view's Kopf indexes (live: Kopf updates them as watch events arrive)."""

    leafsites: Store
    heatpolicies: Store
    nodes: Store
    namespaces: Store
    jobs: Store
    pods: Store


def _values(store: Store) -> list[Any]:
    return [value for values in store.values() for value in values]


def _typed(values: Iterable[Any], cls: type[Any]) -> list[Any]:
    return [v for v in values if isinstance(v, cls)]


class WatchedReader:
    """The watched view: reads Kopf's indexes, no request to the API server."""

    def __init__(self, indexes: Indexes, heard: Heard, api: client.KubeApi) -> None:
        self.indexes = indexes
        self.heard = heard
        self.api = api

    async def read(self, now_s: float) -> Cluster:
        self.heard.ready(now_s)
        ix = self.indexes
        ns_labels: dict[str, Mapping[str, str]] = {}
        for name, values in ix.namespaces.items():
            for labels in values:
                ns_labels[str(name)] = labels
        return assemble(
            sites=_typed(_values(ix.leafsites), Parsed),
            policies=_typed(_values(ix.heatpolicies), Parsed),
            nodes=_typed(_values(ix.nodes), workloads.Node),
            ns_labels=ns_labels,
            jobs=_typed(_values(ix.jobs), workloads.Workload),
            pods=_typed(_values(ix.pods), workloads.Workload),
            heard_at=dict(self.heard.at),
        )

    async def stale(self, cluster: Cluster, limit_s: float, now_s: float) -> dict[str, float]:
        """A resource silent for longer than ``limit_s`` is confirmed by one GET of an object
        the view holds: if the API server has it as the view does, the watch is taken to be
        current (a quiet cluster is not a stuck watch). Otherwise its age is returned."""
        old = {k: now_s - at for k, at in cluster.heard_at.items() if now_s - at > limit_s}
        out: dict[str, float] = {}
        for kind, age in sorted(old.items()):
            if not math.isfinite(age) or not await self._confirm(kind, cluster):
                out[kind] = age
            else:
                self.heard.saw(kind, now_s)
        return out

    async def _confirm(self, kind: str, cluster: Cluster) -> bool:
        sample = _sample(kind, cluster)
        if sample is None:
            # Nothing held of this kind: nothing in the view can be out of date but a new
            # object, and Kopf itself reconnects a watch that hears not even a bookmark.
            return True
        path, expected, record = sample
        try:
            got = await self.api.get(path)
        except client.KubeAPIError as err:
            log.warning("view not confirmed: %s %s: %s", kind, path, err)
            return False
        return bool(record(got) == expected)


Sample = tuple[str, object, Any]


def _sample(kind: str, cluster: Cluster) -> Sample | None:
    """One object of the view to GET, its record in the view, and the record function."""
    if kind == "leafsites" and cluster.leafsites:
        site = cluster.leafsites[0]
        return f"{LEAFSITES}/{site.metadata.name}", site, _resource_of
    if kind == "heatpolicies" and cluster.policies:
        policy = cluster.policies[0]
        return f"{HEATPOLICIES}/{policy.metadata.name}", policy, _resource_of
    if kind == "nodes" and cluster.nodes:
        node = cluster.nodes[0]
        return f"{NODES}/{node.name}", node, node_record
    if kind == "namespaces" and cluster.ns_labels:
        name = min(cluster.ns_labels)
        return f"{NAMESPACES}/{name}", dict(cluster.ns_labels[name]), namespace_record
    wanted = workloads.Kind.JOB if kind == "jobs" else workloads.Kind.POD
    for w in cluster.workloads:
        if w.kind is wanted:
            plural = "jobs" if wanted is workloads.Kind.JOB else "pods"
            group = "batch" if wanted is workloads.Kind.JOB else ""
            path = client.path_for(group, "v1", plural, namespace=w.namespace, name=w.name)
            return path, w, job_record if wanted is workloads.Kind.JOB else pod_record
    return None


def _resource_of(body: Mapping[str, Any]) -> resources.Resource | None:
    kind = str(body.get("kind") or "")
    return parsed_record(body, kind).resource
