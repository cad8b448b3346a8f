"""Kueue Workloads and AdmissionChecks as heatshift sees them, and what it writes back. Pure.

A Kueue ``Workload`` (``kueue.x-k8s.io/v1beta2``) stands for one job of any kind Kueue
supports (batch/v1 Job, JobSet, PyTorchJob, RayJob, ...). heatshift reads only what placement
needs from it: its pod sets (count times one pod's requests, GPUs included), its controlling owner
(whose annotations carry the ``heatshift.dev/*`` hints), when it was created, and the state of
each admission check. :func:`as_workload` turns it into the same
:class:`heatshift.kube.workloads.Workload` the planner's snapshot takes for plain Jobs:

- *held*: quota reserved and heatshift's check ``Pending``: waiting for heatshift's decision;
- *running at a site*: admitted with heatshift's check ``Ready`` naming a site (the
  ``heatshift.dev/site`` annotation of its pod set updates) and not finished.

:func:`check_state` and :func:`apply_body` build the admission check state heatshift writes,
by server-side apply of that one list entry (``status.admissionChecks`` is a map keyed by
name), so the other checks' entries and Kueue's own fields are never touched.

Every conversion is total: any body gives a record, never an exception.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from heatshift import bounds, model
from heatshift.kube import client, workloads

GROUP = workloads.KUEUE_GROUP
VERSION = "v1beta2"
API_VERSION = f"{GROUP}/{VERSION}"
CONTROLLER_NAME = "heatshift.dev/heat"
"""``spec.controllerName`` of the AdmissionChecks heatshift answers."""
FIELD_MANAGER = "heatshift-admission-check"
"""heatshift's server-side apply field manager on Workload status."""
MAX_MESSAGE = 1024
"""Kueue allows 32 KiB; a decision in words is far shorter, and status stays small."""
MAX_POD_SETS = 8
"""Kueue's own limit on pod sets (and pod set updates) per Workload."""

WORKLOADS = "workloads"
ADMISSION_CHECKS = "admissionchecks"


