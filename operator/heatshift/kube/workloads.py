"""Jobs, bare Pods and Nodes as heatshift sees them. Pure: API dicts in, frozen records out.

A :class:`Workload` is a Job (held through ``spec.suspend``) or a bare Pod (held through the
``heatshift.dev/placement`` scheduling gate), with what the planner needs: its shape, when it
was submitted, whether heatshift still holds it, and where it was released to. Quantities
(``500m``, ``4Gi``) are parsed here too.

Every conversion here is total: whatever an API body holds (wrong types in any field, numbers
past any bound, missing metadata), it returns a record and never raises, because a planning
cycle converts every Job of the cluster and one odd body must not stop the others. Numbers are
kept within :mod:`heatshift.bounds`.

Called by :mod:`heatshift.kube.snapshot`, :mod:`heatshift.kube.apply` and the webhook.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from heatshift import bounds, model

PLACEMENT_GATE = "heatshift.dev/placement"
"""The scheduling gate that holds a bare Pod until heatshift places it."""
SITE = "heatshift.dev/site"
"""Annotation (and nodeSelector source): the LeafSite a workload was released to."""
RELEASED_AT = "heatshift.dev/released-at"
"""Annotation: when heatshift released the workload (RFC 3339)."""
DECISION = "heatshift.dev/decision"
"""Annotation: why this site and why now, in words."""
POLICY = "heatshift.dev/policy"
"""Annotation: the HeatPolicy that released the workload."""
QUEUE_NAME = "kueue.x-k8s.io/queue-name"
"""Label: the object is queued by Kueue, which owns its suspension and placement."""
KUEUE_MANAGED = "kueue.x-k8s.io/managed"
"""Label Kueue puts on the Pods it manages."""
KUEUE_GROUP = "kueue.x-k8s.io"
GPU_RESOURCE = "nvidia.com/gpu"
GIB = 1024.0**3
MAX_PODS = 1_000_000
"""More pods at once than any cluster runs: a larger parallelism counts as this many."""

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "Ki": 1024.0,
    "Mi": 1024.0**2,
    "Gi": 1024.0**3,
    "Ti": 1024.0**4,
    "Pi": 1024.0**5,
}


class QuantityError(ValueError):
    """A resource quantity that is not in Kubernetes' notation."""


def parse_quantity(value: object) -> float:
    """A Kubernetes quantity (``250m``, ``2``, ``1.5Gi``, ``1e3``) as a plain, finite number."""
    shown = repr(value)[:64]
    if isinstance(value, bool):
        raise QuantityError(f"{shown} is not a Kubernetes quantity")
    if isinstance(value, int | float):
        number = float(value) if abs(value) < 1e300 else math.inf
    else:
        match = _QUANTITY.match(str(value)[:128].strip())
        if match is None or match.group(2) not in _SUFFIX:
            raise QuantityError(f"{shown} is not a Kubernetes quantity")
        try:
            number = float(match.group(1)) * _SUFFIX[match.group(2)]
        except ValueError as err:
            raise QuantityError(f"{shown} is not a Kubernetes quantity") from err
    if not math.isfinite(number):
        raise QuantityError(f"{shown} is not a finite quantity")
    return number


def parse_time(value: object) -> float | None:
    """Unix seconds of an RFC 3339 time from the API; None when absent, unreadable or outside
    the years :func:`heatshift.bounds.timestamp_problem` allows."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value[:64])
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        unix_s = parsed.timestamp()
    except (ValueError, OverflowError):
        return None
    return None if bounds.timestamp_problem(unix_s, "a time") else unix_s


def format_time(unix_s: float) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times. Never raises: a time that
    cannot be a date (NaN, infinite, past year 9999) is written as a plain number of Unix
    seconds instead, since it only ever ends up in words for people."""
    try:
        when = datetime.datetime.fromtimestamp(unix_s, tz=datetime.UTC).replace(microsecond=0)
    except (OverflowError, ValueError, OSError):
        return f"{unix_s:.0f} (Unix seconds)"
    return when.isoformat().replace("+00:00", "Z")


class Kind(enum.StrEnum):
    JOB = "Job"
    POD = "Pod"
    WORKLOAD = "Workload"
    """A Kueue Workload: heatshift decides its admission check, Kueue does the rest."""


