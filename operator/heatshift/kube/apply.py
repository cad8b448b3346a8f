"""Apply the part of a plan that starts now: place, release, annotate, explain.

:func:`release_patch` is pure: the current object and a :class:`Release` in, a JSON merge
patch out (or None when there is nothing to do). It sets the pod template's (or Pod's)
nodeSelector to the site's labels, unsuspends the Job or removes the
``heatshift.dev/placement`` scheduling gate, and records ``heatshift.dev/site``,
``heatshift.dev/released-at`` and ``heatshift.dev/decision``. The patch carries the
``resourceVersion`` it was computed from, so the API server refuses it (409) if the object
changed in between.

:func:`apply_release` does the I/O: read, patch, and on a conflict re-read and retry a
bounded number of times. It is idempotent: a workload that is no longer held (released by an
earlier attempt, by another replica, or unsuspended by its owner) is left alone, and so is
one that is running or finished — heatshift never touches running work. Each release gets a
Normal Event saying why this site and why now.

Called by :mod:`heatshift.kube.cycle`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping
from typing import Any

from heatshift.kube import client, events, workloads

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 3
"""Reads and patches per release before a persistent conflict is left to the next cycle."""
EVENT_REASON = "Released"


class ReleaseKind(enum.StrEnum):
    """Why a workload was released: the metrics label and part of the Event."""

    HEAT = "heat"
    """The heat-aware plan chose this site and this time for its heat."""
    DEADLINE = "deadline"
    """Its start deadline arrived: released heat or no heat."""
    HEAT_UNAWARE = "heat_unaware"
    """Placed without heat information (no usable metering, or the solver's fallback)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """One workload to start now, where, and why."""

    kind: workloads.Kind
    namespace: str
    name: str
    site: str | None
    """None only for a deadline release no LeafSite can take: the cluster places it."""
    node_selector: Mapping[str, str]
    decision: str
    reason: ReleaseKind
    policy: str


class Outcome(enum.StrEnum):
    RELEASED = "released"
    ALREADY_RELEASED = "already_released"
    """Not held any more: released before, or by someone else. Nothing was changed."""
    GONE = "gone"
    CONFLICT = "conflict"
    """Kept changing under us for every attempt; the next cycle tries again."""
    FAILED = "failed"
    """The API server refused the release (e.g. a policy webhook); a Warning Event says why and
    the next cycle tries again."""


def path_of(kind: workloads.Kind, namespace: str, name: str) -> str:
    if kind is workloads.Kind.JOB:
        return client.path_for("batch", "v1", "jobs", namespace=namespace, name=name)
    return client.path_for("", "v1", "pods", namespace=namespace, name=name)


def _workload(kind: workloads.Kind, obj: Mapping[str, Any]) -> workloads.Workload:
    return workloads.from_job(obj) if kind is workloads.Kind.JOB else workloads.from_pod(obj)


def release_patch(obj: Mapping[str, Any], release: Release, now_s: float) -> dict[str, Any] | None:
    """The merge patch that releases ``obj`` as ``release`` says; None if it is not held."""
    if not _workload(release.kind, obj).held:
        return None
    meta = obj.get("metadata") or {}
    annotations = {
        workloads.RELEASED_AT: workloads.format_time(now_s),
        workloads.DECISION: release.decision,
        workloads.POLICY: release.policy,
    }
    if release.site is not None:
        annotations[workloads.SITE] = release.site
    patch: dict[str, Any] = {
        "metadata": {"annotations": annotations, "resourceVersion": meta.get("resourceVersion")},
    }
    selector = dict(release.node_selector)
    if release.kind is workloads.Kind.JOB:
        spec: dict[str, Any] = {"suspend": False}
        if selector:
            spec["template"] = {"spec": {"nodeSelector": selector}}
    else:
        gates = (obj.get("spec") or {}).get("schedulingGates") or []
        spec = {"schedulingGates": [g for g in gates if g.get("name") != workloads.PLACEMENT_GATE]}
        if selector:
            spec["nodeSelector"] = selector
    patch["spec"] = spec
    if meta.get("resourceVersion") is None:
        del patch["metadata"]["resourceVersion"]
    return patch


def event_message(release: Release) -> str:
    where = f"to LeafSite {release.site}" if release.site else "without a site"
    return f"released {where} by HeatPolicy {release.policy}: {release.decision}"


async def apply_release(
    api: client.KubeApi,
    release: Release,
    now_s: float,
    recorder: events.Recorder,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Outcome:
    """Release one workload, idempotently; see the module docstring."""
    path = path_of(release.kind, release.namespace, release.name)
    for attempt in range(1, attempts + 1):
        try:
            obj = await api.get(path)
        except client.KubeNotFound:
            return Outcome.GONE
        except client.KubeAPIError as err:
            log.warning("release not read: workload=%s: %s", path, err)
            return Outcome.FAILED
        patch = release_patch(obj, release, now_s)
        if patch is None:
            return Outcome.ALREADY_RELEASED
        try:
            updated = await api.patch(path, patch)
        except client.KubeNotFound:
            return Outcome.GONE
        except client.KubeConflict:
            log.info(
                "release conflict, re-reading: workload=%s/%s attempt=%d/%d",
                release.namespace,
                release.name,
                attempt,
                attempts,
            )
            continue
        except client.KubeAPIError as err:
            # One refused workload must not hold up the others in this cycle.
            log.warning("release refused: workload=%s: %s", path, err)
            await recorder.post(
                obj,
                reason="ReleaseFailed",
                message=f"heatshift could not release it to {release.site or 'the cluster'}: "
                f"{err.message}; it retries on the next planning cycle",
                now_s=now_s,
                warning=True,
            )
            return Outcome.FAILED
        await recorder.post(
            updated or obj, reason=EVENT_REASON, message=event_message(release), now_s=now_s
        )
        return Outcome.RELEASED
    return Outcome.CONFLICT