class CheckState(enum.StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    RETRY = "Retry"
    REJECTED = "Rejected"


@dataclasses.dataclass(frozen=True, slots=True)
class PodSet:
    name: str
    count: int
    per_pod: model.Resources


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """The object a Workload stands for (its controlling owner)."""

    api_version: str
    kind: str
    name: str
    uid: str

    def path(self, namespace: str) -> str:
        """The owner's API path. Kueue's job kinds all have the regular plural (lower-case
        kind plus ``s``: jobs, jobsets, pytorchjobs, rayjobs, mpijobs, pods ...)."""
        group, _, version = self.api_version.rpartition("/")
        return client.path_for(
            group, version, self.kind.lower() + "s", namespace=namespace, name=self.name
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """One entry of ``status.admissionChecks``."""

    name: str
    state: str
    last_transition: str
    """As the API server has it (RFC 3339), so an unchanged state keeps its time."""
    site: str | None = None
    """The LeafSite heatshift's Ready named in its pod set updates."""


@dataclasses.dataclass(frozen=True, slots=True)
class KueueWorkload:
    """A Workload reduced to what the admission check decides on (what the index stores)."""

    namespace: str
    name: str
    uid: str
    created_s: float
    pod_sets: tuple[PodSet, ...]
    owner: Owner | None
    checks: tuple[Check, ...]
    quota_reserved: bool
    admitted: bool
    finished: bool
    max_run_s: float | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def pending(self, check_name: str) -> bool:
        """Waiting for this check's decision: quota reserved, the check Pending."""
        found = self.check(check_name)
        return (
            found is not None
            and found.state == CheckState.PENDING
            and self.quota_reserved
            and not self.finished
        )

    @property
    def resources(self) -> model.Resources:
        cpu = sum(p.per_pod.cpu * p.count for p in self.pod_sets)
        memory = sum(p.per_pod.memory_gib * p.count for p in self.pod_sets)
        gpu = sum(p.per_pod.gpu * p.count for p in self.pod_sets)
        return workloads.bounded_resources(cpu, memory, gpu)


def _condition(status: Mapping[str, Any], kind: str) -> bool:
    return any(
        workloads.as_dict(c).get("type") == kind and workloads.as_dict(c).get("status") == "True"
        for c in workloads.as_list(status.get("conditions"))
    )


def _pod_set(raw: object) -> PodSet:
    body = workloads.as_dict(raw)
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        count = 1
    pod_spec = workloads.as_dict(workloads.as_dict(body.get("template")).get("spec"))
    return PodSet(
        name=str(body.get("name") or "main"),
        count=min(count, workloads.MAX_PODS),
        per_pod=workloads.pod_resources(pod_spec),
    )


def _owner(meta: Mapping[str, Any]) -> Owner | None:
    refs = [workloads.as_dict(r) for r in workloads.as_list(meta.get("ownerReferences"))]
    chosen = next((r for r in refs if r.get("controller") is True), refs[0] if refs else None)
    if chosen is None or not chosen.get("kind") or not chosen.get("name"):
        return None
    return Owner(
        api_version=str(chosen.get("apiVersion") or "v1"),
        kind=str(chosen["kind"]),
        name=str(chosen["name"]),
        uid=str(chosen.get("uid") or ""),
    )


def _check(raw: object) -> Check:
    body = workloads.as_dict(raw)
    site = None
    for update in workloads.as_list(body.get("podSetUpdates")):
        found = workloads.as_dict(workloads.as_dict(update).get("annotations")).get(workloads.SITE)
        if found:
            site = str(found)
            break
    return Check(
        name=str(body.get("name") or ""),
        state=str(body.get("state") or ""),
        last_transition=str(body.get("lastTransitionTime") or ""),
        site=site,
    )


def from_workload(obj: Mapping[str, Any]) -> KueueWorkload:
    """A Workload body as a record; never raises."""
    meta = workloads.as_dict(obj.get("metadata"))
    spec = workloads.as_dict(obj.get("spec"))
    status = workloads.as_dict(obj.get("status"))
    max_run = spec.get("maximumExecutionTimeSeconds")
    limit = None
    if isinstance(max_run, int) and not isinstance(max_run, bool) and max_run > 0:
        limit = min(float(max_run), bounds.JOB_DURATION.high_s)
    return KueueWorkload(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        created_s=workloads.parse_time(meta.get("creationTimestamp")) or 0.0,
        pod_sets=tuple(_pod_set(p) for p in workloads.as_list(spec.get("podSets"))[:MAX_POD_SETS]),
        owner=_owner(meta),
        checks=tuple(_check(c) for c in workloads.as_list(status.get("admissionChecks"))),
        quota_reserved=_condition(status, "QuotaReserved"),
        admitted=_condition(status, "Admitted"),
        finished=_condition(status, "Finished"),
        max_run_s=limit,
    )


def as_workload(
    w: KueueWorkload,
    check_name: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> workloads.Workload:
    """The Workload as the planner's snapshot takes it; ``labels`` and ``annotations`` are its
    owner's (the SLA-class label and the hints live there)."""
    check = w.check(check_name)
    ready_at_site = (
        check is not None and check.state == CheckState.READY and w.admitted and bool(check.site)
    )
    return workloads.Workload(
        kind=workloads.Kind.WORKLOAD,
        namespace=w.namespace,
        name=w.name,
        uid=w.uid,
        labels=dict(labels or {}),
        annotations=dict(annotations or {}),
        created_s=w.created_s,
        resources=w.resources,
        held=w.pending(check_name),
        finished=w.finished,
        active_deadline_s=w.max_run_s,
        site=check.site if ready_at_site and check is not None else None,
        released_at_s=workloads.parse_time(check.last_transition)
        if ready_at_site and check is not None
        else None,
    )


def check_state(
    w: KueueWorkload,
    check_name: str,
    state: CheckState,
    message: str,
    now_s: float,
    *,
    node_selector: Mapping[str, str] | None = None,
    site: str | None = None,
    requeue_after_s: int | None = None,
) -> dict[str, Any]:
    """The ``status.admissionChecks`` entry heatshift applies. A Ready with a site puts the
    site's nodeSelector (and a ``heatshift.dev/site`` annotation) on every pod set."""
    old = w.check(check_name)
    keep_time = old is not None and old.state == state and old.last_transition
    entry: dict[str, Any] = {
        "name": check_name,
        "state": state.value,
        "message": message[:MAX_MESSAGE],
        "lastTransitionTime": old.last_transition
        if keep_time and old is not None
        else workloads.format_time(now_s),
    }
    if state is CheckState.RETRY and requeue_after_s is not None:
        entry["requeueAfterSeconds"] = max(int(requeue_after_s), 0)
    if state is CheckState.READY and site is not None:
        entry["podSetUpdates"] = [
            {
                "name": p.name,
                "nodeSelector": dict(node_selector or {}),
                "annotations": {workloads.SITE: site},
            }
            for p in w.pod_sets
        ]
    return entry


def apply_body(w: KueueWorkload, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The server-side apply body for the status subresource: just heatshift's entry."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": {"name": w.name, "namespace": w.namespace},
        "status": {"admissionChecks": [dict(entry)]},
    }


def workload_status_path(w: KueueWorkload) -> str:
    return client.path_for(
        GROUP, VERSION, WORKLOADS, namespace=w.namespace, name=w.name, subresource="status"
    )


def is_ours(spec: Mapping[str, Any]) -> bool:
    """An AdmissionCheck heatshift answers."""
    return spec.get("controllerName") == CONTROLLER_NAME


def active_condition(
    conditions: Sequence[Mapping[str, Any]], generation: int | None, now_s: float
) -> list[dict[str, Any]] | None:
    """The AdmissionCheck's conditions with ``Active=True``; None when already so."""
    message = "heatshift decides this check: heat-aware placement on its LeafSites"
    kept = [dict(c) for c in conditions if c.get("type") != "Active"]
    old = next((c for c in conditions if c.get("type") == "Active"), None)
    if (
        old is not None
        and old.get("status") == "True"
        and old.get("observedGeneration") == (generation)
    ):
        return None
    active: dict[str, Any] = {
        "type": "Active",
        "status": "True",
        "reason": "Active",
        "message": message,
        "lastTransitionTime": workloads.format_time(now_s),
    }
    if generation is not None:
        active["observedGeneration"] = generation
    return [*kept, active]