def as_dict(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: a wrong type reads as absent."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: object) -> Sequence[Any]:
    """``value`` if it is a JSON array, else an empty one: a wrong type reads as absent."""
    return value if isinstance(value, list | tuple) else ()


def _count(value: object) -> int | None:
    """A non-negative whole number from the API (parallelism, completions), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return min(value, MAX_PODS)


def _run_limit(value: object) -> float | None:
    """``activeDeadlineSeconds`` as a usable upper bound on run time, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # Compared as given (an int may be too large for a float); NaN compares false.
    if not 0 < value < 1e300:
        return None
    # Longer than any job may be expected to run says nothing the default would not.
    return min(float(value), bounds.JOB_DURATION.high_s)


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in as_dict(value).items()}


def pod_resources(pod_spec: Mapping[str, Any]) -> model.Resources:
    """What a pod asks for: its containers' requests summed (limits where no request)."""
    cpu = memory = 0.0
    gpu = 0
    for container in as_list(pod_spec.get("containers")):
        res = as_dict(as_dict(container).get("resources"))
        wanted = {**as_dict(res.get("limits")), **as_dict(res.get("requests"))}
        # A bad quantity would be refused by the API server; never crash on one anyway.
        try:
            cpu += parse_quantity(wanted.get("cpu", 0))
            memory += parse_quantity(wanted.get("memory", 0)) / GIB
            gpu += int(min(parse_quantity(wanted.get(GPU_RESOURCE, 0)), bounds.MAX_GPUS))
        except QuantityError:
            continue
    return bounded_resources(cpu, memory, gpu)


def bounded_resources(cpu: float, memory_gib: float, gpu: float) -> model.Resources:
    """Resources within :mod:`heatshift.bounds`: a larger ask fits no site either way, and
    an unbounded one would be arithmetic the planner cannot do."""
    return model.Resources(
        cpu=min(max(cpu, 0.0), bounds.MAX_CPU_CORES),
        memory_gib=min(max(memory_gib, 0.0), bounds.MAX_MEMORY_GIB),
        gpu=int(min(max(gpu, 0), bounds.MAX_GPUS)),
    )


def workload_id(kind: Kind, namespace: str, name: str) -> str:
    """A workload's id (:attr:`Workload.id`), from its kind, namespace and name."""
    return f"{kind.value.lower()}/{namespace}/{name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    """A Job or bare Pod, reduced to what placement needs."""

    kind: Kind
    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    created_s: float
    resources: model.Resources
    held: bool
    """heatshift holds it now: suspended (Job) or gated (Pod), and never released."""
    finished: bool
    active_deadline_s: float | None = None
    site: str | None = None
    released_at_s: float | None = None
    resource_version: str = ""
    """The version this record was read at: a release patches against it without reading the
    object again, and the API server refuses the patch (409) if the object changed since."""
    gates: tuple[object, ...] = ()
    """A Pod's scheduling gates as the object has them (a release removes only heatshift's)."""

    @property
    def id(self) -> str:
        """Unique across kinds and namespaces; the planner's job id."""
        return workload_id(self.kind, self.namespace, self.name)

    @property
    def running(self) -> bool:
        """Released by heatshift to a site and not finished: it holds capacity there."""
        return self.site is not None and not self.held and not self.finished


def _group(api_version: object) -> str:
    text = str(api_version or "")
    return text.split("/", 1)[0] if "/" in text else ""


def managed_elsewhere(obj: Mapping[str, Any]) -> bool:
    """Another controller owns this Job's or Pod's suspension and placement, so heatshift must
    never hold, release or patch it: it is queued by Kueue (the queue-name label, Kueue's
    managed label, or a Kueue owner), or, for a Job, it belongs to a higher-level workload
    (a JobSet, a Kubeflow or Ray job ...: any controlling owner outside ``batch``), which
    suspends and resumes its Jobs itself. Kueue decides those through their Workload."""
    meta = as_dict(obj.get("metadata"))
    labels = as_dict(meta.get("labels"))
    if QUEUE_NAME in labels or KUEUE_MANAGED in labels:
        return True
    is_job = obj.get("kind") == "Job" or _group(obj.get("apiVersion")) == "batch"
    for ref in as_list(meta.get("ownerReferences")):
        group = _group(as_dict(ref).get("apiVersion"))
        if group == KUEUE_GROUP:
            return True
        if is_job and as_dict(ref).get("controller") is True and group != "batch":
            return True
    return False


