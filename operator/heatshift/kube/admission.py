"""The mutating webhook's decisions: hold a new Job or bare Pod that a HeatPolicy selects. Pure.

:func:`hold_job` and :func:`hold_pod` take the object being created, the HeatPolicies and the
namespace's labels, and return the changes to make (a merge-style dict) and the policy that
asked for them, or ``(None, None)`` to let the object through untouched. The Kopf wiring copies
the changes into the admission response. A Job is held with ``spec.suspend: true``; a bare Pod
with the ``heatshift.dev/placement`` scheduling gate. Objects heatshift already released are
never held again, and neither are those Kueue queues (it owns their suspension; heatshift
decides those through its admission check, :mod:`heatshift.kueue`).

Called by the webhook handlers in :mod:`heatshift.handlers` (ids ``hold-jobs``, ``hold-pods``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from heatshift import resources
from heatshift.kube import selection, workloads


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _released(obj: Mapping[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return workloads.RELEASED_AT in annotations


def hold_job(
    job: Mapping[str, Any],
    policies: Sequence[resources.HeatPolicy],
    ns_labels: Mapping[str, str],
) -> tuple[dict[str, Any] | None, str | None]:
    """``({"spec": {"suspend": True}}, policy)`` when a policy selects the new Job; never for
    one Kueue or a higher-level workload manages (:func:`workloads.managed_elsewhere`)."""
    if _released(job) or workloads.managed_elsewhere(job):
        return None, None
    policy = selection.managing_policy(
        policies, labels=_labels(job), ns_labels=ns_labels, is_pod=False
    )
    if policy is None:
        return None, None
    return {"spec": {"suspend": True}}, policy.metadata.name


def hold_pod(
    pod: Mapping[str, Any],
    policies: Sequence[resources.HeatPolicy],
    ns_labels: Mapping[str, str],
) -> tuple[dict[str, Any] | None, str | None]:
    """The scheduling gate added to a new bare Pod that a policy selects (holdBarePods)."""
    if (
        _released(pod)
        or not workloads.is_bare_pod(pod)
        or workloads.has_gate(pod)
        or workloads.managed_elsewhere(pod)
    ):
        return None, None
    policy = selection.managing_policy(
        policies, labels=_labels(pod), ns_labels=ns_labels, is_pod=True
    )
    if policy is None:
        return None, None
    gates = [*workloads.scheduling_gates(pod), {"name": workloads.PLACEMENT_GATE}]
    return {"spec": {"schedulingGates": gates}}, policy.metadata.name