def _common(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = as_dict(obj.get("metadata"))
    annotations = _strings(meta.get("annotations"))
    return {
        "namespace": str(meta.get("namespace") or "default"),
        "name": str(meta.get("name") or ""),
        "uid": str(meta.get("uid") or ""),
        "labels": _strings(meta.get("labels")),
        "annotations": annotations,
        "created_s": parse_time(meta.get("creationTimestamp")) or 0.0,
        "site": annotations.get(SITE),
        "released_at_s": parse_time(annotations.get(RELEASED_AT)),
        "resource_version": str(meta.get("resourceVersion") or ""),
    }


def from_job(job: Mapping[str, Any]) -> Workload:
    """A batch/v1 Job as a workload; its shape is one pod's times the pods that run at once."""
    spec = as_dict(job.get("spec"))
    pod_spec = as_dict(as_dict(spec.get("template")).get("spec"))
    one = pod_resources(pod_spec)
    pods = _count(spec.get("parallelism"))
    pods = 1 if pods is None else pods
    completions = _count(spec.get("completions"))
    if completions is not None:
        pods = min(pods, completions)
    conditions = as_list(as_dict(job.get("status")).get("conditions"))
    finished = any(
        as_dict(c).get("type") in ("Complete", "Failed") and as_dict(c).get("status") == "True"
        for c in conditions
    )
    common = _common(job)
    return Workload(
        kind=Kind.JOB,
        resources=bounded_resources(one.cpu * pods, one.memory_gib * pods, one.gpu * pods),
        held=spec.get("suspend") is True
        and common["released_at_s"] is None
        and not finished
        and not managed_elsewhere(job),
        finished=finished,
        active_deadline_s=_run_limit(spec.get("activeDeadlineSeconds")),
        **common,
    )


def scheduling_gates(pod: Mapping[str, Any]) -> tuple[object, ...]:
    return tuple(as_list(as_dict(pod.get("spec")).get("schedulingGates")))


def is_placement_gate(gate: object) -> bool:
    return as_dict(gate).get("name") == PLACEMENT_GATE


def has_gate(pod: Mapping[str, Any]) -> bool:
    return any(is_placement_gate(g) for g in scheduling_gates(pod))


def is_bare_pod(pod: Mapping[str, Any]) -> bool:
    """A Pod nobody owns (no Job, ReplicaSet, ...): only those are held as Pods."""
    return not as_dict(pod.get("metadata")).get("ownerReferences")


def from_pod(pod: Mapping[str, Any]) -> Workload:
    """A bare Pod as a workload."""
    spec = as_dict(pod.get("spec"))
    phase = as_dict(pod.get("status")).get("phase")
    common = _common(pod)
    return Workload(
        kind=Kind.POD,
        resources=pod_resources(spec),
        held=has_gate(pod) and not managed_elsewhere(pod),
        finished=phase in ("Succeeded", "Failed"),
        active_deadline_s=_run_limit(spec.get("activeDeadlineSeconds")),
        gates=scheduling_gates(pod),
        **common,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A schedulable node's labels and allocatable compute."""

    name: str
    labels: Mapping[str, str]
    allocatable: model.Resources
    schedulable: bool


def from_node(node: Mapping[str, Any]) -> Node:
    meta = as_dict(node.get("metadata"))
    status = as_dict(node.get("status"))
    alloc = as_dict(status.get("allocatable"))
    try:
        resources = bounded_resources(
            parse_quantity(alloc.get("cpu", 0)),
            parse_quantity(alloc.get("memory", 0)) / GIB,
            min(parse_quantity(alloc.get(GPU_RESOURCE, 0)), bounds.MAX_GPUS),
        )
    except QuantityError:
        resources = model.Resources()
    ready = all(
        as_dict(c).get("status") == "True"
        for c in as_list(status.get("conditions"))
        if as_dict(c).get("type") == "Ready"
    )
    cordoned = as_dict(node.get("spec")).get("unschedulable") is True
    return Node(
        name=str(meta.get("name") or ""),
        labels=_strings(meta.get("labels")),
        allocatable=resources,
        schedulable=ready and not cordoned,
    )
